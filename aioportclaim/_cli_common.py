"""Shared parts of the command line: exit statuses, errors, the strategy and the registry."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

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

_PATTERN_CHARACTERS = frozenset("*?[")


class CommandLineError(Exception):
    """An error to report in one line on stderr, with the exit status to use."""

    def __init__(self, message: str, status: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.status = status


def build_strategy(args: argparse.Namespace) -> PortSelectionStrategy:
    """Build the selection strategy from SPEC, --exclude and --prefer."""
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
