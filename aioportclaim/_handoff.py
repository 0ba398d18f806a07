"""Subprocess hand-off: reserve a port for a server that another process binds.

A reservation claims a port as `claim_port` does (lock, then bind, so the port
is proven free), closes its socket just before the child starts, and keeps the
lock while the child runs. Cooperating claimers stay away because of the lock.
A process that ignores the registry can still bind the port between the
socket's close and the child's bind. The hand-off cannot prevent that, but
`PortReservation.wait_listening` detects it: once the port listens, it checks
that the listening socket belongs to the child or one of its descendants.
On Linux the owner is found through /proc (see `_procfs`).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio

from ._claim import open_claim
from ._exceptions import ClaimLostError, HandoffError, ListenTimeoutError
from ._procfs import (
    _command_name,
    _has_exited,
    _list_pids,
    _read_proc_net,
    _Socket,
    descendants,
    find_socket_owners,
)
from ._verify import counterpart_host, is_port_taken

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping, Sequence

    from anyio.abc import Process

    from ._claimer import PortClaimer
    from ._metrics_base import MetricsRecorder
    from ._strategy import PortSelectionStrategy
    from .registries import Registry

logger = logging.getLogger(__name__)

#: Seconds between the first looks for the child's listening socket. The
#: interval then grows by half each time, up to `MAX_POLL_INTERVAL`, because
#: each read of /proc/net/tcp walks the kernel's whole connection table. One
#: look took about 8 ms for tcp and tcp6 together, measured with 150 sockets
#: on a 2-core, 24 GB Linux 6.18 host.
POLL_INTERVAL = 0.05
MAX_POLL_INTERVAL = 0.5
#: Seconds a stopped child gets between SIGTERM and SIGKILL.
STOP_GRACE = 5.0

_WILDCARDS = ("0.0.0.0", "::")
# A socket whose owner cannot be found in this many looks in a row is
# reported: it belongs to a process that this user cannot inspect.
_UNKNOWN_OWNER_LOOKS = 3


class PortReservation:
    """A claimed port whose socket can be closed while its lock is kept.

    Get one from `reserve_port`. Call `release_socket` just before the
    process that binds the port starts, then `wait_listening` with its pid,
    or let `start_process` do the three steps. The lock keeps cooperating
    claimers away until the reservation ends, but between the socket's close
    and the child's bind a process that ignores the registry can take the
    port: `wait_listening` detects that and raises `ClaimLostError`.

    .. versionadded:: 0.1
    """

    def __init__(self, claimer: PortClaimer) -> None:
        self._claimer = claimer

    def __repr__(self) -> str:
        claimer = self._claimer
        if not claimer.claimed:
            state = "ended"
        elif claimer.sockets:
            state = "socket open"
        else:
            state = "socket released"
        return f"<PortReservation {claimer.describe()} {state}>"

    @property
    def port(self) -> int:
        """The reserved port."""
        return self._claimer.port

    @property
    def host(self) -> str:
        """The first address the port was claimed on, such as ``"127.0.0.1"``."""
        return self._claimer.hosts[0]

    @property
    def hosts(self) -> tuple[str, ...]:
        """Every address the port was claimed on."""
        return self._claimer.hosts

    @property
    def kinds(self) -> tuple[str, ...]:
        """The reserved protocols: ``("tcp",)``, ``("udp",)`` or both."""
        return self._claimer.kinds

    @property
    def claimer(self) -> PortClaimer:
        """The claim object that holds the lock."""
        return self._claimer

    def describe(self) -> str:
        """Name the protocols, addresses and port, as messages show them."""
        return self._claimer.describe()

    def release_socket(self) -> None:
        """Close the bound socket and keep the lock. Calling it again does nothing."""
        self._claimer.close_sockets()

    async def release(self) -> None:
        """Close the socket if still open and give the lock back."""
        await self._claimer.release()

    async def wait_listening(
        self, process: int | Process, timeout: float = 10.0
    ) -> None:
        """Wait until the port listens, then check that `process` owns the listener.

        `process` is a pid or an `anyio.abc.Process`. The port counts as
        listening when a TCP listener (or, for UDP, a bound socket) uses it
        on a reserved address or a wildcard address. Every such socket, and
        any on the loopback address of the other IP family, must then belong
        to `process` or one of its descendants. A server that daemonizes
        leaves the process tree, so run servers in the foreground.

        Raises:
            ClaimLostError: Another process listens on the port (its pid is
                in the message), or the registry lock was lost.
            HandoffError: `process` exited before it listened.
            ListenTimeoutError: `process` did not listen within `timeout`
                seconds.
            RuntimeError: The reservation's socket is still open, or the
                reservation has ended.
            ValueError: `process` is a pid of 0 or less.
        """
        if isinstance(process, int) and (isinstance(process, bool) or process <= 0):
            msg = f"invalid pid {process!r}: expected the positive process id of the process that binds the port"
            raise ValueError(msg)
        if not self._claimer.claimed:
            msg = f"reservation of {self.describe()} has ended; reserve the port again before waiting for a listener"
            raise RuntimeError(msg)
        if self._claimer.sockets:
            msg = f"{self.describe()} still has its socket open; call release_socket() before starting the process that binds the port"
            raise RuntimeError(msg)
        pid = process if isinstance(process, int) else process.pid
        deadline = time.monotonic() + timeout
        interval = POLL_INTERVAL
        unknown_looks = 0
        while True:
            await self._check_locks()
            sockets = self._find_sockets()
            if sockets is None:
                if self._probe_listening():
                    _log_unverified(self.describe())
                    return
            elif self._is_listening(sockets):
                unknown = self._check_owners(sockets, pid)
                if not unknown:
                    logger.debug("process %d listens on %s", pid, self.describe())
                    return
                unknown_looks += 1
                if unknown_looks >= _UNKNOWN_OWNER_LOOKS:
                    raise self._unknown_owner_error(pid)

            if _has_exited(process):
                raise self._exited_error(pid, await _collect_status(process))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._timeout_error(pid, timeout)
            await anyio.sleep(min(interval, remaining))
            interval = min(interval * 1.5, MAX_POLL_INTERVAL)

    async def start_process(
        self,
        command: Sequence[str],
        *,
        timeout: float = 10.0,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        stdin: int | None = None,
        stdout: int | None = None,
        stderr: int | None = None,
        start_new_session: bool = False,
    ) -> Process:
        """Close the socket, start `command` and wait until it listens on the port.

        Standard streams are inherited unless `stdin`, `stdout` or `stderr`
        are set, to ``subprocess.PIPE`` or ``subprocess.DEVNULL`` for example. If the
        command does not listen, or someone else does, the command is
        stopped (SIGTERM, then SIGKILL after `STOP_GRACE` seconds) and the
        error from `wait_listening` is raised. Otherwise the caller owns the
        returned process and must wait for it or stop it before the
        reservation ends.

        Raises:
            FileNotFoundError: `command` was not found; the message names
                it. The reservation keeps its lock, so another command can
                be started on the port.
        """
        self.release_socket()
        try:
            process = await anyio.open_process(
                list(command),
                env=env,
                cwd=cwd,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                start_new_session=start_new_session,
            )
        except FileNotFoundError as error:
            if _is_path(error.filename, cwd):
                raise  # the error already names the missing working directory
            msg = f"command not found: {command[0]!r}; check the name and PATH"
            raise FileNotFoundError(error.errno, msg) from error
        try:
            await self.wait_listening(process, timeout)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await stop_process(process, group=start_new_session)
            raise
        return process

    async def _check_locks(self) -> None:
        for lease in self._claimer.leases:
            if not await lease.is_held():
                msg = f"reservation of {self.describe()} was lost: the registry lock is no longer ours; reserve another port"
                raise ClaimLostError(msg)

    def _find_sockets(self) -> list[_Socket] | None:
        found: list[_Socket] = []
        for kind in self.kinds:
            sockets = _read_proc_net(kind, self.port)
            if sockets is None:
                return None
            found.extend(sockets)
        return found

    def _serves(self, address: str) -> bool:
        if address in self.hosts or address in _WILDCARDS:
            return True
        # A reservation on a wildcard address is served by any address of
        # the same family.
        is_ipv6 = ":" in address
        return any(
            host in _WILDCARDS and (":" in host) == is_ipv6 for host in self.hosts
        )

    def _is_listening(self, sockets: list[_Socket]) -> bool:
        return all(
            any(item.kind == kind and self._serves(item.address) for item in sockets)
            for kind in self.kinds
        )

    def _check_owners(self, sockets: list[_Socket], pid: int) -> set[int]:
        """Raise `ClaimLostError` if another process owns a watched socket.

        Returns the inodes of watched sockets whose owner was not found.
        """
        counterparts = {counterpart_host(host) for host in self.hosts}
        watched = {
            item.inode
            for item in sockets
            if self._serves(item.address) or item.address in counterparts
        }
        tree = descendants(pid)
        foreign = watched - set(find_socket_owners(watched, tree))
        if not foreign:
            return set()

        owners = find_socket_owners(foreign, set(_list_pids()) - tree)
        if owners:
            raise self._intruder_error(pid, owners)
        return foreign

    def _probe_listening(self) -> bool:
        # NOTE: without /proc/net (not Linux) readiness is probed by binding,
        # and the listener's owner is not verified.
        return all(
            any(is_port_taken(host, kind, self.port) for host in self.hosts)
            for kind in self.kinds
        )

    def _intruder_error(self, pid: int, owners: dict[int, set[int]]) -> ClaimLostError:
        holders = sorted({owner for pids in owners.values() for owner in pids})
        names = ", ".join(f"pid {owner} ({_command_name(owner)})" for owner in holders)
        msg = (
            f"{self.describe()} is held by another process: {names}, not process "
            f"{pid} or its descendants. It bound the port after the reservation "
            "closed its socket, or the server daemonized and left the process "
            "tree; stop that process or run the server in the foreground, then "
            "reserve again"
        )
        return ClaimLostError(msg)

    def _unknown_owner_error(self, pid: int) -> ClaimLostError:
        msg = (
            f"{self.describe()} listens, but not in process {pid} or its "
            "descendants, and its owner cannot be identified (a process of "
            "another user or of another PID namespace); stop it and reserve again"
        )
        return ClaimLostError(msg)

    def _exited_error(self, pid: int, returncode: int | None) -> HandoffError:
        status = "" if returncode is None else f" with status {returncode}"
        msg = (
            f"process {pid} exited{status} before it listened on "
            f"{self.describe()}; check its output and that it binds that port"
        )
        return HandoffError(msg, returncode)

    def _timeout_error(self, pid: int, timeout: float) -> ListenTimeoutError:
        msg = (
            f"process {pid} did not listen on {self.describe()} within {timeout} s; "
            "check that it binds that port and address, or raise the timeout"
        )
        return ListenTimeoutError(msg)


@asynccontextmanager
async def reserve_port(
    strategy: PortSelectionStrategy | object = None,
    *,
    host: str | Sequence[str] = "127.0.0.1",
    kind: str | Sequence[str] = "tcp",
    app_id: str | None = None,
    registry: Registry | None = None,
    timeout: float | None = 10.0,
    metrics: MetricsRecorder | None = None,
) -> AsyncIterator[PortReservation]:
    """Claim a port for another process to bind, and keep its lock until the block ends.

    The port is locked and bound as `claim_port` does it, except that a TCP
    socket binds without ``SO_REUSEADDR`` and does not listen, so clients
    are refused rather than queued before the real server runs. Arguments
    mean what they mean for `claim_port`: `metrics` is the recorder that
    the claim reports to, and None means the registry's recorder, else the
    process-wide default.

    .. versionadded:: 0.1
    """
    async with open_claim(
        strategy,
        host=host,
        kind=kind,
        app_id=app_id,
        registry=registry,
        timeout=timeout,
        listen=False,
        metrics=metrics,
    ) as claimer:
        yield PortReservation(claimer)


async def stop_process(
    process: Process, *, group: bool = False, grace: float = STOP_GRACE
) -> int:
    """Stop `process` with SIGTERM, then SIGKILL after `grace` seconds; return its status.

    With `group`, the signals go to the process group that `process` leads
    (it was started with ``start_new_session=True``).
    """
    if process.returncode is None:
        send_signal(process, signal.SIGTERM, group=group)
        with anyio.move_on_after(grace):
            return await process.wait()
        logger.warning("process %d ignored SIGTERM; killing it", process.pid)
        send_signal(process, signal.SIGKILL, group=group)
    return await process.wait()


def send_signal(process: Process, signum: int, *, group: bool = False) -> None:
    """Send `signum` to `process`, or to the process group it leads.

    A process that has already exited is ignored.
    """
    try:
        if group:
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signal.Signals(signum))
    except ProcessLookupError:
        pass


def _is_path(filename: object, path: str | os.PathLike[str] | None) -> bool:
    if path is None or not isinstance(filename, str | os.PathLike):
        return False
    return bool(os.fspath(filename) == os.fspath(path))


async def _collect_status(process: int | Process) -> int | None:
    """Return the exit status of an exited child, or None for a bare pid."""
    if isinstance(process, int):
        return None
    with anyio.move_on_after(1):
        return await process.wait()
    return process.returncode


def _log_unverified(description: str) -> None:
    logger.info(
        "%s listens; its owner was not verified, because /proc/net cannot be read here",
        description,
    )
