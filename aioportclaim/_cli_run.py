"""The ``run`` subcommand: reserve a port, run a server on it, and keep the claim."""

from __future__ import annotations

import logging
import os
import signal
import sys
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
)
from ._exceptions import ClaimLostError, HandoffError, ListenTimeoutError
from ._handoff import PortReservation, reserve_port, send_signal, stop_process

if TYPE_CHECKING:
    import argparse
    from collections.abc import AsyncIterator

    from anyio.abc import Process

    from ._strategy import PortSelectionStrategy

logger = logging.getLogger(__name__)

#: Signals that ``run`` passes on to its command's process group.
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def run_command(args: argparse.Namespace) -> int:
    """Run the command on a reserved port and return the exit status to use."""
    strategy = build_strategy(args)
    return anyio.run(_run_async, args, strategy)


async def _run_async(args: argparse.Namespace, strategy: PortSelectionStrategy) -> int:
    process: Process | None = None
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
                process = await _start(command, env)
                try:
                    return await _supervise(args, reservation, process, signals)
                finally:
                    with anyio.CancelScope(shield=True):
                        await stop_process(process, group=True)
                    lost_reason = reservation.claimer.lost_reason
    except ClaimLostError:
        # A registry that reports a lost lease (Redis) cancels the block, and
        # the reservation raises as it ends, after the command was stopped.
        if process is None or lost_reason is None:
            raise
        name = os.path.basename(args.command[0])
        msg = f"stopped {name} (pid {process.pid}): {lost_reason}; run it again to claim another port"
        raise CommandLineError(msg, EXIT_RUN_FAILED) from None


async def _start(command: list[str], env: dict[str, str]) -> Process:
    try:
        return await anyio.open_process(
            command,
            env=env,
            stdin=None,
            stdout=None,
            stderr=None,
            start_new_session=True,
        )
    except FileNotFoundError as error:
        msg = f"command not found: {command[0]!r} ({error.strerror}); check the name and PATH"
        raise CommandLineError(msg, EXIT_NOT_FOUND) from None
    except PermissionError as error:
        msg = f"cannot execute {command[0]!r}: {error.strerror}; check that it is an executable file"
        raise CommandLineError(msg, EXIT_NOT_EXECUTABLE) from None


async def _supervise(
    args: argparse.Namespace,
    reservation: PortReservation,
    process: Process,
    signals: AsyncIterator[signal.Signals],
) -> int:
    forwarded: list[signal.Signals] = []
    async with anyio.create_task_group() as group:
        group.start_soon(_forward_signals, signals, process, forwarded)
        failure = await _wait_listening(args, reservation, process, forwarded)
        if failure is None:
            if not args.quiet:
                name = os.path.basename(args.command[0])
                sys.stderr.write(
                    f"{PROG}: {name} (pid {process.pid}) listens on {reservation.describe()}\n"
                )
            returncode = await process.wait()
        group.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return _exit_status(returncode)


async def _wait_listening(
    args: argparse.Namespace,
    reservation: PortReservation,
    process: Process,
    forwarded: list[signal.Signals],
) -> CommandLineError | None:
    """Wait until the command listens; return the error to report if it does not."""
    try:
        await reservation.wait_listening(process, args.timeout)
    except ListenTimeoutError as error:
        return CommandLineError(f"{error}; it was stopped", EXIT_LISTEN_TIMEOUT)
    except HandoffError as error:
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
    process: Process,
    forwarded: list[signal.Signals],
) -> None:
    async for signum in signals:
        logger.info("passing %s on to process group %d", signum.name, process.pid)
        forwarded.append(signum)
        send_signal(process, signum, group=True)


def _exit_status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode
