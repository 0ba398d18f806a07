"""Port selection: which ports a claim may use, and in what order it tries them."""

from __future__ import annotations

import bisect
import dataclasses
import inspect
import math
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import _system
from ._exceptions import InvalidPortSpecError
from ._order import Plan, default_rng, iterate_candidates
from ._spec import (
    PortSpecItem,
    describe_value,
    format_ports,
    match_port_patterns,
    parse_port_set,
    parse_port_spec,
    translate_port_pattern,
)

if TYPE_CHECKING:
    import random

#: A check that can reject a candidate port: a function or coroutine function
#: that takes the port and returns False to reject it.
Validator = Callable[[int], bool | Awaitable[bool]]

# Default ports of databases, caches, message brokers, search engines and
# coordination services, from each project's documentation.
_WELL_KNOWN_SERVICES: dict[str, tuple[int, ...]] = {
    "PostgreSQL, Greenplum": (5432,),
    "MySQL, MariaDB": (3306, 33060),
    "Microsoft SQL Server": (1433, 1434),
    "Oracle Database": (1521,),
    "IBM Db2": (50000,),
    "Firebird": (3050,),
    "Vertica, YugabyteDB YSQL": (5433,),
    "YugabyteDB": (7100,),
    "CockroachDB": (26257,),
    "MongoDB": (27017, 27018, 27019),
    "CouchDB": (5984,),
    "Couchbase": (8091, 8092, 8093, 8094, 8095, 8096, 11210),
    "Cassandra, ScyllaDB": (7000, 7001, 7199, 9042, 9160),
    "ClickHouse": (8123, 9000, 9009, 9440),
    "InfluxDB": (8086, 8088),
    "Neo4j, Memgraph": (7473, 7474, 7687),
    "ArangoDB": (8529,),
    "RethinkDB": (28015, 29015),
    "OrientDB": (2424, 2480),
    "Riak": (8087, 8098),
    "HBase": (16000, 16010, 16020, 16030),
    "Tarantool": (3301,),
    "Qdrant": (6333, 6334),
    "Milvus": (19530,),
    "Redis, Valkey": (6379, 16379, 26379),
    "Memcached": (11211,),
    "Hazelcast": (5701,),
    "Kafka": (9092,),
    "RabbitMQ": (4369, 5671, 5672, 15672, 25672),
    "ActiveMQ": (8161, 61613, 61616),
    "NATS": (4222, 6222, 8222),
    "MQTT": (1883, 8883),
    "Pulsar": (6650, 6651),
    "NSQ": (4150, 4151, 4160, 4161),
    "Beanstalkd": (11300,),
    "Elasticsearch, OpenSearch": (9200, 9300),
    "Solr": (8983,),
    "Meilisearch": (7700,),
    "Typesense": (8108,),
    "ZooKeeper": (2181, 2888, 3888),
    "etcd": (2379, 2380),
    "Consul": (8300, 8301, 8302, 8500, 8501, 8600),
}

WELL_KNOWN_SERVICE_PORTS: frozenset[int] = frozenset(
    port for ports in _WELL_KNOWN_SERVICES.values() for port in ports
)
"""Default ports of common databases, caches, brokers and coordination services.

The set contains the documented default ports, and most cluster and admin
ports, of these kinds of service:

- relational databases: PostgreSQL 5432, MySQL 3306, SQL Server 1433,
  Oracle 1521, CockroachDB 26257;
- document, column, graph and time-series stores: MongoDB 27017,
  Cassandra 9042, ClickHouse 8123 and 9000, CouchDB 5984, Neo4j 7687,
  InfluxDB 8086;
- caches: Redis 6379, Memcached 11211;
- message brokers: Kafka 9092, RabbitMQ 5672 and 15672, NATS 4222,
  MQTT 1883 and 8883;
- search engines: Elasticsearch 9200 and 9300, Solr 8983;
- coordination services: ZooKeeper 2181, etcd 2379 and 2380, Consul 8500.

`PortSelectionStrategy.exclude_well_known` removes them from the candidates.

.. versionadded:: 0.1
"""


@dataclass(frozen=True, slots=True)
class _Preference:
    ports: frozenset[int]
    weight: float
    label: str


@dataclass(frozen=True, slots=True)
class _Settings:
    """Everything a strategy was built from. Equal settings give equal strategies."""

    base: frozenset[int] | None = None
    excluded: frozenset[int] = frozenset()
    patterns: tuple[str, ...] = ()
    exclusion_labels: tuple[str, ...] = ()
    preferences: tuple[_Preference, ...] = ()
    validators: tuple[Validator, ...] = ()


class PortSelectionStrategy:
    """Choose which ports a claim may use and the order it tries them in.

    A strategy is an immutable builder: each method returns a new strategy
    and leaves the one it was called on unchanged, so a base strategy can be
    shared and refined safely. `candidates` yields each allowed port at most
    once, preferred ports first. Strategies compare equal when they were
    built from equal arguments.

    .. versionadded:: 0.1
    """

    __slots__ = ("_plan", "_settings")

    def __init__(self, ports: object = None) -> None:
        """Start a strategy with the base ports that `ports` names.

        `ports` takes any spec that `parse_port_spec` accepts. None, ``0``
        and the other forms that mean any port select the host's default
        candidates, which are read at first use. These are the unprivileged
        ports outside the ephemeral range and the kernel's reserved ports.
        When too few of those remain, `default_candidate_ports` falls back
        to a fixed range.

        Raises:
            InvalidPortSpecError: `ports` is invalid or ``-1`` (no port).
        """
        spec = parse_port_spec(ports)
        if spec.kind == "none":
            message = (
                f"invalid ports {describe_value(ports)}: -1 means no port, but a strategy needs "
                "candidate ports; pass None for the default ports"
            )
            raise InvalidPortSpecError(message, ports)
        base = spec.ports if spec.kind != "any" else None
        self._settings = _Settings(base=base)
        self._plan: Plan | None = None

    @classmethod
    def _from_settings(cls, settings: _Settings) -> PortSelectionStrategy:
        strategy = cls.__new__(cls)
        strategy._settings = settings
        strategy._plan = None
        return strategy

    def _with_exclusion(
        self, ports: frozenset[int], label: str
    ) -> PortSelectionStrategy:
        settings = self._settings
        return self._from_settings(
            dataclasses.replace(
                settings,
                excluded=settings.excluded | ports,
                exclusion_labels=(*settings.exclusion_labels, label),
            )
        )

    def exclude_ports(
        self, *ports: PortSpecItem | Collection[PortSpecItem]
    ) -> PortSelectionStrategy:
        """Return a strategy that never yields the given ports.

        Each argument is a spec that names specific ports: a port, a
        ``"low-high"`` or ``"a,b"`` string, a ``(low, high)`` tuple, a range,
        or a list or set of these.

        Raises:
            InvalidPortSpecError: An argument is invalid or means any port.
        """
        strategy = self
        for item in ports:
            excluded = parse_port_set(item, what="excluded ports")
            strategy = strategy._with_exclusion(excluded, format_ports(excluded))
        return strategy if ports else self._from_settings(self._settings)

    def exclude_range(self, low: int, high: int) -> PortSelectionStrategy:
        """Return a strategy that never yields ports from `low` to `high` inclusive.

        Raises:
            InvalidPortSpecError: A bound is outside 1 to 65535 or `low` > `high`.
        """
        excluded = parse_port_set((low, high), what="excluded range")
        return self._with_exclusion(excluded, f"{low}-{high}")

    def exclude_pattern(self, pattern: str) -> PortSelectionStrategy:
        """Return a strategy that never yields ports whose decimal form matches.

        `pattern` is an `fnmatch` glob over the decimal digits: ``"80*"``
        matches 80, 800 to 809 and 8000 to 8099, ``"*7"`` every port ending
        in 7, and ``"80?0"`` 8000, 8010 and so on up to 8090. Brackets take
        digits and digit ranges, negated by a leading ``!`` as in `fnmatch`.
        The ports that match are computed once per strategy, at first use.

        Raises:
            TypeError: `pattern` is not a str.
            InvalidPortSpecError: The pattern is empty or contains characters
                other than digits, ``*``, ``?`` and bracket expressions.
        """
        translate_port_pattern(pattern)
        settings = self._settings
        return self._from_settings(
            dataclasses.replace(
                settings,
                patterns=(*settings.patterns, pattern),
                exclusion_labels=(*settings.exclusion_labels, repr(pattern)),
            )
        )

    def exclude_well_known(self) -> PortSelectionStrategy:
        """Return a strategy that never yields `WELL_KNOWN_SERVICE_PORTS`."""
        return self._with_exclusion(WELL_KNOWN_SERVICE_PORTS, "well-known")

    def prefer_range(
        self, low: int, high: int, weight: float = 1.0
    ) -> PortSelectionStrategy:
        """Return a strategy that tries ports from `low` to `high` inclusive first.

        See `prefer_ports` for how weights order preferred ports.

        Raises:
            InvalidPortSpecError: A bound is outside 1 to 65535 or `low` > `high`.
            ValueError: `weight` is not a finite number greater than 0.
        """
        ports = parse_port_set((low, high), what="preferred range")
        return self._with_preference(ports, _check_weight(weight), f"{low}-{high}")

    def prefer_ports(
        self, *ports: PortSpecItem | Collection[PortSpecItem], weight: float = 1.0
    ) -> PortSelectionStrategy:
        """Return a strategy that tries the given ports first.

        Each argument is a spec as in `exclude_ports`. Preferred ports that
        are allowed come before all other ports, in weighted random order:
        a port of weight 2 is twice as likely as a port of weight 1 to be
        the next candidate. A port that several preferences name takes the
        highest of their weights.

        Raises:
            InvalidPortSpecError: An argument is invalid or means any port.
            ValueError: `weight` is not a finite number greater than 0.
        """
        checked_weight = _check_weight(weight)
        strategy = self
        for item in ports:
            preferred = parse_port_set(item, what="preferred ports")
            label = format_ports(preferred)
            strategy = strategy._with_preference(preferred, checked_weight, label)
        return strategy if ports else self._from_settings(self._settings)

    def _with_preference(
        self, ports: frozenset[int], weight: float, label: str
    ) -> PortSelectionStrategy:
        settings = self._settings
        preference = _Preference(ports, weight, label)
        return self._from_settings(
            dataclasses.replace(
                settings, preferences=(*settings.preferences, preference)
            )
        )

    def add_validator(self, validator: Validator) -> PortSelectionStrategy:
        """Return a strategy that also runs `validator` on each candidate.

        The validator takes the port and returns a bool, or an awaitable of
        one. False rejects the port; see `validate`.

        Raises:
            TypeError: `validator` is not callable.
        """
        _check_callable(validator)
        settings = self._settings
        return self._from_settings(
            dataclasses.replace(settings, validators=(*settings.validators, validator))
        )

    def candidates(
        self, app_id: str | None = None, *, rng: random.Random | None = None
    ) -> Iterator[int]:
        """Iterate over the allowed ports in the order a claim tries them.

        Each allowed port comes at most once and excluded ports never come.
        Preferred ports come first in weighted random order, then the other
        allowed ports in random order. Each random order walks the sorted
        ports from a random start with a random stride, so it is not a
        uniform shuffle, but each step costs O(1). The sorted ports are
        computed at the first use of a strategy and kept.
        Validators are not run here.

        With `app_id`, the first port is derived from a SHA-256 hash of the
        id, so it is the same in every process and after restarts as long
        as the strategy allows the same ports. It is chosen among the
        allowed preferred ports when there are any, else among all allowed
        ports. Pass `rng` to make the random order reproducible.
        """
        _check_app_id(app_id)
        plan = self._get_plan()
        return iterate_candidates(plan, app_id, rng if rng is not None else default_rng)

    def is_allowed(self, port: int) -> bool:
        """Tell whether `port` is a base port that no exclusion removes.

        Validators are not run; see `validate`.
        """
        allowed = self._get_plan().allowed
        index = bisect.bisect_left(allowed, port)
        return index < len(allowed) and allowed[index] == port

    async def validate(self, port: int) -> bool:
        """Run the validators on `port` in order, and tell whether all accept it.

        Sync validators are called, and the result of a validator is awaited
        when it is awaitable. The first validator that returns a false value
        rejects the port, and later validators are not run. An exception that
        a validator raises propagates to the caller.
        """
        for validator in self._settings.validators:
            verdict = validator(port)
            if inspect.isawaitable(verdict):
                verdict = await verdict
            if not verdict:
                return False
        return True

    @property
    def has_validators(self) -> bool:
        """Whether at least one validator was added."""
        return bool(self._settings.validators)

    def allowed_ports(self) -> tuple[int, ...]:
        """Return every allowed port, sorted; validators are not run.

        .. versionadded:: 0.1
        """
        return self._get_plan().allowed

    @property
    def allowed_count(self) -> int:
        """Number of base ports that no exclusion removes."""
        return len(self._get_plan().allowed)

    @property
    def excluded_count(self) -> int:
        """Number of base ports that the exclusions remove."""
        plan = self._get_plan()
        return plan.base_count - len(plan.allowed)

    def _get_plan(self) -> Plan:
        plan = self._plan
        if plan is None:
            plan = self._plan = _build_plan(self._settings)
        return plan

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PortSelectionStrategy):
            return NotImplemented
        return self._settings == other._settings

    def __hash__(self) -> int:
        return hash(self._settings)

    def __repr__(self) -> str:
        settings = self._settings
        base = settings.base
        ports = format_ports(base if base is not None else _default_ports())
        parts = [f"ports={ports}"]
        if settings.exclusion_labels:
            parts.append(f"exclude=[{_join_shortened(settings.exclusion_labels)}]")
        if settings.preferences:
            labels = [f"{pref.label} x{pref.weight!r}" for pref in settings.preferences]
            parts.append(f"prefer=[{_join_shortened(labels)}]")
        if settings.validators:
            names = [_name_validator(validator) for validator in settings.validators]
            parts.append(f"validators=[{_join_shortened(names)}]")
        return f"{type(self).__name__}({', '.join(parts)})"


def _join_shortened(labels: Iterable[str], limit: int = 8) -> str:
    items = list(labels)
    if len(items) > limit:
        items[limit:] = [f"... (+{len(items) - limit} more)"]
    return ", ".join(items)


def _name_validator(validator: Validator) -> str:
    name = getattr(validator, "__qualname__", None)
    return name if isinstance(name, str) else describe_value(validator)


def _default_ports() -> tuple[int, ...]:
    return _system.default_candidate_ports()


def _check_callable(validator: object) -> None:
    if not callable(validator):
        message = f"validator must be callable, not {describe_value(validator)}"
        raise TypeError(message)


def _check_app_id(app_id: object) -> None:
    check_app_id(app_id)


#: Maximum length of an application id, in characters, so holder records stay small.
MAX_APP_ID_LENGTH = 256


def check_app_id(app_id: object) -> None:
    """Raise unless `app_id` is None or a str of at most `MAX_APP_ID_LENGTH` characters."""
    if app_id is not None and not isinstance(app_id, str):
        message = f"app_id must be a str or None, not {describe_value(app_id)}"
        raise TypeError(message)
    if app_id is not None and len(app_id) > MAX_APP_ID_LENGTH:
        message = f"app_id of {len(app_id)} characters is too long: use at most {MAX_APP_ID_LENGTH}, such as a service name"
        raise ValueError(message)


def _check_weight(weight: object) -> float:
    if isinstance(weight, bool) or not isinstance(weight, int | float):
        message = f"weight must be a number, not {describe_value(weight)}"
        raise TypeError(message)
    if not math.isfinite(weight) or weight <= 0:
        message = f"invalid weight {weight!r}: a weight must be a finite number greater than 0"
        raise ValueError(message)
    return float(weight)


def _build_plan(settings: _Settings) -> Plan:
    base = settings.base if settings.base is not None else _default_ports()
    allowed: tuple[int, ...] = tuple(sorted(base))
    base_count = len(allowed)

    if settings.excluded:
        excluded = settings.excluded
        allowed = tuple(port for port in allowed if port not in excluded)
    if settings.patterns:
        matched = match_port_patterns(settings.patterns, allowed)
        allowed = tuple(port for port in allowed if port not in matched)
    if not settings.preferences:
        return Plan(base_count, allowed, (), (), allowed)

    allowed_set = frozenset(allowed)
    weights: dict[int, float] = {}
    for preference in settings.preferences:
        for port in preference.ports & allowed_set:
            weights[port] = max(weights.get(port, 0.0), preference.weight)
    by_weight: dict[float, list[int]] = {}
    for port, weight in weights.items():
        by_weight.setdefault(weight, []).append(port)

    groups = tuple(
        (weight, tuple(sorted(ports)))
        for weight, ports in sorted(by_weight.items(), reverse=True)
    )
    rest = tuple(port for port in allowed if port not in weights)
    return Plan(base_count, allowed, tuple(sorted(weights)), groups, rest)
