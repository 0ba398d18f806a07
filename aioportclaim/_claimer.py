"""PortClaimer: lock, bind and record one port (or one block) at once."""

from __future__ import annotations

import logging
import socket
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal, Self, cast

import anyio

from ._exceptions import ClaimLostError, PortExhaustedError
from ._metrics_base import resolve_recorder
from ._metrics_logging import RepeatLimiter
from ._sockets import (
    DEFAULT_BACKLOG,
    Kind,
    bind_socket,
    check_port,
    normalize_hosts,
    normalize_kinds,
)
from ._strategy import check_app_id
from ._verify import counterpart_host, is_port_taken, is_socket_bound
from .registries import ClaimKey, HolderRecord, Lease, Registry
from .registries._defaults import resolve_registry

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from types import TracebackType

    from ._metrics_base import MetricsRecorder

logger = logging.getLogger(__name__)
# An exact-port claim polls a busy port many times a second.
_repeat_log = RepeatLimiter(logger)

Rejection = Literal["in_use", "locked"]

_socket = socket.socket  # the property named socket hides the module in class scope


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
        backlog: int = DEFAULT_BACKLOG,
        metrics: MetricsRecorder | None = None,
    ) -> None:
        self.port = check_port(port, count)
        self.ports = tuple(range(port, port + count))
        self.hosts = normalize_hosts(host)
        self.kinds = normalize_kinds(kind)
        self.registry = resolve_registry(registry)
        check_app_id(app_id)
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
        self._was_claimed = False

    @classmethod
    def _prepared(
        cls,
        port: int,
        ports: tuple[int, ...],
        hosts: tuple[str, ...],
        kinds: tuple[Kind, ...],
        registry: Registry,
        app_id: str | None,
        listen: bool,
        backlog: int,
        metrics: MetricsRecorder | None,
    ) -> Self:
        # The selector builds one claimer per candidate from arguments it
        # has already checked and normalized; this skips doing it again.
        claimer = cls.__new__(cls)
        claimer.port = port
        claimer.ports = ports
        claimer.hosts = hosts
        claimer.kinds = kinds
        claimer.registry = registry
        claimer.app_id = app_id
        claimer.listen = listen
        claimer.backlog = backlog
        claimer.metrics = metrics
        claimer.rejection = None
        claimer._leases = []
        claimer._sockets = []
        claimer._claimed = False
        claimer._was_claimed = False
        return claimer

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
        the port in use (`rejection` names the reason). Raises `PortClaimError`
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
                # The failed step has set the rejection, which mypy cannot infer.
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
        self._was_claimed = True
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
        if not self._claimed and not self._was_claimed:
            msg = f"{self.describe()} was never claimed; await try_claim() before verify_claim()"
            raise RuntimeError(msg)
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

    @property
    def can_be_lost(self) -> bool:
        """Whether a lease of this claim can be lost while held, as a Redis lease can."""
        return bool(self._losable_leases())

    def _losable_leases(self) -> list[Lease]:
        # Leases that keep the base class's on_lost are never lost, and a
        # cancel scope would add microseconds to every local claim.
        return [
            lease for lease in self._leases if type(lease).on_lost is not Lease.on_lost
        ]

    @contextmanager
    def cancel_on_loss(self) -> Iterator[None]:
        """Run a block that is cancelled when a lease of this claim is lost.

        When the loss cancels the block, `ClaimLostError` is raised as it
        ends. A block that finishes before its next checkpoint ends
        normally; `lost` still tells. `claim_port` and `open_claim` run
        their blocks this way.

        .. versionadded:: 0.1
        """
        watched = self._losable_leases()
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
