"""The command line's parser: global options and the four subcommands."""

from __future__ import annotations

import argparse
import re
from typing import NoReturn, TypeAlias
from urllib.parse import urlsplit

from . import __version__
from ._cli_common import EXIT_USAGE, PROG
from ._cli_list import gc_command, list_command
from ._cli_pick import pick_command
from ._cli_run import run_command
from .registries import LOCK_DIR_ENV, REGISTRY_ENV

_EXIT_STATUSES = """\
exit status:
  0    success
  1    the claim, the lock directory or the registry failed (pick, list, gc)
  2    invalid arguments
  141  standard output was closed before pick, list or gc wrote it, as by head
  run: the command's own status, 128+N when signal N ended it, 124 when the
  command did not listen in time, 125 when run itself failed, 126 when the
  command cannot be executed, 127 when it is not found
"""

# The names a POSIX shell can export.
_ENVIRONMENT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)


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

    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--lock-dir",
        metavar="DIR",
        help=f"directory of the lock files, used instead of ${REGISTRY_ENV} (default: ${LOCK_DIR_ENV}, else a per-user directory under the system temporary directory)",
    )
    where.add_argument(
        "--registry",
        metavar="URL",
        type=_registry_url,
        help=f"where claims live: a redis://, rediss:// or unix:// URL for Redis, or file:///path/to/lock-directory (default: ${REGISTRY_ENV}, else the lock directory)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log claims to stderr; twice for debug messages",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")

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
        help="seconds to keep looking for a free port, greater than 0 (default: 10)",
    )


def _add_stats_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--stats",
        nargs="?",
        const="text",
        choices=("text", "json"),
        metavar="FORMAT",
        help="print the claim's metrics to stderr at the end; FORMAT is text (the default) or json, which prints one line",
    )


def _registry_url(text: str) -> str:
    """Check that a --registry value parses as a URL; open_registry checks the rest."""
    url = text.strip()
    try:
        urlsplit(url)
    except ValueError as error:
        # The URL may carry a password, so the message does not repeat it.
        problem = f"invalid registry URL: {error}"
    else:
        problem = "" if url else "invalid registry URL ''"
    if problem:
        msg = f"{problem}; expected a redis://, rediss:// or unix:// URL, or file:///path/to/lock-directory"
        raise argparse.ArgumentTypeError(msg)
    return url


def _seconds(text: str) -> float:
    """Parse a number of seconds for argparse: finite and greater than 0."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        msg = f"invalid number of seconds {text!r}: expected a number greater than 0, such as 10 or 0.5"
        raise argparse.ArgumentTypeError(msg)
    return value


def _environment_name(text: str) -> str:
    """Check an environment variable name for argparse: one that a shell can export."""
    if not _ENVIRONMENT_NAME.fullmatch(text):
        msg = (
            f"invalid environment variable name {text!r}: use letters, digits and "
            "underscores, not starting with a digit, as in PORT or SERVICE_PORT"
        )
        raise argparse.ArgumentTypeError(msg)
    return text


def _add_pick(commands: _Commands) -> None:
    pick = commands.add_parser(
        "pick",
        help="print a free port",
        description="Claim a free port, release it and print it. Another process can take the port before you bind it; 'run' keeps it reserved.",
    )
    _add_selection_options(pick)
    pick.add_argument("--json", action="store_true", help="print a JSON object")
    _add_stats_option(pick)
    pick.set_defaults(handler=pick_command)


def _add_run(commands: _Commands) -> None:
    run = commands.add_parser(
        "run",
        help="run a server on a reserved port",
        usage=f"{PROG} run [SPEC] [options] -- COMMAND [ARGUMENT ...]",
        description=(
            "Reserve a port, start COMMAND with {port} in its arguments replaced by the port "
            "and the port in an environment variable, check that COMMAND is the process that "
            "listens on it, and keep the reservation until COMMAND exits. SIGINT, SIGTERM and "
            "SIGHUP are passed on to COMMAND, which runs in its own process group. When "
            "COMMAND has not exited --kill-after seconds after a SIGINT or SIGTERM, its "
            "process group gets SIGKILL. On Linux, COMMAND also gets SIGTERM when run itself "
            "dies, even by SIGKILL, so that it stops serving without the reservation. With a Redis "
            "registry, COMMAND is stopped when the claim's lease is lost. Exits with "
            "COMMAND's status."
        ),
    )
    _add_selection_options(run)
    run.add_argument(
        "--env",
        default="PORT",
        type=_environment_name,
        metavar="NAME",
        help="environment variable that receives the port: letters, digits and underscores, not starting with a digit (default: PORT)",
    )
    run.add_argument(
        "--timeout",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="seconds COMMAND has to start listening before it is stopped, greater than 0 (default: 30)",
    )
    run.add_argument(
        "--kill-after",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="seconds COMMAND has to exit after a SIGINT or SIGTERM, or after run stops it, before its process group gets SIGKILL; greater than 0 (default: 10, as for docker stop)",
    )
    run.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="do not print the port and pid on stderr once COMMAND listens",
    )
    _add_stats_option(run)
    run.set_defaults(handler=run_command)


def _add_list(commands: _Commands) -> None:
    listing = commands.add_parser(
        "list",
        help="show the claims in the registry",
        description="Show the ports that live processes hold: port, protocol, holder pid, application id and age, and for Redis the holder's host, the fencing token and the seconds until the lease expires. With --all, also show lock files whose last holder released them or exited.",
    )
    listing.add_argument("--json", action="store_true", help="print a JSON array")
    listing.add_argument(
        "--all",
        action="store_true",
        help="also show released lock files, with their last holder (Redis keeps only held claims)",
    )
    listing.add_argument(
        "--all-scopes",
        action="store_true",
        help="list the claims of every scope (network namespace, or for Redis every host and namespace), not only this one's",
    )
    listing.set_defaults(handler=list_command)


def _add_gc(commands: _Commands) -> None:
    gc = commands.add_parser(
        "gc",
        help="remove lock files that no process holds",
        description="Remove this network namespace's lock files that no process holds. Safe while other processes claim ports. Claims in Redis expire by themselves, so for Redis this removes nothing.",
    )
    gc.add_argument(
        "--json", action="store_true", help="print the removed paths as JSON"
    )
    gc.set_defaults(handler=gc_command)
