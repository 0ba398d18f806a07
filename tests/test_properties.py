"""Property tests across port specs, strategies and real claims.

Hypothesis builds port specs and strategies at random, valid and invalid.
Building one raises nothing but the documented errors, and a port that a
claim returns satisfies every exclusion and validator of its strategy. The
claims bind real sockets on a window of ports that were free when the module
started. Another process may take one of them meanwhile, so a claim may skip
a port, and an exhausted claim must then report it as in use or locked.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aioportclaim import (
    WELL_KNOWN_SERVICE_PORTS,
    FileLockRegistry,
    InvalidPortSpecError,
    PortExhaustedError,
    PortSelectionStrategy,
    claim_port,
    parse_port_spec,
)

from .conftest import count_open_fds, find_free_ports

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

WINDOW_SIZE = 32
DOCUMENTED_BUILD_ERRORS = (InvalidPortSpecError, ValueError)
# Claims run on both backends with real sockets, so examples are few.
CLAIM_SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def window() -> list[int]:
    """Return consecutive ports that were free for TCP and UDP when the module started."""
    return find_free_ports(WINDOW_SIZE)


@pytest.fixture(scope="module")
def module_registry(tmp_path_factory: pytest.TempPathFactory) -> FileLockRegistry:
    return FileLockRegistry(tmp_path_factory.mktemp("property-locks"))


# Arbitrary values for specs: numbers and texts near and past the port
# bounds, ranges with steps, and nested collections of all of them.
_numbers = st.one_of(
    st.integers(-3, 70000),
    st.sampled_from([-1, 0, 1, 65535, 65536]),
    st.integers(),
    st.floats(),
    st.booleans(),
)
_texts = st.one_of(
    _numbers.map(str),
    st.builds("{}-{}".format, st.integers(-2, 70000), st.integers(-2, 70000)),
    st.text("0123456789-, ", max_size=12),
    st.text(max_size=6),
)
_atoms = st.one_of(
    _numbers,
    _texts,
    st.none(),
    st.binary(max_size=3),
    st.builds(
        range,
        st.integers(-3, 70000),
        st.integers(-3, 70000),
        st.sampled_from([1, 3, -1, -7]),
    ),
)
_specs = st.recursive(
    _atoms,
    lambda children: st.one_of(
        st.tuples(children, children),
        st.lists(children, max_size=3),
        st.lists(children, max_size=3).map(tuple),
        st.frozensets(
            st.integers(-3, 70000) | st.text("0123456789-,", max_size=6), max_size=3
        ),
        st.dictionaries(st.text(max_size=2), children, max_size=1),
    ),
    max_leaves=6,
)
_bounds = st.one_of(st.integers(-3, 70000), st.integers())
_weights = st.one_of(st.floats(), st.integers(-3, 5))
_any_patterns = st.text("0123456789*?[]!-a ", max_size=6)

BuilderCall = tuple[str, tuple[object, ...]]
_builder_calls: st.SearchStrategy[BuilderCall] = st.one_of(
    st.tuples(st.just("exclude_ports"), st.lists(_specs, max_size=2).map(tuple)),
    st.tuples(st.just("exclude_range"), st.tuples(_bounds, _bounds)),
    st.tuples(st.just("exclude_pattern"), st.tuples(_any_patterns)),
    st.tuples(st.just("exclude_well_known"), st.just(())),
    st.tuples(st.just("prefer_range"), st.tuples(_bounds, _bounds, _weights)),
    st.tuples(st.just("prefer_ports"), st.tuples(_specs, _weights)),
)


def call_builder(
    strategy: PortSelectionStrategy, call: BuilderCall
) -> PortSelectionStrategy:
    name, arguments = call
    if name == "prefer_ports":
        spec, weight = arguments
        return strategy.prefer_ports(spec, weight=weight)  # type: ignore[arg-type]
    method: Callable[..., PortSelectionStrategy] = getattr(strategy, name)
    return method(*arguments)


class TestBuildingProperties:
    @settings(max_examples=150, deadline=None)
    @given(_specs)
    def test_strategy_from_spec_raises_documented_errors(self, spec: object) -> None:
        error: InvalidPortSpecError | None = None
        try:
            strategy = PortSelectionStrategy(spec)
        except InvalidPortSpecError as caught:
            error = caught

        if error is not None:
            assert error.value is spec
            return
        assert strategy.allowed_count >= 0
        assert repr(strategy).startswith("PortSelectionStrategy(")

    @settings(max_examples=150, deadline=None)
    @given(st.lists(_builder_calls, max_size=5))
    def test_builder_chain_raises_documented_errors(
        self, calls: list[BuilderCall]
    ) -> None:
        strategy = PortSelectionStrategy("1000-1999")
        for call in calls:
            before = repr(strategy)
            try:
                strategy = call_builder(strategy, call)
            except DOCUMENTED_BUILD_ERRORS:
                assert repr(strategy) == before
        ports = list(strategy.candidates())

        assert len(ports) == len(set(ports))
        assert len(ports) == strategy.allowed_count
        assert all(strategy.is_allowed(port) for port in ports)


@dataclass(frozen=True)
class ModuloValidator:
    """Reject ports whose remainder modulo `divisor` is `remainder`, sync or async."""

    divisor: int
    remainder: int
    is_async: bool

    def accepts(self, port: int) -> bool:
        return port % self.divisor != self.remainder

    def as_callable(self) -> Callable[[int], bool | Awaitable[bool]]:
        if not self.is_async:
            return self.accepts

        async def accepts_after_checkpoint(port: int) -> bool:
            await anyio.lowlevel.checkpoint()
            return self.accepts(port)

        return accepts_after_checkpoint


@dataclass
class StrategyRecipe:
    """A strategy over window offsets, and what each of its parts allows."""

    base: frozenset[int]
    base_form: str
    excluded: set[int] = field(default_factory=set)
    ranges: list[tuple[int, int]] = field(default_factory=list)
    pattern_cuts: list[tuple[int, tuple[int, ...], bool]] = field(default_factory=list)
    well_known: bool = False
    preferred: list[tuple[int, int, float]] = field(default_factory=list)
    validators: list[ModuloValidator] = field(default_factory=list)
    app_id: str | None = None


def pattern_for(port: int, wildcards: tuple[int, ...], cut: bool) -> str:
    """Turn `port` into a glob: '?' at the wildcard positions, '*' after the first one when `cut`."""
    digits = list(str(port))
    for position in wildcards:
        digits[position % len(digits)] = "?"
    if cut and wildcards:
        first = min(position % len(digits) for position in wildcards)
        digits[first:] = ["*"]
    return "".join(digits)


@st.composite
def strategy_recipes(draw: st.DrawFn) -> StrategyRecipe:
    offsets = st.integers(0, WINDOW_SIZE - 1)
    base = draw(st.frozensets(offsets, min_size=1))
    recipe = StrategyRecipe(
        base=base,
        base_form=draw(st.sampled_from(["list", "text", "range"])),
        app_id=draw(st.none() | st.text(max_size=8)),
        well_known=draw(st.booleans()),
    )
    recipe.excluded.update(draw(st.sets(offsets, max_size=6)))
    for first, second in draw(st.lists(st.tuples(offsets, offsets), max_size=2)):
        recipe.ranges.append((min(first, second), max(first, second)))
    recipe.pattern_cuts.extend(
        draw(
            st.lists(
                st.tuples(offsets, st.tuples(st.integers(0, 4)), st.booleans()),
                max_size=2,
            )
        )
    )
    weights = st.sampled_from([0.5, 1.0, 4.0])
    for first, second, weight in draw(
        st.lists(st.tuples(offsets, offsets, weights), max_size=2)
    ):
        recipe.preferred.append((min(first, second), max(first, second), weight))
    recipe.validators.extend(
        draw(
            st.lists(
                st.builds(
                    ModuloValidator,
                    st.integers(2, 5),
                    st.integers(0, 4),
                    st.booleans(),
                ),
                max_size=3,
            )
        )
    )
    return recipe


def base_spec(recipe: StrategyRecipe, window: list[int]) -> object:
    ports = sorted(window[offset] for offset in recipe.base)
    if recipe.base_form == "text":
        return ",".join(map(str, ports))
    if recipe.base_form == "range":
        return range(ports[0], ports[-1] + 1)
    return ports


def build_strategy(recipe: StrategyRecipe, window: list[int]) -> PortSelectionStrategy:
    strategy = PortSelectionStrategy(base_spec(recipe, window))
    if recipe.excluded:
        strategy = strategy.exclude_ports(
            [window[offset] for offset in recipe.excluded]
        )
    for low, high in recipe.ranges:
        strategy = strategy.exclude_range(window[low], window[high])
    for offset, wildcards, cut in recipe.pattern_cuts:
        strategy = strategy.exclude_pattern(pattern_for(window[offset], wildcards, cut))
    if recipe.well_known:
        strategy = strategy.exclude_well_known()
    for low, high, weight in recipe.preferred:
        strategy = strategy.prefer_range(window[low], window[high], weight=weight)
    for validator in recipe.validators:
        strategy = strategy.add_validator(validator.as_callable())
    return strategy


def allowed_ports(recipe: StrategyRecipe, window: list[int]) -> set[int]:
    """Compute the ports the recipe allows, without the strategy's own code."""
    if recipe.base_form == "range":
        ports = set(range(window[min(recipe.base)], window[max(recipe.base)] + 1))
    else:
        ports = {window[offset] for offset in recipe.base}
    ports -= {window[offset] for offset in recipe.excluded}
    for low, high in recipe.ranges:
        ports -= set(range(window[low], window[high] + 1))
    patterns = [pattern_for(window[o], w, c) for o, w, c in recipe.pattern_cuts]
    ports = {
        port
        for port in ports
        if not any(fnmatch.fnmatchcase(str(port), pattern) for pattern in patterns)
    }
    if recipe.well_known:
        ports -= WELL_KNOWN_SERVICE_PORTS
    return {
        port
        for port in ports
        if all(validator.accepts(port) for validator in recipe.validators)
    }


class TestClaimProperties:
    @CLAIM_SETTINGS
    @given(recipe=strategy_recipes())
    async def test_claimed_port_satisfies_strategy(
        self,
        recipe: StrategyRecipe,
        window: list[int],
        module_registry: FileLockRegistry,
    ) -> None:
        strategy = build_strategy(recipe, window)
        acceptable = allowed_ports(recipe, window)
        fds_before = count_open_fds()

        exhausted: PortExhaustedError | None = None
        try:
            async with claim_port(
                strategy, registry=module_registry, app_id=recipe.app_id, timeout=0.2
            ) as sock:
                port = sock.getsockname()[1]
        except PortExhaustedError as caught:
            exhausted = caught

        assert count_open_fds() == fds_before
        if exhausted is not None:
            busy = exhausted.rejections["in_use"] + exhausted.rejections["locked"]
            assert not acceptable or busy > 0
            return

        patterns = [pattern_for(window[o], w, c) for o, w, c in recipe.pattern_cuts]
        assert strategy.is_allowed(port)
        assert port not in {window[offset] for offset in recipe.excluded}
        assert not any(
            window[low] <= port <= window[high] for low, high in recipe.ranges
        )
        assert not any(fnmatch.fnmatchcase(str(port), pattern) for pattern in patterns)
        if recipe.well_known:
            assert port not in WELL_KNOWN_SERVICE_PORTS
        for validator in recipe.validators:
            assert validator.accepts(port), validator
        assert port in acceptable

    @CLAIM_SETTINGS
    @given(
        form=st.sampled_from(["int", "text", "tuple", "range", "list", "comma"]),
        first=st.integers(0, WINDOW_SIZE - 1),
        last=st.integers(0, WINDOW_SIZE - 1),
    )
    async def test_claim_port_stays_inside_spec(
        self,
        form: str,
        first: int,
        last: int,
        window: list[int],
        module_registry: FileLockRegistry,
    ) -> None:
        low, high = window[first], window[last]
        specs: dict[str, object] = {
            "int": low,
            "text": f"{low}-{high}",
            "tuple": (low, high),
            "range": range(low, high + 1),
            "list": [low, (high, high)],
            "comma": f"{high},{low}",
        }
        spec = specs[form]

        try:
            ports = parse_port_spec(spec).ports
        except InvalidPortSpecError:
            # Only a reversed range is invalid here, and claim_port must reject it too.
            with pytest.raises(InvalidPortSpecError):
                async with claim_port(spec, registry=module_registry, timeout=0.2):
                    pass
            assert low > high
            return
        exhausted: PortExhaustedError | None = None
        try:
            async with claim_port(spec, registry=module_registry, timeout=0.2) as sock:
                port = sock.getsockname()[1]
        except PortExhaustedError as caught:
            exhausted = caught

        if exhausted is not None:
            assert exhausted.rejections["in_use"] + exhausted.rejections["locked"] > 0
            return
        assert port in ports
