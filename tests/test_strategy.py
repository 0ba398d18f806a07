"""Tests of PortSelectionStrategy: building, exclusions, preferences and order."""

from __future__ import annotations

import fnmatch
import os
import random
import subprocess
import sys
import time
import timeit
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aioportclaim import _system
from aioportclaim._exceptions import InvalidPortSpecError
from aioportclaim._strategy import WELL_KNOWN_SERVICE_PORTS, PortSelectionStrategy

BASE = "20000-20999"
BASE_PORTS = frozenset(range(20000, 21000))

# The first candidate for app id "service-a" on ports 20000-29999. The value
# is pinned so that a change of the hash would show here: a restarted service
# must keep trying the port it had before.
SERVICE_A_FIRST_PORT = 27879

Build = Callable[[PortSelectionStrategy], PortSelectionStrategy]

BUILDER_CALLS: list[tuple[str, Build]] = [
    ("exclude_ports", lambda strategy: strategy.exclude_ports(20001, "20010-20019")),
    ("exclude_range", lambda strategy: strategy.exclude_range(20100, 20199)),
    ("exclude_pattern", lambda strategy: strategy.exclude_pattern("*7")),
    ("exclude_well_known", lambda strategy: strategy.exclude_well_known()),
    ("prefer_range", lambda strategy: strategy.prefer_range(20500, 20599, weight=2)),
    ("prefer_ports", lambda strategy: strategy.prefer_ports(20001, (20002, 20003))),
    ("add_validator", lambda strategy: strategy.add_validator(lambda port: True)),
]


def ordered(strategy: PortSelectionStrategy, seed: int = 0) -> list[int]:
    return list(strategy.candidates(rng=random.Random(seed)))


class TestBuilder:
    @pytest.mark.parametrize(
        "build",
        [call for _, call in BUILDER_CALLS],
        ids=[name for name, _ in BUILDER_CALLS],
    )
    def test_builder_call_keeps_base(self, build: Build) -> None:
        base = PortSelectionStrategy(BASE)
        before = (repr(base), base.allowed_count, ordered(base), base.has_validators)

        derived = build(base)

        assert derived is not base
        assert derived != base
        assert (
            repr(base),
            base.allowed_count,
            ordered(base),
            base.has_validators,
        ) == before

    def test_builder_empty_exclusion_equal(self) -> None:
        base = PortSelectionStrategy(BASE)

        derived = base.exclude_ports()

        assert derived == base
        assert derived is not base

    def test_equal_builds_equal_hash(self) -> None:
        first = (
            PortSelectionStrategy(BASE).exclude_ports(20001).prefer_range(20500, 20599)
        )
        second = (
            PortSelectionStrategy(BASE).exclude_ports(20001).prefer_range(20500, 20599)
        )

        assert first == second
        assert hash(first) == hash(second)

    def test_different_bases_unequal(self) -> None:
        assert PortSelectionStrategy(BASE) != PortSelectionStrategy("20000-20998")

    @pytest.mark.parametrize(
        ("spec", "count"),
        [(8080, 1), ("8000-8009", 10), ((8000, 8009), 10), ([80, "90-91"], 3)],
    )
    def test_base_from_spec(self, spec: object, count: int) -> None:
        assert PortSelectionStrategy(spec).allowed_count == count


class TestExclusions:
    def test_exclude_ports_forms(self) -> None:
        strategy = PortSelectionStrategy(BASE).exclude_ports(
            20000, "20010-20012", (20020, 20021), range(20030, 20032), [20040, "20041"]
        )

        excluded = {
            20000,
            20010,
            20011,
            20012,
            20020,
            20021,
            20030,
            20031,
            20040,
            20041,
        }
        assert set(ordered(strategy)) == BASE_PORTS - excluded
        assert strategy.excluded_count == len(excluded)
        assert strategy.allowed_count == 1000 - len(excluded)

    def test_exclude_range_inclusive(self) -> None:
        strategy = PortSelectionStrategy(BASE).exclude_range(20000, 20499)

        assert set(ordered(strategy)) == set(range(20500, 21000))

    def test_exclude_pattern(self) -> None:
        strategy = (
            PortSelectionStrategy(BASE)
            .exclude_pattern("20[0-4]*")
            .exclude_pattern("*7")
        )

        expected = {port for port in range(20500, 21000) if port % 10 != 7}
        assert set(ordered(strategy)) == expected

    def test_exclude_well_known(self) -> None:
        strategy = PortSelectionStrategy("1-65535").exclude_well_known()

        candidates = set(strategy.candidates())
        assert candidates.isdisjoint(WELL_KNOWN_SERVICE_PORTS)
        assert strategy.excluded_count == len(WELL_KNOWN_SERVICE_PORTS)

    @pytest.mark.parametrize(
        "port", [5432, 3306, 6379, 27017, 9092, 5672, 11211, 9200, 2181, 2379]
    )
    def test_well_known_contains_service(self, port: int) -> None:
        assert port in WELL_KNOWN_SERVICE_PORTS

    def test_exclusion_outside_base_not_counted(self) -> None:
        strategy = PortSelectionStrategy(BASE).exclude_ports(80, 20000)

        assert strategy.excluded_count == 1

    def test_exclude_everything(self) -> None:
        strategy = PortSelectionStrategy(BASE).exclude_range(20000, 20999)

        assert list(strategy.candidates("app")) == []
        assert strategy.allowed_count == 0

    def test_is_allowed(self) -> None:
        strategy = (
            PortSelectionStrategy(BASE).exclude_ports(20005).exclude_pattern("*9")
        )

        assert strategy.is_allowed(20000)
        assert not strategy.is_allowed(20005)
        assert not strategy.is_allowed(20009)
        assert not strategy.is_allowed(19999)
        assert not strategy.is_allowed(21000)


class TestCandidates:
    def test_candidates_visit_each_once(self) -> None:
        ports = ordered(PortSelectionStrategy(BASE))

        assert len(ports) == 1000
        assert set(ports) == BASE_PORTS

    def test_candidates_order_random(self) -> None:
        ports = ordered(PortSelectionStrategy(BASE))

        assert ports != sorted(ports)

    def test_candidates_seed_reproducible(self) -> None:
        strategy = PortSelectionStrategy(BASE)

        assert ordered(strategy, seed=5) == ordered(strategy, seed=5)
        assert ordered(strategy, seed=5) != ordered(strategy, seed=6)

    @pytest.mark.parametrize("size", [1, 2, 3, 4, 97, 128])
    def test_candidates_small_sets(self, size: int) -> None:
        strategy = PortSelectionStrategy((30000, 30000 + size - 1))

        for seed in range(20):
            assert sorted(ordered(strategy, seed)) == list(range(30000, 30000 + size))

    def test_default_base_read_lazily(self, monkeypatch: pytest.MonkeyPatch) -> None:
        calls: list[None] = []

        def fake_default_ports() -> tuple[int, ...]:
            calls.append(None)
            return (40000, 40001)

        monkeypatch.setattr(_system, "default_candidate_ports", fake_default_ports)
        strategy = PortSelectionStrategy()
        assert calls == []

        assert sorted(strategy.candidates()) == [40000, 40001]
        assert len(calls) == 1

    def test_default_base_avoids_ephemeral(self) -> None:
        low, high = _system.read_ephemeral_range()
        reserved = _system.read_reserved_ports()
        outside = [
            port
            for port in range(_system.FIRST_UNPRIVILEGED_PORT, 65536)
            if not low <= port <= high and port not in reserved
        ]
        if len(outside) < _system.MIN_DEFAULT_PORTS:
            pytest.skip(f"the ephemeral range {low}-{high} leaves too few ports")

        ports = list(PortSelectionStrategy().candidates())

        assert ports
        assert not [port for port in ports if low <= port <= high]
        assert not reserved.intersection(ports)
        assert min(ports) >= _system.FIRST_UNPRIVILEGED_PORT

    def test_first_candidate_fast(self) -> None:
        strategy = PortSelectionStrategy()
        next(strategy.candidates())

        seconds = timeit.timeit(lambda: next(strategy.candidates()), number=1000) / 1000

        # Starting the order costs microseconds, while a shuffled copy of the
        # default ports, tens of thousands of them, would take milliseconds.
        assert seconds < 50e-6


class TestPreferences:
    def test_preferred_come_first(self) -> None:
        strategy = PortSelectionStrategy(BASE).prefer_range(20500, 20509)

        ports = ordered(strategy)

        assert set(ports[:10]) == set(range(20500, 20510))
        assert len(ports) == 1000

    def test_prefer_ports_forms(self) -> None:
        strategy = PortSelectionStrategy(BASE).prefer_ports(
            20001, "20002-20003", (20004, 20004)
        )

        assert set(ordered(strategy)[:4]) == {20001, 20002, 20003, 20004}

    def test_preferred_excluded_not_yielded(self) -> None:
        strategy = (
            PortSelectionStrategy(BASE)
            .prefer_range(20500, 20509)
            .exclude_range(20500, 20504)
            .prefer_ports(80)
        )

        ports = ordered(strategy)

        assert set(ports[:5]) == set(range(20505, 20510))
        assert not {80, 20500, 20501, 20502, 20503, 20504}.intersection(ports)
        assert len(ports) == 995

    def test_weights_order_ranges(self) -> None:
        strategy = (
            PortSelectionStrategy(BASE)
            .prefer_range(20000, 20099, weight=2.0)
            .prefer_range(20100, 20199, weight=1.0)
        )
        rng = random.Random(1234)

        trials = 3000
        heavy_first = sum(
            next(strategy.candidates(rng=rng)) < 20100 for _ in range(trials)
        )

        # A weight-2 port is twice as likely to come first: 2/3 of the trials.
        assert 0.62 < heavy_first / trials < 0.71

    def test_weights_keep_every_port(self) -> None:
        strategy = (
            PortSelectionStrategy(BASE)
            .prefer_range(20000, 20099, weight=3.0)
            .prefer_range(20100, 20199, weight=0.5)
        )

        ports = ordered(strategy)

        assert set(ports[:200]) == set(range(20000, 20200))
        assert set(ports) == BASE_PORTS
        assert len(ports) == 1000

    def test_overlap_takes_max_weight(self) -> None:
        strategy = (
            PortSelectionStrategy(BASE)
            .prefer_range(20000, 20009)
            .prefer_ports(20005, weight=5)
        )
        rng = random.Random(99)

        trials = 3000
        hits = sum(next(strategy.candidates(rng=rng)) == 20005 for _ in range(trials))

        # Port 20005 has weight 5 against nine ports of weight 1: 5/14 of trials.
        assert 0.31 < hits / trials < 0.41

    @pytest.mark.parametrize("weight", [0, -1.0, float("nan"), float("inf")])
    def test_weight_invalid(self, weight: float) -> None:
        with pytest.raises(ValueError, match="weight"):
            PortSelectionStrategy(BASE).prefer_range(20000, 20009, weight=weight)

    @pytest.mark.parametrize("weight", ["2", True, None])
    def test_weight_wrong_type(self, weight: object) -> None:
        with pytest.raises(TypeError, match="weight"):
            PortSelectionStrategy(BASE).prefer_ports(20000, weight=weight)  # type: ignore[arg-type]


class TestAppId:
    def test_app_id_first_stable(self) -> None:
        first = next(PortSelectionStrategy(BASE).candidates("service-a"))
        second = next(
            PortSelectionStrategy(BASE).candidates("service-a", rng=random.Random(7))
        )

        assert first == second

    def test_app_id_pinned_value(self) -> None:
        strategy = PortSelectionStrategy("20000-29999")

        assert next(strategy.candidates("service-a")) == SERVICE_A_FIRST_PORT

    @pytest.mark.parametrize("hash_seed", ["1", "2"])
    def test_app_id_stable_across_processes(self, hash_seed: str) -> None:
        code = (
            "from aioportclaim._strategy import PortSelectionStrategy\n"
            "print(next(PortSelectionStrategy('20000-29999').candidates('service-a')))\n"
        )
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}

        child = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )

        assert child.returncode == 0, child.stderr
        assert int(child.stdout) == SERVICE_A_FIRST_PORT

    def test_app_id_ids_differ(self) -> None:
        strategy = PortSelectionStrategy(BASE)

        firsts = {next(strategy.candidates(f"service-{index}")) for index in range(20)}

        assert len(firsts) > 10

    def test_app_id_not_repeated(self) -> None:
        strategy = PortSelectionStrategy(BASE).prefer_range(20500, 20599)

        ports = list(strategy.candidates("service-a"))

        assert len(ports) == 1000
        assert set(ports) == BASE_PORTS

    def test_app_id_prefers_preferred(self) -> None:
        strategy = PortSelectionStrategy(BASE).prefer_range(20500, 20509)

        for index in range(20):
            assert 20500 <= next(strategy.candidates(f"service-{index}")) <= 20509

    def test_app_id_preferred_all_excluded(self) -> None:
        strategy = (
            PortSelectionStrategy(BASE)
            .prefer_range(20500, 20509)
            .exclude_range(20500, 20509)
        )

        first = next(strategy.candidates("service-a"))

        assert strategy.is_allowed(first)

    def test_app_id_wrong_type(self) -> None:
        with pytest.raises(TypeError, match="app_id"):
            PortSelectionStrategy(BASE).candidates(b"service-a")  # type: ignore[arg-type]


class TestValidators:
    async def test_validate_without_validators(self) -> None:
        strategy = PortSelectionStrategy(BASE)

        assert not strategy.has_validators
        assert await strategy.validate(20000)

    async def test_validate_sync(self) -> None:
        strategy = PortSelectionStrategy(BASE).add_validator(lambda port: port % 2 == 0)

        assert strategy.has_validators
        assert await strategy.validate(20000)
        assert not await strategy.validate(20001)

    async def test_validate_async(self) -> None:
        async def even_port(port: int) -> bool:
            await anyio.lowlevel.checkpoint()
            return port % 2 == 0

        strategy = PortSelectionStrategy(BASE).add_validator(even_port)

        assert await strategy.validate(20000)
        assert not await strategy.validate(20001)

    async def test_validate_stops_at_rejection(self) -> None:
        seen: list[str] = []

        def reject(port: int) -> bool:
            seen.append("reject")
            return False

        async def accept(port: int) -> bool:
            seen.append("accept")
            return True

        strategy = (
            PortSelectionStrategy(BASE)
            .add_validator(accept)
            .add_validator(reject)
            .add_validator(accept)
        )

        assert not await strategy.validate(20000)
        assert seen == ["accept", "reject"]

    async def test_validate_error_propagates(self) -> None:
        async def broken(port: int) -> bool:
            message = "firewall lookup failed"
            raise RuntimeError(message)

        strategy = PortSelectionStrategy(BASE).add_validator(broken)

        with pytest.raises(RuntimeError, match="firewall lookup failed"):
            await strategy.validate(20000)

    def test_validators_not_run_by_candidates(self) -> None:
        strategy = PortSelectionStrategy(BASE).add_validator(lambda port: False)

        assert len(ordered(strategy)) == 1000

    def test_validator_not_callable(self) -> None:
        with pytest.raises(TypeError, match="callable"):
            PortSelectionStrategy(BASE).add_validator(5)  # type: ignore[arg-type]


def check_firewall(port: int) -> bool:
    return True


class TestRepr:
    def test_repr_full_strategy(self) -> None:
        strategy = (
            PortSelectionStrategy([(1024, 32767), (61000, 65535)])
            .exclude_ports(5432, "8000-8010")
            .exclude_pattern("80*")
            .exclude_well_known()
            .prefer_range(20000, 20999, weight=2.0)
            .add_validator(check_firewall)
        )

        assert repr(strategy) == (
            "PortSelectionStrategy(ports=1024-32767,61000-65535, "
            "exclude=[5432, 8000-8010, '80*', well-known], "
            "prefer=[20000-20999 x2.0], validators=[check_firewall])"
        )

    def test_repr_base_only(self) -> None:
        assert (
            repr(PortSelectionStrategy(BASE))
            == "PortSelectionStrategy(ports=20000-20999)"
        )

    def test_repr_shortens_long_lists(self) -> None:
        strategy = PortSelectionStrategy(BASE).exclude_ports(*range(20000, 20040, 2))

        text = repr(strategy)

        assert "20000, 20002" in text
        assert "(+12 more)" in text
        assert len(text) < 200

    def test_repr_shortens_scattered_ports(self) -> None:
        strategy = PortSelectionStrategy(list(range(20000, 20100, 2)))

        assert (
            repr(strategy)
            == "PortSelectionStrategy(ports=20000,20002,20004,20006,... (+46 more))"
        )


class TestErrors:
    @pytest.mark.parametrize(
        ("low", "high"), [(0, 10), (9000, 8000), (1, 70000), (-1, 5)]
    )
    def test_exclude_range_invalid(self, low: int, high: int) -> None:
        with pytest.raises(InvalidPortSpecError, match="invalid excluded range"):
            PortSelectionStrategy(BASE).exclude_range(low, high)

    @pytest.mark.parametrize(("low", "high"), [(0, 10), (9000, 8000), (1, 70000)])
    def test_prefer_range_invalid(self, low: int, high: int) -> None:
        with pytest.raises(InvalidPortSpecError, match="invalid preferred range"):
            PortSelectionStrategy(BASE).prefer_range(low, high)

    @pytest.mark.parametrize("spec", [0, "", -1, "abc", "9000-8000", 70000])
    def test_exclude_ports_invalid(self, spec: int | str) -> None:
        with pytest.raises(InvalidPortSpecError, match="invalid excluded ports"):
            PortSelectionStrategy(BASE).exclude_ports(20000, spec)

    def test_prefer_ports_invalid(self) -> None:
        with pytest.raises(InvalidPortSpecError, match="invalid preferred ports"):
            PortSelectionStrategy(BASE).prefer_ports("20000-")

    @pytest.mark.parametrize("pattern", ["", "8a", "80[", "8.0"])
    def test_exclude_pattern_invalid(self, pattern: str) -> None:
        with pytest.raises(InvalidPortSpecError, match="invalid port pattern"):
            PortSelectionStrategy(BASE).exclude_pattern(pattern)

    @pytest.mark.parametrize("spec", [-1, "-1", True, 8000.5, "abc"])
    def test_base_invalid(self, spec: object) -> None:
        with pytest.raises(InvalidPortSpecError):
            PortSelectionStrategy(spec)


@dataclass(frozen=True)
class Operation:
    """One builder call, as Hypothesis draws it."""

    kind: str
    ports: tuple[int, ...] = ()
    pattern: str = ""
    weight: float = 1.0


@dataclass
class Recipe:
    """A strategy, with its allowed and preferred ports computed independently."""

    strategy: PortSelectionStrategy
    excluded: set[int] = field(default_factory=set)
    patterns: list[str] = field(default_factory=list)
    preferred: set[int] = field(default_factory=set)

    def allowed(self, base: frozenset[int]) -> set[int]:
        return {
            port
            for port in base - self.excluded
            if not any(
                fnmatch.fnmatchcase(str(port), pattern) for pattern in self.patterns
            )
        }

    def apply(self, operation: Operation) -> None:
        if operation.kind == "ports":
            self.strategy = self.strategy.exclude_ports(*operation.ports)
            self.excluded.update(operation.ports)
        elif operation.kind == "range":
            low, high = sorted(operation.ports)
            self.strategy = self.strategy.exclude_range(low, high)
            self.excluded.update(range(low, high + 1))
        elif operation.kind == "pattern":
            self.strategy = self.strategy.exclude_pattern(operation.pattern)
            self.patterns.append(operation.pattern)
        else:
            low, high = sorted(operation.ports)
            self.strategy = self.strategy.prefer_range(
                low, high, weight=operation.weight
            )
            self.preferred.update(range(low, high + 1))


PROPERTY_BASE = "1000-1199"
PROPERTY_PORTS = frozenset(range(1000, 1200))
_ports = st.integers(990, 1210)
_patterns = st.one_of(
    st.text(alphabet="0123456789*?", min_size=1, max_size=4),
    st.sampled_from(["1[01]*", "*[!0-4]", "10[5-9]?", "11?[13579]"]),
)
_operations = st.lists(
    st.one_of(
        st.builds(Operation, st.just("ports"), st.tuples(_ports, _ports, _ports)),
        st.builds(Operation, st.just("range"), st.tuples(_ports, _ports)),
        st.builds(Operation, st.just("pattern"), pattern=_patterns),
        st.builds(
            Operation,
            st.just("prefer"),
            st.tuples(_ports, _ports),
            weight=st.sampled_from([0.5, 1.0, 3.0]),
        ),
    ),
    max_size=6,
)


def build_recipe(
    operations: list[Operation], start: PortSelectionStrategy | None = None
) -> Recipe:
    recipe = Recipe(
        start if start is not None else PortSelectionStrategy(PROPERTY_BASE)
    )
    for operation in operations:
        recipe.apply(operation)
    return recipe


def snapshot(strategy: PortSelectionStrategy) -> tuple[object, ...]:
    return (repr(strategy), sorted(strategy.candidates()), strategy.excluded_count)


class TestStrategyProperties:
    @settings(max_examples=150)
    @given(
        _operations, st.integers(0, 2**32), st.sampled_from([None, "app", "other-app"])
    )
    def test_candidates_match_allowed(
        self, operations: list[Operation], seed: int, app_id: str | None
    ) -> None:
        recipe = build_recipe(operations)
        allowed = recipe.allowed(PROPERTY_PORTS)

        ports = list(recipe.strategy.candidates(app_id, rng=random.Random(seed)))

        assert len(ports) == len(set(ports))
        assert set(ports) == allowed
        assert len(ports) == recipe.strategy.allowed_count
        assert recipe.strategy.excluded_count == len(PROPERTY_PORTS) - len(allowed)

    @settings(max_examples=100)
    @given(_operations, st.integers(0, 2**32))
    def test_preferred_before_others(
        self, operations: list[Operation], seed: int
    ) -> None:
        recipe = build_recipe(operations)
        preferred = recipe.preferred & recipe.allowed(PROPERTY_PORTS)

        ports = list(recipe.strategy.candidates(rng=random.Random(seed)))

        assert set(ports[: len(preferred)]) == preferred

    @settings(max_examples=100)
    @given(_operations, _operations)
    def test_builder_never_changes_base(
        self, first: list[Operation], second: list[Operation]
    ) -> None:
        base = build_recipe(first).strategy
        before = snapshot(base)

        build_recipe(second, start=base)

        assert snapshot(base) == before
        assert base == build_recipe(first).strategy


class TestPatternCost:
    def test_many_stars_stay_fast(self) -> None:
        started = time.perf_counter()
        strategy = PortSelectionStrategy("1024-65535").exclude_pattern("*" * 40 + "7")

        assert strategy.allowed_count == 64512 - len(
            [p for p in range(1024, 65536) if str(p).endswith("7")]
        )
        assert time.perf_counter() - started < 5
