"""Tests of port spec parsing, pattern matching and port formatting."""

from __future__ import annotations

import re
import timeit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aioportclaim._exceptions import InvalidPortSpecError
from aioportclaim._spec import (
    PortSpec,
    format_ports,
    match_port_patterns,
    parse_port_set,
    parse_port_spec,
    translate_port_pattern,
)

EXACT_SPECS = [
    (8080, 8080),
    ("8080", 8080),
    (" 8080 ", 8080),
    (1, 1),
    (65535, 65535),
    ("065535", 65535),
]

ANY_SPECS: list[object] = [None, 0, "0", " 0 ", "", "   ", [], set(), frozenset(), ()]

SET_SPECS: list[tuple[object, set[int]]] = [
    ((8000, 8002), {8000, 8001, 8002}),
    (("8000", " 8002 "), {8000, 8001, 8002}),
    ((8000, 8000), {8000}),
    ("8000-8002", {8000, 8001, 8002}),
    (" 8000 - 8002 ", {8000, 8001, 8002}),
    (range(8000, 8003), {8000, 8001, 8002}),
    (range(8000, 8010, 4), {8000, 8004, 8008}),
    (range(8002, 7999, -1), {8000, 8001, 8002}),
    ("80,90,8000-8002", {80, 90, 8000, 8001, 8002}),
    (" 80 , 90 ", {80, 90}),
    ([80, 90], {80, 90}),
    ({80, 90}, {80, 90}),
    (frozenset({80, 90}), {80, 90}),
    ([80], {80}),
    (["80", "90-91"], {80, 90, 91}),
    (["80,90", (100, 101)], {80, 90, 100, 101}),
    ([range(5, 7), 80, "81"], {5, 6, 80, 81}),
    ([("8000", 8001), "8000-8002"], {8000, 8001, 8002}),
]

REJECTED_SPECS: list[tuple[object, str]] = [
    (True, "bool"),
    (False, "bool"),
    (8000.7, "float"),
    (8000.0, "float"),
    (float("nan"), "float"),
    (70000, "greater than 65535"),
    (65536, "greater than 65535"),
    ("65536", "greater than 65535"),
    ("9" * 40, "40 digits"),
    (-5, "negative"),
    ("-5", "negative"),
    (-2, "negative"),
    ((9000, 8000), "greater than its end"),
    ("9000-8000", "greater than its end"),
    ((5,), "needs 2 items"),
    ((1, 2, 3), "needs 2 items"),
    ((8000, 8000.5), "not an int"),
    ((True, 8000), "not an int"),
    (("a", "b"), "not an int"),
    ("abc", "not a port number"),
    ("80x", "not a port number"),
    ("+80", "not a port number"),
    ("1_000", "not a port number"),
    ("80,,90", "empty"),
    ("80,", "empty"),
    ("80-", "missing its end"),
    ("-80-", "not a port number"),
    ("-", "not a port number"),
    ("1-2-3", "not a port number"),
    (range(5, 5), "empty"),
    (range(0, 10), "contains 0"),
    (range(65530, 65540), "greater than 65535"),
    ([[80]], "nested list"),
    ([{80}], "nested set"),
    ([frozenset({80})], "nested frozenset"),
    ([{"a": 1}], "nested dict"),
    (b"8080", "type bytes"),
    (bytearray(b"80"), "type bytearray"),
    ({"ports": 80}, "type dict"),
    (object(), "type object"),
    (8080j, "type complex"),
    ([0], "port 0"),
    ([80, "0"], "port 0"),
    ((0, 80), "port 0"),
    ("0-80", "port 0"),
    ("80,0", "port 0"),
    ([-1], "-1 means no port"),
    (["-1"], "-1 means no port"),
    ([None], "None means any port"),
    ([""], "empty string"),
    ([()], "needs 2 items"),
    ([True], "bool"),
    ([80.0], "float"),
    ([b"80"], "type bytes"),
]


class TestParsePortSpec:
    @pytest.mark.parametrize(("spec", "port"), EXACT_SPECS)
    def test_parse_exact(self, spec: object, port: int) -> None:
        parsed = parse_port_spec(spec)

        assert parsed.kind == "exact"
        assert parsed.port == port
        assert parsed.ports == frozenset({port})

    @pytest.mark.parametrize("spec", [-1, "-1", " -1 "])
    def test_parse_none(self, spec: object) -> None:
        assert parse_port_spec(spec) == PortSpec("none")

    @pytest.mark.parametrize("spec", ANY_SPECS)
    def test_parse_any(self, spec: object) -> None:
        assert parse_port_spec(spec) == PortSpec("any")

    @pytest.mark.parametrize(("spec", "ports"), SET_SPECS)
    def test_parse_set(self, spec: object, ports: set[int]) -> None:
        parsed = parse_port_spec(spec)

        assert parsed.kind == "set"
        assert parsed.port is None
        assert parsed.ports == ports

    def test_parse_full_range(self) -> None:
        parsed = parse_port_spec("1-65535")

        assert len(parsed.ports) == 65535

    @pytest.mark.parametrize(("spec", "problem"), REJECTED_SPECS)
    def test_parse_rejected(self, spec: object, problem: str) -> None:
        with pytest.raises(InvalidPortSpecError) as caught:
            parse_port_spec(spec)

        message = str(caught.value)
        assert message.startswith(f"invalid port spec {spec!r}: ")
        assert problem in message
        assert caught.value.value is spec

    def test_error_is_value_error(self) -> None:
        with pytest.raises(ValueError, match="greater than 65535"):
            parse_port_spec(70000)

    def test_error_example_message(self) -> None:
        expected = (
            "invalid port spec '9000-8000': range start 9000 is greater than its "
            "end 8000; write 'low-high' with low <= high"
        )

        with pytest.raises(InvalidPortSpecError) as caught:
            parse_port_spec("9000-8000")

        assert str(caught.value) == expected

    def test_error_names_collection_item(self) -> None:
        spec = [80, "9000-8000"]

        with pytest.raises(InvalidPortSpecError) as caught:
            parse_port_spec(spec)

        message = str(caught.value)
        assert repr(spec) in message
        assert "in item '9000-8000' of the list" in message

    def test_error_lists_accepted_forms(self) -> None:
        with pytest.raises(InvalidPortSpecError) as caught:
            parse_port_spec("abc")

        message = str(caught.value)
        assert "'low-high'" in message
        assert "(low, high)" in message
        assert "-1 for no port" in message

    def test_error_shortens_long_value(self) -> None:
        spec = [*range(1, 1000), "abc"]

        with pytest.raises(InvalidPortSpecError) as caught:
            parse_port_spec(spec)

        message = str(caught.value)
        assert len(message) < 500
        assert "in item 'abc' of the list" in message

    def test_parse_large_range_fast(self) -> None:
        seconds = timeit.timeit(lambda: parse_port_spec("1024-65535"), number=5) / 5

        assert seconds < 0.02


class TestParsePortSet:
    def test_parse_set_of_exact(self) -> None:
        assert parse_port_set(8080) == frozenset({8080})

    def test_parse_set_of_range(self) -> None:
        assert parse_port_set("80-82") == frozenset({80, 81, 82})

    @pytest.mark.parametrize("spec", [None, 0, "", [], ()])
    def test_parse_set_rejects_any(self, spec: object) -> None:
        with pytest.raises(InvalidPortSpecError, match="means any port"):
            parse_port_set(spec)

    @pytest.mark.parametrize("spec", [-1, "-1"])
    def test_parse_set_rejects_none(self, spec: object) -> None:
        with pytest.raises(InvalidPortSpecError, match="means no port"):
            parse_port_set(spec)

    def test_parse_set_names_role(self) -> None:
        with pytest.raises(InvalidPortSpecError) as caught:
            parse_port_set("abc", what="excluded ports")

        assert str(caught.value).startswith("invalid excluded ports 'abc': ")


class TestPortPatterns:
    @pytest.mark.parametrize(
        ("pattern", "matched"),
        [
            ("80*", {80, 801, 804, 8000, 8010, 8087}),
            ("*7", {7, 17, 8087}),
            ("80?0", {8000, 8010}),
            ("80[1-3]", {801}),
            ("80[!1-3]", {804}),
            ("8010", {8010}),
        ],
    )
    def test_pattern_matches(self, pattern: str, matched: set[int]) -> None:
        ports = [7, 17, 80, 801, 804, 8000, 8010, 8087, 9000]

        assert match_port_patterns([pattern], ports) == matched

    def test_patterns_combined(self) -> None:
        assert match_port_patterns(["1*", "*9"], [1, 9, 15, 29, 30]) == {1, 9, 15, 29}

    @pytest.mark.parametrize(
        ("pattern", "problem"),
        [
            ("", "empty"),
            ("80a", "'a' at position 2"),
            ("8.0", "'.' at position 1"),
            ("80]", "']' at position 2"),
            ("80[", "bracket at position 2"),
            ("80[a]", "bracket at position 2"),
            ("80[]", "bracket at position 2"),
            ("80[9-1]", "bad character range"),
            ("-80", "'-' at position 0"),
        ],
    )
    def test_pattern_rejected(self, pattern: str, problem: str) -> None:
        with pytest.raises(InvalidPortSpecError) as caught:
            translate_port_pattern(pattern)

        message = str(caught.value)
        assert message.startswith(f"invalid port pattern {pattern!r}: ")
        assert problem in message

    def test_pattern_type_checked(self) -> None:
        with pytest.raises(TypeError, match="must be a str"):
            translate_port_pattern(80)


class TestFormatPorts:
    def test_format_runs(self) -> None:
        assert format_ports([5, 1, 2, 3, 7, 8]) == "1-3,5,7-8"

    def test_format_empty(self) -> None:
        assert format_ports([]) == ""

    def test_format_shortened(self) -> None:
        assert format_ports(range(1, 20, 2), max_runs=3) == "1,3,5,... (+7 more)"

    @given(st.frozensets(st.integers(1, 65535), min_size=1, max_size=50))
    def test_format_round_trips(self, ports: frozenset[int]) -> None:
        text = format_ports(ports, max_runs=100)

        assert parse_port_set(text) == ports


# Values that parse_port_spec may see: scalars of many types, strings built
# from the characters of the spec syntax, and collections of these.
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-70000, 70000),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(alphabet="0123456789-, +x", max_size=12),
    st.text(max_size=6),
    st.binary(max_size=4),
    st.builds(range, st.integers(-10, 70000), st.integers(-10, 70000)),
)
_specs = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.tuples(children, children),
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.frozensets(
            st.integers(-5, 70000) | st.text("0123456789-,", max_size=8), max_size=4
        ),
        st.dictionaries(st.text(max_size=2), children, max_size=2),
    ),
    max_leaves=8,
)


class TestParseProperties:
    @settings(max_examples=300)
    @given(_specs)
    def test_parse_raises_only_invalid_spec(self, spec: object) -> None:
        error: InvalidPortSpecError | None = None
        try:
            parsed = parse_port_spec(spec)
        except InvalidPortSpecError as caught:
            error = caught

        if error is not None:
            assert error.value is spec
            assert re.match(r"invalid port spec .+: .+; .+", str(error), re.DOTALL)
            return
        assert all(1 <= port <= 65535 for port in parsed.ports)
        assert (parsed.port is not None) == (parsed.kind == "exact")
