"""Command line: pick a port, run a server on a reserved port, list and clean claims.

Exit statuses: 0 on success, 1 when a claim or the lock directory fails,
2 for invalid arguments. ``run`` exits with its command's status, or 128
plus the signal number when a signal ended the command. Like coreutils'
``timeout``, it exits with 124 when the command did not listen in time, 125
when ``run`` itself failed, 126 when the command cannot be executed and 127
when it is not found.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from typing import TYPE_CHECKING, NoReturn, TypeAlias

import anyio

from ._exceptions import ClaimLostError, InvalidPortSpecError, PortClaimError
from ._handoff import (
    HandoffError,
    ListenTimeoutError,
    PortReservation,
    reserve_port,
    send_signal,
    stop_process,
)
from ._claim import open_claim
from ._strategy import PortSelectionStrategy
from .registries import LOCK_DIR_ENV, ClaimInfo, FileLockRegistry

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from anyio.abc import Process

logger = logging.getLogger("aioportclaim.cli")

PROG = "aioportclaim"
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_LISTEN_TIMEOUT = 124
EXIT_RUN_FAILED = 125
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127
EXIT_INTERRUPTED = 130

#: Signals that ``run`` passes on to its command's process group.
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_PATTERN_CHARACTERS = frozenset("*?[")


_EXIT_STATUSES = """\
exit status:
  0    success
  1    the claim or the lock directory failed (pick, list, gc)
  2    invalid arguments
  run: the command's own status, 128+N when signal N ended it, 124 when the
  command did not listen in time, 125 when run itself failed, 126 when the
  command cannot be executed, 127 when it is not found
"""


class CommandLineError(Exception):
    """An error to report in one line on stderr, with the exit status to use."""

    def __init__(self, message: str, status: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.status = status


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line instead of argparse's usage block, like every other error.
        self.exit(
            EXIT_USAGE, f"{self.prog}: error: {message}; see '{self.prog} --help'\n"
        )


_Commands: TypeAlias = "argparse._SubParsersAction[_Parser]"


def build_parser() -> argparse.ArgumentParser:
    """Build the parser of every subcommand."""
    parser = _Parser(
        prog=PROG,
        epilog=_EXIT_STATUSES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Claim network ports without races: pick a free port, run a server on a reserved port, and list or clean up claims.",
    )
    parser.add_argument(
        "--lock-dir",
        metavar="DIR",
        help=f"directory of the lock files (default: ${LOCK_DIR_ENV}, else a per-user directory under the system temporary directory)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log claims to stderr; twice for debug messages",
    )
    commands = parser.add_subparsers(dest="action", required=True, metavar="COMMAND")
    _add_pick(commands)
    _add_run(commands)
    _add_list(commands)
    _add_gc(commands)
    return parser


def _add_selection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "spec",
        nargs="?",
        metavar="SPEC",
        help="ports to choose from: 8080, 8000-8100 or 8000,8005-8010 (default: unprivileged ports outside the ephemeral range)",
    )
    parser.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="PORTS",
        help="never use these ports: 8080, 8000-8100, a glob on the digits such as '80*', or 'well-known' for database and broker ports; repeatable",
    )
    parser.add_argument(
        "--prefer",
        action="append",
        default=[],
        metavar="LO-HI[:WEIGHT]",
        help="try these ports first, in weighted random order (weight default 1); repeatable",
    )
    parser.add_argument(
        "--udp", action="store_true", help="claim a UDP port instead of TCP"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)"
    )
    parser.add_argument(
        "--app-id",
        help="application id: recorded with the claim and used to derive a stable first choice",
    )
    parser.add_argument(
        "--claim-timeout",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="seconds to keep looking for a free port (default: 10)",
    )


def _seconds(text: str) -> float:
    """Parse a number of seconds for argparse: finite and 0 or more."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        msg = f"invalid number of seconds {text!r}: expected a number, 0 or more"
        raise argparse.ArgumentTypeError(msg)
    return value


def _add_pick(commands: _Commands) -> None:
    pick = commands.add_parser(
        "pick",
        help="print a free port",
        description="Claim a free port, release it and print it. Another process can take the port before you bind it; 'run' keeps it reserved.",
    )
    _add_selection_options(pick)
    pick.add_argument("--json", action="store_true", help="print a JSON object")
    pick.set_defaults(handler=_pick)


def _add_run(commands: _Commands) -> None:
    run = commands.add_parser(
        "run",
        help="run a server on a reserved port",
        usage=f"{PROG} run [SPEC] [options] -- COMMAND [ARGUMENT ...]",
        description=(
            "Reserve a port, start COMMAND with {port} in its arguments replaced by the port "
            "and the port in an environment variable, check that COMMAND is the process that "
            "listens on it, and keep the reservation until COMMAND exits. SIGINT, SIGTERM and "
            "SIGHUP are passed on to COMMAND, which runs in its own process group. Exits with "
            "COMMAND's status."
        ),
    )
    _add_selection_options(run)
    run.add_argument(
        "--env",
        default="PORT",
        metavar="NAME",
        help="environment variable that receives the port (default: PORT)",
    )
    run.add_argument(
        "--timeout",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="seconds COMMAND has to start listening before it is stopped (default: 30)",
    )
    run.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="do not print the port and pid on stderr once COMMAND listens",
    )
    run.set_defaults(handler=_run)


def _add_list(commands: _Commands) -> None:
    listing = commands.add_parser(
        "list",
        help="show the claims in the lock directory",
        description="Show the ports that live processes hold: port, protocol, holder pid, application id and age. With --all, also show lock files whose last holder released them or exited.",
    )
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    listing.add_argument(
        "--all",
        action="store_true",
        help="also show released lock files, with their last holder",
    )
    listing.add_argument(
        "--all-scopes",
        action="store_true",
        help="list every network namespace's claims, not only this one's",
    )
    listing.set_defaults(handler=_list)


def _add_gc(commands: _Commands) -> None:
    gc = commands.add_parser(
        "gc",
        help="remove lock files that no process holds",
        description="Remove this network namespace's lock files that no process holds. Safe while other processes claim ports.",
    )
    gc.add_argument(
        "--json", action="store_true", help="print the removed paths as JSON"
    )
    gc.set_defaults(handler=_gc)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    arguments, command = _split_command(arguments)
    parser = build_parser()
    args = parser.parse_args(arguments)
    args.command = command
    _configure_logging(args.verbose)
    if args.action == "run" and not command:
        parser.error(
            "run needs a command after '--', as in: run -- python -m http.server {port}"
        )
    if args.action != "run" and command is not None:
        parser.error(f"'--' and a command are used only by run, not by {args.action}")

    try:
        status: int = args.handler(args)
    except CommandLineError as error:
        return _fail(str(error), error.status)
    except InvalidPortSpecError as error:
        return _fail(str(error), EXIT_USAGE)
    except PortClaimError as error:
        return _fail(str(error), _failure_status(args))
    except ValueError as error:
        # The library raises ValueError for invalid arguments, such as a host
        # that is not an IP address.
        return _fail(str(error), EXIT_USAGE)
    except OSError as error:
        return _fail(str(error), _failure_status(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as error:
        logger.debug("unexpected error", exc_info=True)
        message = f"unexpected {type(error).__name__}: {error}; rerun with -vv to log the traceback"
        return _fail(message, _failure_status(args))
    return status


def _failure_status(args: argparse.Namespace) -> int:
    return EXIT_RUN_FAILED if args.action == "run" else EXIT_FAILURE


def _split_command(arguments: list[str]) -> tuple[list[str], list[str] | None]:
    if "--" not in arguments:
        return arguments, None
    index = arguments.index("--")
    return arguments[:index], arguments[index + 1 :]


_handler = logging.StreamHandler()
_handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(message)s"))


def _configure_logging(verbosity: int) -> None:
    levels = [logging.WARNING, logging.INFO, logging.DEBUG]
    package_logger = logging.getLogger("aioportclaim")
    package_logger.setLevel(levels[min(verbosity, 2)])
    if _handler not in package_logger.handlers:
        package_logger.addHandler(_handler)


def _fail(message: str, status: int) -> int:
    sys.stderr.write(f"{PROG}: error: {message}\n")
    return status


def _build_strategy(args: argparse.Namespace) -> PortSelectionStrategy:
    strategy = PortSelectionStrategy(args.spec)
    for value in args.exclude:
        if value == "well-known":
            strategy = strategy.exclude_well_known()
        elif _PATTERN_CHARACTERS & set(value):
            strategy = strategy.exclude_pattern(value)
        else:
            strategy = strategy.exclude_ports(value)
    for value in args.prefer:
        ports, _, weight_text = value.partition(":")
        strategy = strategy.prefer_ports(
            ports, weight=_parse_weight(value, weight_text)
        )
    return strategy


def _parse_weight(value: str, text: str) -> float:
    if not text:
        return 1.0
    try:
        weight = float(text)
    except ValueError:
        weight = -1.0
    if not 0 < weight < float("inf"):
        msg = f"invalid --prefer weight {text!r} in {value!r}: expected a number greater than 0, as in 8000-8100:2"
        raise CommandLineError(msg, EXIT_USAGE)
    return weight


def _registry(args: argparse.Namespace) -> FileLockRegistry:
    # The lock directory is the only registry so far. An option that names
    # another registry, such as a Redis URL, would choose it here.
    return FileLockRegistry(args.lock_dir)


def _pick(args: argparse.Namespace) -> int:
    strategy = _build_strategy(args)
    kind = "udp" if args.udp else "tcp"

    async def claim() -> int:
        async with open_claim(
            strategy,
            host=args.host,
            kind=kind,
            app_id=args.app_id,
            registry=_registry(args),
            timeout=args.claim_timeout,
        ) as claimer:
            return claimer.port

    port = anyio.run(claim)
    if args.json:
        print(json.dumps({"port": port, "protocol": kind, "host": args.host}))
    else:
        print(port)
    return 0


def _run(args: argparse.Namespace) -> int:
    strategy = _build_strategy(args)
    return anyio.run(_run_async, args, strategy)


async def _run_async(args: argparse.Namespace, strategy: PortSelectionStrategy) -> int:
    async with reserve_port(
        strategy,
        host=args.host,
        kind="udp" if args.udp else "tcp",
        app_id=args.app_id,
        registry=_registry(args),
        timeout=args.claim_timeout,
    ) as reservation:
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


def _list(args: argparse.Namespace) -> int:
    registry = _registry(args)
    claims = registry.list_claims_now(all_scopes=args.all_scopes)
    if not args.all:
        claims = [info for info in claims if info.held]
    now = time.time()
    if args.json:
        print(json.dumps([_claim_fields(info, now) for info in claims], indent=2))
        return 0
    print(_format_table(claims, now, show_scope=args.all_scopes))
    return 0


def _claim_fields(info: ClaimInfo, now: float) -> dict[str, object]:
    record = info.record
    return {
        "port": info.key.port,
        "protocol": info.key.kind,
        "scope": info.key.scope,
        "held": info.held,
        "pid": record.pid if record else None,
        "app_id": record.app_id if record else None,
        "host": record.host if record else None,
        "container": record.container if record else None,
        "started": record.started if record else None,
        "age_seconds": round(now - record.started, 3) if record else None,
        "path": info.location,
    }


def _format_table(claims: list[ClaimInfo], now: float, *, show_scope: bool) -> str:
    header = ["PORT", "PROTO", "PID", "APP_ID", "AGE", "HOLDER"]
    if show_scope:
        header.append("SCOPE")
    rows = [header]
    for info in claims:
        record = info.record
        row = [
            str(info.key.port),
            info.key.kind,
            str(record.pid) if record else "-",
            (record.app_id or "-") if record else "-",
            _format_age(now - record.started) if record else "-",
            "alive" if info.held else "released",
        ]
        if show_scope:
            row.append(info.key.scope)
        rows.append(row)
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) for cell, width in zip(row, widths, strict=True)
        ).rstrip()
        for row in rows
    )


def _format_age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _gc(args: argparse.Namespace) -> int:
    registry = _registry(args)
    removed = registry.prune()
    if args.json:
        print(json.dumps(removed, indent=2))
    else:
        print(f"removed {len(removed)} unheld lock files from {registry.scope_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
