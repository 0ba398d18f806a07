"""Shared parts of the command line: exit statuses, errors, output, the strategy and the registry."""

from __future__ import annotations

import os
import sys
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TextIO

from ._exceptions import InvalidPortSpecError
from ._spec import describe_value
from ._strategy import PortSelectionStrategy
from .registries import FileLockRegistry, open_registry

if TYPE_CHECKING:
    import argparse
    from collections.abc import AsyncIterator

    from .registries import RedisRegistry, Registry

PROG = "aioportclaim"
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_LISTEN_TIMEOUT = 124
EXIT_RUN_FAILED = 125
EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127
EXIT_INTERRUPTED = 130
#: 128 plus SIGPIPE, the status a shell reports for a program that a closed
#: pipe ended, as in ``aioportclaim list | head -1``.
EXIT_OUTPUT_CLOSED = 141

_PATTERN_CHARACTERS = frozenset("*?[")


class CommandLineError(Exception):
    """An error to report in one line on stderr, with the exit status to use."""

    def __init__(self, message: str, status: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.status = status


class OutputClosedError(Exception):
    """Raised when standard output was closed before the output was written."""


def write_stdout(text: str) -> None:
    """Write `text` and a newline to stdout and flush it.

    Raises:
        OutputClosedError: The reader of stdout closed the pipe, as
            ``head`` does once it has its lines. Other write errors
            propagate.
    """
    stdout = sys.stdout
    if stdout is None:  # started with file descriptor 1 closed
        raise OutputClosedError
    try:
        _write_all(stdout, f"{text}\n")
    except BrokenPipeError:
        raise OutputClosedError from None


def _write_all(stream: TextIO, text: str) -> None:
    # With PYTHONUNBUFFERED the binary layer is a raw file. Its write may
    # take only part of a large output when a pipe fills, and the text layer
    # then drops the rest silently. Writing the bytes in a loop keeps every
    # byte, and a reader that has gone raises BrokenPipeError as it should.
    stream.flush()
    buffer = getattr(stream, "buffer", None)
    if buffer is None:
        stream.write(text)
        stream.flush()
        return
    data = memoryview(
        text.encode(stream.encoding or "utf-8", stream.errors or "strict")
    )
    while data:
        written = buffer.write(data)
        data = data[written or 0 :]
    buffer.flush()


def write_stderr(text: str) -> None:
    """Write `text` to stderr, and discard this and later writes if its reader has gone.

    Messages on stderr accompany a result, so losing them must not change
    the exit status.
    """
    stderr = sys.stderr
    if stderr is None:  # started with file descriptor 2 closed
        return
    try:
        stderr.write(text)
        stderr.flush()
    except BrokenPipeError:
        discard_stream(stderr)


def discard_stream(stream: object) -> None:
    """Point the file descriptor under `stream` at /dev/null.

    Text still buffered in `stream` is then flushed into /dev/null, so the
    interpreter does not report a broken pipe when it flushes at exit.
    """
    fileno = getattr(stream, "fileno", None)
    if fileno is None:
        return
    try:
        fd = fileno()
    except (OSError, ValueError):
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


# The port forms that a shell user types, for messages about invalid ports.
_SPEC_FORMS = (
    "a port such as 8080, a range such as 8000-8100 or a list such as 8000-8100,9000"
)
_SPEC_HINT = f"use {_SPEC_FORMS}, or leave SPEC out for the default ports"
_EXCLUDE_HINT = (
    "use a port such as 8080, a range such as 8000-8100, a list such as "
    "8000-8100,9000, a glob on the digits such as '80*', or well-known"
)
_PREFER_HINT = f"use {_SPEC_FORMS}, optionally followed by ':WEIGHT' as in 8000-8100:2"


def build_strategy(args: argparse.Namespace) -> PortSelectionStrategy:
    """Build the selection strategy from SPEC, --exclude and --prefer.

    Raises:
        CommandLineError: SPEC, an --exclude or a --prefer value is
            invalid. The message shows the value and the forms a shell
            user can type.
    """
    try:
        strategy = PortSelectionStrategy(args.spec)
    except InvalidPortSpecError as error:
        raise _spec_error(error, "port spec", _SPEC_HINT) from None
    for value in args.exclude:
        if value == "well-known":
            strategy = strategy.exclude_well_known()
        elif _PATTERN_CHARACTERS & set(value):
            # Pattern errors already name the glob syntax, which is the same
            # in Python and in the shell.
            strategy = strategy.exclude_pattern(value)
        else:
            try:
                strategy = strategy.exclude_ports(value)
            except InvalidPortSpecError as error:
                raise _spec_error(error, "--exclude value", _EXCLUDE_HINT) from None
    for value in args.prefer:
        ports, _, weight_text = value.partition(":")
        weight = _parse_weight(value, weight_text)
        try:
            strategy = strategy.prefer_ports(ports, weight=weight)
        except InvalidPortSpecError as error:
            raise _spec_error(error, "--prefer ports", _PREFER_HINT) from None
    return strategy


def _spec_error(error: InvalidPortSpecError, label: str, hint: str) -> CommandLineError:
    """Restate a spec error for the command line: the same problem, with a shell hint.

    The library's message reads "invalid WHAT VALUE: PROBLEM; HINT", and
    its hint names Python forms such as ``range(start, stop)`` and None.
    """
    value = describe_value(error.value)
    _, found, rest = str(error).partition(f"{value}: ")
    problem, separator, _ = rest.rpartition("; ")
    if not separator:
        problem = rest
    detail = f": {problem}" if found and problem else ""
    return CommandLineError(f"invalid {label} {value}{detail}; {hint}", EXIT_USAGE)


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


@asynccontextmanager
async def open_cli_registry(args: argparse.Namespace) -> AsyncIterator[Registry]:
    """Open the registry that the command line selects, until the block ends.

    ``--lock-dir`` selects that lock directory. Otherwise ``--registry``, or
    else ``AIOPORTCLAIM_REGISTRY``, names a Redis server or a lock directory
    by URL, and without either the default lock directory is used.
    """
    if args.lock_dir is not None:
        yield FileLockRegistry(args.lock_dir)
        return
    async with open_registry(args.registry) as registry:
        yield registry


def as_redis_registry(registry: Registry) -> RedisRegistry | None:
    """Return `registry` if it is a `RedisRegistry`, else None.

    coredis is imported only when the registry names itself Redis, so the
    command line runs without it for lock directories.
    """
    if registry.name != "redis":
        return None
    from .registries._redis import RedisRegistry

    return registry if isinstance(registry, RedisRegistry) else None
