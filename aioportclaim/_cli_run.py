"""The ``run`` subcommand: reserve a port, run a server on it, and keep the claim."""

from __future__ import annotations

import errno
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from ._cli_common import (
    EXIT_LISTEN_TIMEOUT,
    EXIT_NOT_EXECUTABLE,
    EXIT_NOT_FOUND,
    EXIT_RUN_FAILED,
    PROG,
    CommandLineError,
    build_strategy,
    open_cli_registry,
    write_stderr,
)
from ._exceptions import ClaimLostError, HandoffError, ListenTimeoutError
from ._handoff import PortReservation, reserve_port, send_signal, stop_process

if TYPE_CHECKING:
    import argparse
    from collections.abc import AsyncIterator

    from anyio.abc import Process, TaskGroup

    from ._strategy import PortSelectionStrategy

logger = logging.getLogger(__name__)

#: Signals that ``run`` passes on to its command's process group.
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: Forwarded signals that ask the command to stop: if it has not exited
#: ``--kill-after`` seconds after the first of them, its group gets SIGKILL.
#: SIGHUP is left out because many servers reload their configuration on it.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_LAUNCHER = Path(__file__).with_name("_cli_launcher.py")
# Errors of exec that mean the command does not exist.
_NOT_FOUND_ERRNOS = (errno.ENOENT, errno.ENOTDIR)
# Errors of exec that mean the command exists but cannot be executed.
_NOT_EXECUTABLE_ERRNOS = (
    errno.EACCES,
    errno.EPERM,
    errno.ENOEXEC,
    errno.EISDIR,
    errno.ELOOP,
    errno.ENAMETOOLONG,
    errno.ETXTBSY,
)


@dataclass
class _Child:
    """The started command, and the pipe on which the launcher reports a failed exec."""

    process: Process
    name: str
    exec_error_fd: int | None = None

    def exec_error(self) -> int | None:
        """Return the errno of a failed exec, or None if exec succeeded or was not reported.

        Call it only after the process exited: by then the launcher has
        written the errno, or exec has closed the pipe.
        """
        if self.exec_error_fd is None:
            return None
        os.set_blocking(self.exec_error_fd, False)
        try:
            data = os.read(self.exec_error_fd, 32)
        except BlockingIOError:
            return None
        return int(data) if data.isdigit() else None

    def close(self) -> None:
        if self.exec_error_fd is not None:
            os.close(self.exec_error_fd)
            self.exec_error_fd = None


def run_command(args: argparse.Namespace) -> int:
    """Run the command on a reserved port and return the exit status to use."""
    strategy = build_strategy(args)
    return anyio.run(_run_async, args, strategy)


async def _run_async(args: argparse.Namespace, strategy: PortSelectionStrategy) -> int:
    child: _Child | None = None
    lost_reason: str | None = None
    try:
        async with (
            open_cli_registry(args) as registry,
            reserve_port(
                strategy,
                host=args.host,
                kind="udp" if args.udp else "tcp",
                app_id=args.app_id,
                registry=registry,
                timeout=args.claim_timeout,
                metrics=args.metrics,
            ) as reservation,
        ):
            port = str(reservation.port)
            command = [part.replace("{port}", port) for part in args.command]
            env = {**os.environ, args.env: port}
            with anyio.open_signal_receiver(*FORWARDED_SIGNALS) as signals:
                reservation.release_socket()
                child = await _start(command, env)
                try:
                    return await _supervise(args, reservation, child, signals)
                finally:
                    child.close()
                    with anyio.CancelScope(shield=True):
                        await stop_process(
                            child.process, group=True, grace=args.kill_after
                        )
                    lost_reason = reservation.claimer.lost_reason
    except ClaimLostError:
        # A registry that reports a lost lease (Redis) cancels the block, and
        # the reservation raises as it ends, after the command was stopped.
        if child is None or lost_reason is None:
            raise
        msg = f"stopped {child.name} (pid {child.process.pid}): {lost_reason}; run it again to claim another port"
        raise CommandLineError(msg, EXIT_RUN_FAILED) from None


async def _start(command: list[str], env: dict[str, str]) -> _Child:
    """Start `command` in its own session, through the launcher where it works."""
    name = os.path.basename(command[0])
    if not _can_launch():
        return _Child(await _open_directly(command, env), name)

    read_fd, write_fd = os.pipe()
    try:
        launcher = [sys.executable, "-I", "-S", str(_LAUNCHER)]
        process = await anyio.open_process(
            [*launcher, str(os.getpid()), str(write_fd), *command],
            env=env,
            stdin=None,
            stdout=None,
            stderr=None,
            start_new_session=True,
            pass_fds=(write_fd,),
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    return _Child(process, name, read_fd)


def _can_launch() -> bool:
    # The death signal is Linux-only, and the launcher needs a Python
    # interpreter to run it.
    return sys.platform == "linux" and bool(sys.executable) and _LAUNCHER.is_file()


async def _open_directly(command: list[str], env: dict[str, str]) -> Process:
    try:
        return await anyio.open_process(
            command,
            env=env,
            stdin=None,
            stdout=None,
            stderr=None,
            start_new_session=True,
        )
    except OSError as error:
        if error.errno not in (*_NOT_FOUND_ERRNOS, *_NOT_EXECUTABLE_ERRNOS):
            raise
        raise _exec_error(command[0], error.errno) from None


def _exec_error(command: str, number: int) -> CommandLineError:
    """Describe a failed exec of `command` with errno `number`, and the exit status to use."""
    reason = os.strerror(number)
    if number in _NOT_FOUND_ERRNOS:
        msg = f"command not found: {command!r} ({reason}); check the name and PATH"
        return CommandLineError(msg, EXIT_NOT_FOUND)
    msg = f"cannot execute {command!r}: {reason}; check that it is an executable file"
    return CommandLineError(msg, EXIT_NOT_EXECUTABLE)


async def _supervise(
    args: argparse.Namespace,
    reservation: PortReservation,
    child: _Child,
    signals: AsyncIterator[signal.Signals],
) -> int:
    process = child.process
    forwarded: list[signal.Signals] = []
    async with anyio.create_task_group() as group:
        group.start_soon(
            _forward_signals, signals, child, forwarded, args.kill_after, group
        )
        failure = await _wait_listening(args, reservation, child, forwarded)
        if failure is None:
            if not args.quiet:
                write_stderr(
                    f"{PROG}: {child.name} (pid {process.pid}) listens on {reservation.describe()}\n"
                )
            returncode = await process.wait()
        group.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return _exit_status(returncode)


async def _wait_listening(
    args: argparse.Namespace,
    reservation: PortReservation,
    child: _Child,
    forwarded: list[signal.Signals],
) -> CommandLineError | None:
    """Wait until the command listens; return the error to report if it does not."""
    try:
        await reservation.wait_listening(child.process, args.timeout)
    except ListenTimeoutError as error:
        return CommandLineError(f"{error}; it was stopped", EXIT_LISTEN_TIMEOUT)
    except HandoffError as error:
        exec_errno = child.exec_error()
        if exec_errno is not None:
            return _exec_error(args.command[0], exec_errno)
        returncode = error.returncode if error.returncode is not None else -1
        if forwarded:
            return CommandLineError(
                f"{args.command[0]} exited after {forwarded[-1].name}",
                _exit_status(returncode),
            )
        return CommandLineError(str(error), _exit_status(returncode) or EXIT_RUN_FAILED)
    except ClaimLostError as error:
        return CommandLineError(f"{error}; the command was stopped", EXIT_RUN_FAILED)
    return None


async def _forward_signals(
    signals: AsyncIterator[signal.Signals],
    child: _Child,
    forwarded: list[signal.Signals],
    kill_after: float,
    group: TaskGroup,
) -> None:
    process = child.process
    async for signum in signals:
        logger.info("passing %s on to process group %d", signum.name, process.pid)
        if signum in STOP_SIGNALS and not set(forwarded) & set(STOP_SIGNALS):
            group.start_soon(_kill_if_running, child, kill_after, signum)
        forwarded.append(signum)
        send_signal(process, signum, group=True)


async def _kill_if_running(
    child: _Child, kill_after: float, signum: signal.Signals
) -> None:
    """Send SIGKILL to the command's process group unless it exits within `kill_after` seconds."""
    await anyio.sleep(kill_after)
    process = child.process
    if process.returncode is None:
        logger.warning(
            "%s (pid %d) did not exit within %g s after %s; sending SIGKILL to its process group",
            child.name,
            process.pid,
            kill_after,
            signum.name,
        )
        send_signal(process, signal.SIGKILL, group=True)


def _exit_status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode
