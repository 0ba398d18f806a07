"""get_port: the port-for style function, for code migrating from port-for."""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
from typing import TYPE_CHECKING

import anyio

from ._selector import RobustPortSelector
from ._spec import parse_port_spec
from ._strategy import PortSelectionStrategy

if TYPE_CHECKING:
    from collections.abc import Iterable


async def get_port(
    ports: object, exclude_ports: Iterable[object] | None = None
) -> int | None:
    """Return a port number by port-for's rules, checking that a searched port is free.

    An int or numeric string is returned as is, unchecked, and ``-1`` gives
    None. ``None``, ``0``, ``""`` and empty collections mean any port.
    Tuples ``(low, high)`` (inclusive), ``"low-high"`` strings, and lists,
    sets and frozensets of these are searched: each candidate is claimed
    and released at once, so the port is free when it is returned but not
    held. Prefer `claim_port`, which keeps the socket bound.

    Raises `InvalidPortSpecError` for a bad spec and `PortExhaustedError`
    when no port of the spec is free.

    .. versionadded:: 0.1
    """
    spec = parse_port_spec(ports)
    if spec.kind == "exact":
        return spec.port
    if spec.kind == "none":
        return None

    strategy = PortSelectionStrategy(spec.ports if spec.kind == "set" else None)
    # A lone port or "low-high" string is one exclusion, not a list of characters.
    single = isinstance(exclude_ports, str | int)
    excluded = [exclude_ports] if single else list(exclude_ports or ())
    if excluded:
        strategy = strategy.exclude_ports(*excluded)
    selector = RobustPortSelector(strategy)
    port, claimer = await selector.select_and_claim(max_attempts=1, timeout=None)
    await claimer.release()
    return port


def get_port_sync(
    ports: object, exclude_ports: Iterable[object] | None = None
) -> int | None:
    """Do what `get_port` does, from synchronous code.

    Inside a thread that already runs an event loop, the search runs in a
    worker thread with its own loop.

    .. versionadded:: 0.1
    """
    if not _event_loop_running():
        return anyio.run(get_port, ports, exclude_ports)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(anyio.run, get_port, ports, exclude_ports).result()


def _event_loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return True
    trio = sys.modules.get("trio")
    if trio is None:
        return False
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True
