"""pytest fixtures that hold port claims for the length of a test.

Installing aioportclaim registers this plugin through the ``pytest11`` entry
point. Every fixture holds its claim from setup until the test ends, and
releases it at teardown:

- ``claimed_tcp_port`` and ``claimed_udp_port``: a port number whose lock is
  held but whose socket is closed (a reservation). The test's own server can
  bind it, while every cooperating process stays away, and so does a
  `claim_port` of the same number in this process.
- ``claimed_tcp_socket``: a bound, listening `socket.socket` on 127.0.0.1.
- ``claimed_tcp_port_factory``: a callable that reserves another TCP port
  each time it is called.

The fixtures are synchronous, so sync, asyncio and trio tests can use them.
Claims run on an event loop in a worker thread (an anyio blocking portal
shared by the session), never on the test's own loop. File locks belong to
the open file, not to a thread, so that thread holds nothing itself.

Options: ``--aioportclaim-lock-dir`` (ini ``aioportclaim_lock_dir``) sets the
lock directory for the fixtures and, through ``AIOPORTCLAIM_LOCK_DIR``, for
every claim the tests and their child processes make. ``--aioportclaim-ports``
(ini ``aioportclaim_ports``) limits the ports the fixtures pick from. A
fixture that finds every one of those ports held by this session's own
fixtures fails at once instead of waiting, because the ports are released
only when the test ends.

``--aioportclaim-registry`` (ini ``aioportclaim_registry``, else the
``AIOPORTCLAIM_REGISTRY`` variable) names the registry that the fixtures
claim through by URL: Redis (``redis://``, ``rediss://`` or ``unix://``) or
a lock directory (``file:///path``). The session opens it once, on the
portal's event loop, and the ``aioportclaim_registry`` fixture returns it.
The option leaves the environment alone, so claims that the tests make
themselves still use their own registry.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from typing import TYPE_CHECKING

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

from ._claim import open_claim
from ._exceptions import InvalidPortSpecError, PortExhaustedError
from ._handoff import PortReservation, reserve_port
from ._spec import describe_value, format_ports
from ._strategy import PortSelectionStrategy
from .registries import LOCK_DIR_ENV, REGISTRY_ENV, open_registry
from .registries._defaults import file_registry_from_url, is_redis_url

if TYPE_CHECKING:
    import socket
    from collections.abc import Iterator

    from .registries import Registry

#: Seconds a fixture waits for a free port before the test errors.
CLAIM_TIMEOUT = 30.0

_STRATEGY_KEY = pytest.StashKey[PortSelectionStrategy]()
# The origin of the fixtures' ports, as error messages name it.
_PORTS_SOURCE_KEY = pytest.StashKey[str]()
# The ports that the session's fixtures hold now.
_HELD_PORTS_KEY = pytest.StashKey["HeldPorts"]()
# The value AIOPORTCLAIM_LOCK_DIR had before the lock directory option set it.
_PREVIOUS_LOCK_DIR_KEY = pytest.StashKey[str | None]()
# The URL of the registry that the fixtures claim through, if one is set.
_REGISTRY_URL_KEY = pytest.StashKey[str | None]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("aioportclaim", "port claims (aioportclaim)")
    group.addoption(
        "--aioportclaim-lock-dir",
        dest="aioportclaim_lock_dir",
        metavar="DIR",
        help=f"lock directory of port claims; sets {LOCK_DIR_ENV} for the run",
    )
    group.addoption(
        "--aioportclaim-ports",
        dest="aioportclaim_ports",
        metavar="SPEC",
        help="ports the claimed_* fixtures pick from, such as 20000-29999 (default: the host's unprivileged ports outside the ephemeral range)",
    )
    group.addoption(
        "--aioportclaim-registry",
        dest="aioportclaim_registry",
        metavar="URL",
        help=f"registry that the claimed_* fixtures claim through: a redis://, rediss:// or unix:// URL for Redis, or file:///path/to/lock-directory (default: ${REGISTRY_ENV}, else the lock directory)",
    )
    parser.addini(
        "aioportclaim_lock_dir",
        "lock directory of port claims, as --aioportclaim-lock-dir",
    )
    parser.addini(
        "aioportclaim_ports",
        "ports the claimed_* fixtures pick from, as --aioportclaim-ports",
    )
    parser.addini(
        "aioportclaim_registry",
        "registry that the claimed_* fixtures claim through, as --aioportclaim-registry",
    )


def pytest_configure(config: pytest.Config) -> None:
    option = config.getoption("aioportclaim_ports", None)
    spec = option or config.getini("aioportclaim_ports")
    try:
        config.stash[_STRATEGY_KEY] = PortSelectionStrategy(spec)
    except ValueError as error:
        msg = f"--aioportclaim-ports: {error}"
        raise pytest.UsageError(msg) from None
    if option:
        source = f"--aioportclaim-ports={option}"
    elif spec:
        source = f"ini option aioportclaim_ports = {spec}"
    else:
        source = "the default ports"
    config.stash[_PORTS_SOURCE_KEY] = source
    config.stash[_HELD_PORTS_KEY] = HeldPorts()

    lock_dir = _lock_dir_setting(config)
    if lock_dir is not None:
        config.stash[_PREVIOUS_LOCK_DIR_KEY] = os.environ.get(LOCK_DIR_ENV)
        os.environ[LOCK_DIR_ENV] = lock_dir
    config.stash[_REGISTRY_URL_KEY] = _registry_setting(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _PREVIOUS_LOCK_DIR_KEY not in config.stash:
        return
    previous = config.stash[_PREVIOUS_LOCK_DIR_KEY]
    if previous is None:
        os.environ.pop(LOCK_DIR_ENV, None)
    else:
        os.environ[LOCK_DIR_ENV] = previous


def _lock_dir_setting(config: pytest.Config) -> str | None:
    """Return the configured lock directory as an absolute path, or None."""
    option = config.getoption("aioportclaim_lock_dir", None)
    if option:
        return os.path.abspath(str(option))
    value = config.getini("aioportclaim_lock_dir")
    if not value:
        return None
    # A relative path in the ini file is relative to that file.
    base = config.inipath.parent if config.inipath else config.rootpath
    return str(base / str(value))


def _registry_setting(config: pytest.Config) -> str | None:
    """Return the registry URL of the fixtures, or None for the default registry.

    A URL from the option or the ini file is checked here, so that a typo
    stops the run at once. One from the environment is checked when a
    fixture first opens it, because the variable may be set for the code
    under test rather than for the fixtures.
    """
    option = config.getoption("aioportclaim_registry", None)
    source = "--aioportclaim-registry"
    value = str(option or "").strip()
    if not value:
        value = str(config.getini("aioportclaim_registry") or "").strip()
        source = "ini option aioportclaim_registry"
    if not value:
        return os.environ.get(REGISTRY_ENV, "").strip() or None
    try:
        _check_registry_url(value, source)
    except (ValueError, ImportError) as error:
        raise pytest.UsageError(str(error)) from None
    return value


def _check_registry_url(url: str, source: str) -> None:
    if not is_redis_url(url):
        file_registry_from_url(url, source=source)
        return
    # Creating the registry checks its URL options without connecting.
    from .registries import RedisRegistry

    try:
        RedisRegistry(url)
    except ValueError as error:
        msg = f"invalid {source}: {error}"
        raise ValueError(msg) from None


class HeldPorts:
    """The ports that one session's fixtures hold now, by protocol.

    A fixture that would wait for a port that only this session holds
    would wait until its timeout, because the port is released only when
    the test ends. `check_available` turns that wait into an error.

    .. versionadded:: 0.1
    """

    def __init__(self) -> None:
        self._ports: dict[str, set[int]] = {}

    def add(self, kind: str, port: int) -> None:
        """Record that a fixture has claimed `port` for `kind`."""
        self._ports.setdefault(kind, set()).add(port)

    def discard(self, kind: str, port: int) -> None:
        """Record that a fixture released `port` for `kind`."""
        self._ports.get(kind, set()).discard(port)

    def check_available(self, spec: object, kind: str, source: str) -> None:
        """Raise `PortExhaustedError` if this session's fixtures claimed every port of `spec`.

        Only claims of protocol `kind` count. `source` names where the spec
        comes from, such as ``--aioportclaim-ports=8080``. An invalid spec is
        left for the claim to report.
        """
        __tracebackhide__ = True  # pytest shows the fixture's line, not this one
        try:
            strategy = _as_strategy(spec)
        except InvalidPortSpecError:
            return
        claimed = sorted(
            port for port in self._ports.get(kind, ()) if strategy.is_allowed(port)
        )
        if not claimed or len(claimed) < strategy.allowed_count:
            return
        msg = (
            f"all ports of {source} are held by this session's own fixtures "
            f"({kind} {format_ports(claimed)}) until the test ends, so the claim "
            "cannot succeed; widen --aioportclaim-ports (ini aioportclaim_ports) "
            "or the spec passed to the factory, or request fewer claimed ports "
            "in one test"
        )
        raise PortExhaustedError(msg)


def _as_strategy(spec: object) -> PortSelectionStrategy:
    if isinstance(spec, PortSelectionStrategy):
        return spec
    return PortSelectionStrategy(spec)


class ClaimedPortFactory:
    """Reserve TCP ports on demand; every one is released when the test ends.

    Each call returns a port whose lock is held and whose socket is closed,
    as ``claimed_tcp_port`` does. Ports of one factory are distinct.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        portal: BlockingPortal,
        strategy: PortSelectionStrategy,
        stack: ExitStack,
        kind: str = "tcp",
        registry: Registry | None = None,
        held_ports: HeldPorts | None = None,
        source: str = "the session's ports",
    ) -> None:
        self._portal = portal
        self._strategy = strategy
        self._stack = stack
        self._kind = kind
        self._registry = registry
        self._held_ports = held_ports
        self._source = source
        self._ports: list[int] = []

    def __call__(self, ports: object = None, *, host: str = "127.0.0.1") -> int:
        """Reserve a port and return it.

        `ports` is a spec that `claim_port` accepts; None picks from the
        session's ports (``--aioportclaim-ports``).

        Raises:
            PortExhaustedError: This session's fixtures already hold every
                allowed port, or no port was free within the fixtures'
                timeout.
        """
        __tracebackhide__ = True  # pytest shows the caller's line, not this one
        strategy: object
        if ports is None:
            strategy, source = self._strategy, self._source
        else:
            strategy = ports
            source = (
                f"the spec {describe_value(ports)} passed to claimed_tcp_port_factory"
            )
        reservation = reserve_in_portal(
            self._portal,
            self._stack,
            strategy,
            kind=self._kind,
            host=host,
            registry=self._registry,
            held_ports=self._held_ports,
            source=source,
        )
        self._ports.append(reservation.port)
        return reservation.port

    @property
    def ports(self) -> tuple[int, ...]:
        """The ports reserved so far, in order."""
        return tuple(self._ports)


def reserve_in_portal(
    portal: BlockingPortal,
    stack: ExitStack,
    strategy: object,
    *,
    kind: str,
    host: str = "127.0.0.1",
    registry: Registry | None = None,
    held_ports: HeldPorts | None = None,
    source: str = "the requested ports",
) -> PortReservation:
    """Reserve a port on the portal's event loop and close its socket at once.

    The reservation ends when `stack` closes. `registry` must be opened on
    the same portal, as ``aioportclaim_registry`` is; None means the
    default registry. With `held_ports`, the port is recorded there until
    the reservation ends, and a spec whose ports are all recorded there
    raises `PortExhaustedError` at once, naming `source`.
    """
    __tracebackhide__ = True  # pytest shows the fixture's line, not this one
    if held_ports is not None:
        held_ports.check_available(strategy, kind, source)
    manager = reserve_port(
        strategy, kind=kind, host=host, registry=registry, timeout=CLAIM_TIMEOUT
    )
    reservation = stack.enter_context(portal.wrap_async_context_manager(manager))
    reservation.release_socket()
    if held_ports is not None:
        held_ports.add(kind, reservation.port)
        stack.callback(held_ports.discard, kind, reservation.port)
    return reservation


@pytest.fixture(scope="session")
def aioportclaim_portal() -> Iterator[BlockingPortal]:
    """Run an event loop in a worker thread, on which the fixtures claim ports."""
    with start_blocking_portal(name="aioportclaim") as portal:
        yield portal


@pytest.fixture(scope="session")
def aioportclaim_registry(
    request: pytest.FixtureRequest, aioportclaim_portal: BlockingPortal
) -> Iterator[Registry | None]:
    """Return the registry that the fixtures claim through, opened once per session.

    It is None when no registry URL is set, and the fixtures then use the
    default registry. A Redis registry lives on `aioportclaim_portal`, so
    call its methods through that portal.

    .. versionadded:: 0.1
    """
    url = request.config.stash[_REGISTRY_URL_KEY]
    if url is None:
        yield None
        return
    with aioportclaim_portal.wrap_async_context_manager(open_registry(url)) as registry:
        yield registry


@pytest.fixture
def claimed_tcp_port_factory(
    request: pytest.FixtureRequest,
    aioportclaim_portal: BlockingPortal,
    aioportclaim_registry: Registry | None,
) -> Iterator[ClaimedPortFactory]:
    """Return a callable that reserves a TCP port per call, all released at test end."""
    with ExitStack() as stack:
        yield ClaimedPortFactory(
            aioportclaim_portal,
            request.config.stash[_STRATEGY_KEY],
            stack,
            registry=aioportclaim_registry,
            held_ports=request.config.stash[_HELD_PORTS_KEY],
            source=request.config.stash[_PORTS_SOURCE_KEY],
        )


@pytest.fixture
def claimed_tcp_port(
    request: pytest.FixtureRequest,
    aioportclaim_portal: BlockingPortal,
    aioportclaim_registry: Registry | None,
) -> Iterator[int]:
    """Return a TCP port on 127.0.0.1 whose lock is held until the test ends."""
    with ExitStack() as stack:
        yield _reserve_session_port(
            request, aioportclaim_portal, stack, "tcp", aioportclaim_registry
        )


@pytest.fixture
def claimed_udp_port(
    request: pytest.FixtureRequest,
    aioportclaim_portal: BlockingPortal,
    aioportclaim_registry: Registry | None,
) -> Iterator[int]:
    """Return a UDP port on 127.0.0.1 whose lock is held until the test ends."""
    with ExitStack() as stack:
        yield _reserve_session_port(
            request, aioportclaim_portal, stack, "udp", aioportclaim_registry
        )


def _reserve_session_port(
    request: pytest.FixtureRequest,
    portal: BlockingPortal,
    stack: ExitStack,
    kind: str,
    registry: Registry | None,
) -> int:
    reservation = reserve_in_portal(
        portal,
        stack,
        request.config.stash[_STRATEGY_KEY],
        kind=kind,
        registry=registry,
        held_ports=request.config.stash[_HELD_PORTS_KEY],
        source=request.config.stash[_PORTS_SOURCE_KEY],
    )
    return reservation.port


@pytest.fixture
def claimed_tcp_socket(
    request: pytest.FixtureRequest,
    aioportclaim_portal: BlockingPortal,
    aioportclaim_registry: Registry | None,
) -> Iterator[socket.socket]:
    """Return a listening TCP socket on 127.0.0.1, closed and released at test end."""
    strategy = request.config.stash[_STRATEGY_KEY]
    request.config.stash[_HELD_PORTS_KEY].check_available(
        strategy, "tcp", request.config.stash[_PORTS_SOURCE_KEY]
    )
    manager = open_claim(
        strategy, registry=aioportclaim_registry, timeout=CLAIM_TIMEOUT
    )
    with aioportclaim_portal.wrap_async_context_manager(manager) as claimer:
        request.config.stash[_HELD_PORTS_KEY].add("tcp", claimer.port)
        try:
            yield claimer.socket
        finally:
            request.config.stash[_HELD_PORTS_KEY].discard("tcp", claimer.port)
