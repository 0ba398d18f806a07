"""Command line: pick a port, run a server on a reserved port, list and clean claims.

Exit statuses: 0 on success, 1 when a claim, the lock directory or the
registry fails, 2 for invalid arguments. ``run`` exits with its command's
status, or 128 plus the signal number when a signal ended the command. Like
coreutils' ``timeout``, it exits with 124 when the command did not listen in
time, 125 when ``run`` itself failed, 126 when the command cannot be
executed and 127 when it is not found. When the reader of standard output
goes away before ``pick``, ``list`` or ``gc`` wrote their output, as ``head``
does, the command ends quietly with 141, the status a shell reports for a
program that SIGPIPE ended. A closed standard error is ignored, so ``run``
still exits with its command's status.

The subcommands live in the ``_cli_*`` modules; this module parses the
arguments, runs one subcommand and turns its errors into exit statuses.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import TYPE_CHECKING

from ._cli_common import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OUTPUT_CLOSED,
    EXIT_RUN_FAILED,
    EXIT_USAGE,
    PROG,
    CommandLineError,
    OutputClosedError,
    discard_stream,
    write_stderr,
)
from ._cli_parser import build_parser
from ._exceptions import InvalidPortSpecError, LockDirectoryError, PortClaimError
from .metrics import MemoryRecorder, format_snapshot

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

logger = logging.getLogger("aioportclaim.cli")

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status."""
    try:
        try:
            return _main(argv)
        finally:
            # Flushing here, not at interpreter exit, lets a closed pipe end
            # the command quietly.
            if sys.stdout is not None:
                sys.stdout.flush()
    except (OutputClosedError, BrokenPipeError):
        discard_stream(sys.stdout)
        return EXIT_OUTPUT_CLOSED


def _main(argv: Sequence[str] | None) -> int:
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

    # Only pick and run have --stats; the other subcommands claim nothing.
    stats: str | None = getattr(args, "stats", None)
    recorder = MemoryRecorder() if stats is not None else None
    args.metrics = recorder
    status = _call_handler(args)
    if recorder is not None and stats is not None:
        _write_metrics(recorder, stats)
    return status


def _call_handler(args: argparse.Namespace) -> int:
    """Run the subcommand and return its exit status, reporting errors in one line."""
    try:
        status: int = args.handler(args)
    except OutputClosedError:
        raise
    except CommandLineError as error:
        return _fail(str(error), error.status)
    except InvalidPortSpecError as error:
        return _fail(str(error), EXIT_USAGE)
    except LockDirectoryError as error:
        return _fail(_lock_dir_message(error, args), _failure_status(args))
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


def _lock_dir_message(error: LockDirectoryError, args: argparse.Namespace) -> str:
    """Add the option that chose the lock directory to the library's advice."""
    if args.lock_dir is not None:
        return f"{error}, or pass another --lock-dir"
    if args.registry is not None:
        return f"{error}, or pass another --registry"
    return str(error)


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
    write_stderr(f"{PROG}: error: {message}\n")
    return status


def _write_metrics(recorder: MemoryRecorder, form: str) -> None:
    """Write the claim's metrics to stderr, because stdout belongs to the result or the command."""
    snapshot = recorder.snapshot()
    if form == "json":
        write_stderr(f"{json.dumps(snapshot)}\n")
        return
    lines = ["claim metrics:", *format_snapshot(snapshot).splitlines()]
    write_stderr("".join(f"{PROG}: {line}\n" for line in lines))


if __name__ == "__main__":
    sys.exit(main())
