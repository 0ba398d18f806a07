"""PortClaimer: lock, bind and record one port (or one block) at once."""

from __future__ import annotations

import errno
import functools
import ipaddress
import logging
import socket
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal, Self, cast

import anyio

from ._exceptions import ClaimLostError, PortClaimError, PortExhaustedError
from ._metrics_base import resolve_recorder
from ._metrics_logging import RepeatLimiter
from ._system import is_windows
from ._verify import counterpart_host, family_of, is_port_taken, is_socket_bound
from .registries import ClaimKey, HolderRecord, Lease, Registry
from .registries._defaults import default_registry

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from types import TracebackType

    from ._metrics_base import MetricsRecorder

logger = logging.getLogger(__name__)
# An exact-port claim polls a busy port many times a second.
_repeat_log = RepeatLimiter(logger)

Kind = Literal["tcp", "udp"]
Rejection = Literal["in_use", "locked"]

_socket = socket.socket  # the property named socket hides the module in class scope
_WILDCARDS = {"": "0.0.0.0", "0.0.0.0": "0.0.0.0", "::": "::"}
_BUSY = {errno.EADDRINUSE, errno.EACCES}
_FAMILY_MISSING = {errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT}
_DEFAULT_BACKLOG = 128


class PortClaimer:
    """Claim one port, or a block of consecutive ports, on every given address and protocol.

    `try_claim` takes the registry lock of each (protocol, port) without
    waiting, binds every socket at once and checks the other IP family of
    each loopback or wildcard address. All of it succeeds or none of it
    stays. TCP sockets listen before `try_claim` returns unless
    ``listen=False``, and then they bind without ``SO_REUSEADDR``.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        port: int,
        *,
        host: str | Sequence[str] = "127.0.0.1",
        kind: str | Sequence[str] = "tcp",
        count: int = 1,
        registry: Registry | None = None,
        app_id: str | None = None,
        listen: bool = True,
        backlog: int = _DEFAULT_BACKLOG,
        metrics: MetricsRecorder | None = None,
    ) -> None:
        self.port = check_port(port, count)
        self.ports = tuple(range(port, port + count))
        self.hosts = normalize_hosts(host)
        self.kinds = normalize_kinds(kind)
        self.registry = registry if registry is not None else default_registry()
        self.app_id = app_id
        self.listen = listen
        self.backlog = backlog
        #: Where this claim reports its metrics: `metrics`, else the
        #: registry's recorder, else the process-wide default, else None.
        self.metrics = resolve_recorder(metrics, self.registry)
        #: Why the last `try_claim` failed: "locked" or "in_use".
        self.rejection: Rejection | None = None
        self._leases: list[Lease] = []
        self._sockets: list[socket.socket] = []
        self._claimed = False

    def __repr__(self) -> str:
        state = "claimed" if self._claimed else "not claimed"
        return f"<PortClaimer {self.describe()} {state}>"

    def describe(self) -> str:
        """Name the claim's protocols, addresses and ports, as logs show them."""
        kinds = "+".join(self.kinds)
        hosts = ",".join(f"[{host}]" if ":" in host else host for host in self.hosts)
        ports = (
            str(self.port) if len(self.ports) == 1 else f"{self.port}-{self.ports[-1]}"
        )
        return f"{kinds} {hosts} port {ports}"

    @property
    def claimed(self) -> bool:
        """Whether this claimer holds its ports now."""
        return self._claimed

    @property
    def socket(self) -> _socket:
        """The first bound socket: first port, first protocol, first host."""
        return self.sockets[0]

    @property
    def sockets(self) -> tuple[_socket, ...]:
        """Every bound socket, ordered by port, then protocol, then host."""
        if not self._claimed:
            msg = f"{self.describe()} is not claimed; await try_claim() first"
            raise RuntimeError(msg)
        return tuple(self._sockets)

    @property
    def leases(self) -> tuple[Lease, ...]:
        """The registry leases held for this claim."""
        return tuple(self._leases)

    async def try_claim(self) -> bool:
        """Claim every port of this claimer, or nothing.

        Returns False when a lock is held by someone else or a bind finds
        the port in use (`rejection` says which). Raises `PortClaimError`
        when the address cannot be used on this host at all, and
        `LockDirectoryError` when the registry cannot store locks.
        """
        if self._claimed:
            msg = f"{self.describe()} is already claimed; release() it before claiming again"
            raise RuntimeError(msg)
        self.rejection = None
        metrics = self.metrics
        if metrics is not None:
            metrics.record_attempt()
        try:
            claimed = await self._lock_all() and self._bind_all() and self._probe_all()
        except BaseException:
            await self._undo()
            raise
        if not claimed:
            await self._undo()
            if metrics is not None:
                # The failed step has set the rejection; mypy still sees the reset above.
                metrics.record_failure(cast("Rejection", self.rejection))
            if logger.isEnabledFor(logging.DEBUG):
                _repeat_log.log(
                    logging.DEBUG,
                    "%s is busy: %s",
                    self.describe(),
                    self.rejection,
                    key=self.port,
                    extra=self._log_fields(),
                )
            return False

        self._claimed = True
        if metrics is not None:
            metrics.record_success()
        if logger.isEnabledFor(logging.INFO):
            logger.info("claimed %s", self.describe(), extra=self._log_fields())
        return True

    async def _lock_all(self) -> bool:
        scope = self.registry.scope()
        for port in self.ports:
            for kind in self.kinds:
                holder = HolderRecord.for_this_process(kind, port, self.app_id)
                lease = await self.registry.try_acquire(
                    ClaimKey(scope, kind, port), holder
                )
                if lease is None:
                    self.rejection = "locked"
                    return False
                self._leases.append(lease)
        return True

    def _bind_all(self) -> bool:
        for port in self.ports:
            for kind in self.kinds:
                for host in self.hosts:
                    sock = bind_socket(
                        host, kind, port, listen=self.listen, backlog=self.backlog
                    )
                    if sock is None:
                        self.rejection = "in_use"
                        return False
                    self._sockets.append(sock)
        return True

    def _probe_all(self) -> bool:
        reason = self._find_other_family_holder()
        if reason is not None:
            self.rejection = "in_use"
            return False
        return True

    def _find_other_family_holder(self) -> str | None:
        for host in self.hosts:
            other = counterpart_host(host)
            if other is None or other in self.hosts:
                continue
            for port in self.ports:
                for kind in self.kinds:
                    if is_port_taken(other, kind, port):
                        return f"another socket holds {kind} port {port} on {other}"
        return None

    async def still_own_claim(self) -> bool:
        """Check the lock, the sockets and the other address family again."""
        return await self._find_loss() is None

    async def _find_loss(self) -> str | None:
        if not self._claimed:
            return "the claim was released"
        for lease in self._leases:
            if not await lease.is_held():
                return f"the registry lock for {lease.key.kind} port {lease.key.port} is no longer ours"
        for index, sock in enumerate(self._sockets):
            port = self.ports[index // (len(self.kinds) * len(self.hosts))]
            if not is_socket_bound(sock, port):
                return f"socket for port {port} was closed or rebound"
        return self._find_other_family_holder()

    async def verify_claim(self, delay: float = 0.0) -> None:
        """Wait `delay` seconds, then raise `ClaimLostError` unless the claim still holds.

        The wait is a cancellable sleep; a delay lets late races show up.
        """
        if delay > 0:
            await anyio.sleep(delay)
        reason = await self._find_loss()
        if reason is None:
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("verified %s", self.describe(), extra=self._log_fields())
            return
        if self.metrics is not None and self._claimed:
            self.metrics.record_failure("lost")
        logger.warning(
            "lost claim of %s: %s", self.describe(), reason, extra=self._log_fields()
        )
        msg = (
            f"claim of {self.describe()} was lost: {reason}; release it and claim again"
        )
        raise ClaimLostError(msg)

    @property
    def lost_reason(self) -> str | None:
        """Why a registry reported a lease of this claim lost, or None.

        Only leases that a background task renews (Redis) are reported lost:
        renewal failed for longer than the lease, so another holder may now
        have the port. Released claims have no leases and return None.

        .. versionadded:: 0.1
        """
        for lease in self._leases:
            if lease.lost_reason is not None:
                return f"the registry lease for {lease.key.kind} port {lease.key.port} was lost: {lease.lost_reason}"
        return None

    @property
    def lost(self) -> bool:
        """Whether a registry reported a lease of this claim lost (see `lost_reason`).

        .. versionadded:: 0.1
        """
        return self.lost_reason is not None

    async def wait_lost(self) -> str:
        """Wait until a lease of this claim is reported lost, and return why.

        Leases of file lock and in-memory registries are never reported
        lost, so for them this waits until cancelled.

        .. versionadded:: 0.1
        """
        if not self._claimed:
            msg = f"{self.describe()} is not claimed; await try_claim() first"
            raise RuntimeError(msg)
        event = anyio.Event()
        unregister = [lease.on_lost(lambda _: event.set()) for lease in self._leases]
        try:
            await event.wait()
        finally:
            for remove in unregister:
                remove()
        return self.lost_reason or "a registry lease was lost"

    @contextmanager
    def cancel_on_loss(self) -> Iterator[None]:
        """Run a block that is cancelled when a lease of this claim is lost.

        When the loss cancels the block, `ClaimLostError` is raised as it
        ends. A block that finishes before its next checkpoint ends
        normally; `lost` still tells. `claim_port` and `open_claim` run
        their blocks this way.

        .. versionadded:: 0.1
        """
        # Leases that keep the base class's on_lost are never lost, and a
        # cancel scope would add microseconds to every local claim.
        watched = [
            lease for lease in self._leases if type(lease).on_lost is not Lease.on_lost
        ]
        if not watched:
            yield
            return
        with anyio.CancelScope() as scope:
            unregister = [lease.on_lost(lambda _: scope.cancel()) for lease in watched]
            try:
                yield
            finally:
                for remove in unregister:
                    remove()
        reason = self.lost_reason
        if scope.cancelled_caught and reason is not None:
            if self.metrics is not None:
                self.metrics.record_failure("lost")
            msg = f"claim of {self.describe()} was lost while in use: {reason}; stop using the port and claim again"
            raise ClaimLostError(msg)

    def close_sockets(self) -> None:
        """Close every socket but keep the registry locks, so another process can bind the port.

        `release` still gives the locks back.
        """
        sockets, self._sockets = self._sockets, []
        for sock in sockets:
            sock.close()
        logger.debug("closed the sockets of %s, keeping its locks", self.describe())

    async def release(self) -> None:
        """Close every socket and give back every lock. Calling it again does nothing."""
        was_claimed, self._claimed = self._claimed, False
        if was_claimed and self.metrics is not None:
            self.metrics.record_release()
        await self._undo()
        if was_claimed and logger.isEnabledFor(logging.INFO):
            logger.info("released %s", self.describe(), extra=self._log_fields())

    async def _undo(self) -> None:
        sockets, self._sockets = self._sockets, []
        for sock in sockets:
            sock.close()
        leases, self._leases = self._leases, []
        pending = [lease for lease in leases if not lease.try_release_now()]
        if pending:
            # Releasing must finish even while the surrounding scope is being
            # cancelled, or a remote registry would keep the claim.
            with anyio.CancelScope(shield=True):
                for lease in pending:
                    await lease.release()

    def _log_fields(self) -> dict[str, object]:
        return {
            "port": self.port,
            "protocol": "+".join(self.kinds),
            "app_id": self.app_id,
            "registry": self.registry.name,
        }

    async def __aenter__(self) -> Self:
        if not self._claimed and not await self.try_claim():
            reason = self.rejection or "in_use"
            msg = f"cannot claim {self.describe()}"
            raise PortExhaustedError(msg, {reason: 1})
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.release()


def bind_socket(
    host: str, kind: str, port: int, *, listen: bool, backlog: int = _DEFAULT_BACKLOG
) -> socket.socket | None:
    """Bind a plain `socket.socket` to `host` and `port`; None if the port is busy.

    TCP sockets that will listen set ``SO_REUSEADDR`` (so a port with old
    connections in TIME_WAIT can be claimed) and listen at once, which makes
    them exclusive. Other sockets bind without it: on Linux two bound,
    non-listening ``SO_REUSEADDR`` sockets may share a port, and for UDP the
    option lets two sockets share it outright. ``SO_REUSEPORT`` is never set.
    On Windows every socket sets ``SO_EXCLUSIVEADDRUSE`` instead.
    """
    family = family_of(host)
    sock_type = socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM
    try:
        sock = socket.socket(family, sock_type)
    except OSError as error:
        raise _address_error(host, port, error) from error
    try:
        if is_windows():
            # NOTE: untested until CI covers Windows.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)  # type: ignore[attr-defined,unused-ignore]
        elif kind == "tcp" and listen:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if host == "::":
            # Dual-stack, whatever net.ipv6.bindv6only says, so the claim
            # covers IPv4 as well and needs no probe of 0.0.0.0.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        if kind == "tcp" and listen:
            sock.listen(backlog)
    except OSError as error:
        sock.close()
        if error.errno in _BUSY:
            return None
        raise _address_error(host, port, error) from error
    return sock


def _address_error(host: str, port: int, error: OSError) -> PortClaimError:
    if error.errno in _FAMILY_MISSING and family_of(host) == socket.AF_INET6:
        msg = f"IPv6 is unavailable on this host: binding [{host}]:{port} failed ({error.strerror}); claim on 127.0.0.1 instead"
    elif error.errno in _FAMILY_MISSING:
        msg = f"address {host} is not available on this host ({error.strerror}); use an address of a local interface, such as 127.0.0.1"
    else:
        msg = f"binding {host} port {port} failed: {error.strerror or error}"
    return PortClaimError(msg)


def normalize_hosts(host: str | Sequence[str]) -> tuple[str, ...]:
    """Turn a host argument into numeric addresses, without duplicates.

    ``"localhost"`` becomes 127.0.0.1 and, where IPv6 works, ::1: clients
    that connect to "localhost" may reach either.
    """
    items = (host,) if isinstance(host, str) else tuple(host)
    try:
        return _normalize_host_tuple(items)
    except TypeError:
        if all(isinstance(item, str) for item in items):
            raise
        return _normalize_host_tuple.__wrapped__(items)


@functools.lru_cache(maxsize=64)
def _normalize_host_tuple(items: tuple[str, ...]) -> tuple[str, ...]:
    if not items:
        msg = "host must name at least one address, for example '127.0.0.1'"
        raise ValueError(msg)
    hosts: list[str] = []
    for item in items:
        for address in _expand_host(item):
            if address not in hosts:
                hosts.append(address)
    return tuple(hosts)


def _expand_host(host: object) -> tuple[str, ...]:
    if not isinstance(host, str):
        msg = f"invalid host {host!r}: expected an IP address string, 'localhost', '0.0.0.0' or '::'"
        raise TypeError(msg)
    if host.lower() == "localhost":
        return ("127.0.0.1", "::1") if ipv6_works() else ("127.0.0.1",)
    if host in _WILDCARDS:
        return (_WILDCARDS[host],)
    try:
        return (str(ipaddress.ip_address(host.strip("[]"))),)
    except ValueError:
        msg = f"invalid host {host!r}: expected an IP address, 'localhost', '0.0.0.0' or '::'; resolve host names before claiming"
        raise ValueError(msg) from None


def normalize_kinds(kind: str | Sequence[str]) -> tuple[Kind, ...]:
    """Turn a kind argument ("tcp", "udp", or both) into a tuple without duplicates."""
    items = [kind] if isinstance(kind, str) else list(kind)
    kinds: list[Kind] = []
    for item in items:
        if item == "tcp" or item == "udp":
            if item not in kinds:
                kinds.append("tcp" if item == "tcp" else "udp")
        else:
            msg = f"invalid kind {item!r}: expected 'tcp', 'udp' or both, as ('tcp', 'udp')"
            raise ValueError(msg)
    if not kinds:
        msg = "kind must name at least one protocol: 'tcp' or 'udp'"
        raise ValueError(msg)
    return tuple(kinds)


def check_port(port: object, count: object) -> int:
    """Validate a port and a block size; return the port."""
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        msg = f"invalid count {count!r}: expected a whole number of ports, 1 or more"
        raise ValueError(msg)
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        msg = f"invalid port {port!r}: expected a whole number from 1 to 65535"
        raise ValueError(msg)
    if port + count - 1 > 65535:
        msg = (
            f"invalid block of {count} ports from {port}: it would end past port 65535"
        )
        raise ValueError(msg)
    return port


_ipv6_works: bool | None = None


def ipv6_works() -> bool:
    """Tell whether this host can bind ::1, checked once per process."""
    global _ipv6_works
    if _ipv6_works is None:
        _ipv6_works = is_port_taken("::1", "tcp", 0) is not None
    return _ipv6_works
