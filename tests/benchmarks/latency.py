"""Latency of one claim: every candidate measured in interleaved rounds.

Each round runs a batch of every candidate in a new random order, so drift
of the machine (other processes, frequency changes) hits all candidates
alike. claim_port runs inside one long-lived event loop per backend, in a
blocking portal thread, and each claim is timed inside that loop. The main
thread waits meanwhile, so the two threads never compete for the interpreter
lock.
"""

from __future__ import annotations

import random
import time
from contextlib import ExitStack
from typing import TYPE_CHECKING

from anyio.from_thread import BlockingPortal, start_blocking_portal

from aioportclaim import PortSelectionStrategy, claim_port

if TYPE_CHECKING:
    from collections.abc import Callable

ASYNC_CANDIDATES = {
    "claim_port, asyncio": ("asyncio", True),
    "claim_port, trio": ("trio", True),
    "claim_port(), default ports, asyncio": ("asyncio", False),
}


async def claim_batch(count: int, strategy: PortSelectionStrategy | None) -> list[int]:
    """Claim and release `count` times; return each duration in nanoseconds."""
    durations: list[int] = []
    for _ in range(count):
        started = time.perf_counter_ns()
        async with claim_port(strategy):
            pass
        durations.append(time.perf_counter_ns() - started)
    return durations


def sync_batch(pick: Callable[[], int], count: int) -> list[int]:
    durations: list[int] = []
    for _ in range(count):
        started = time.perf_counter_ns()
        pick()
        durations.append(time.perf_counter_ns() - started)
    return durations


class LatencyRun:
    """Interleaved batches of synchronous pickers and of claim_port on both backends."""

    def __init__(
        self,
        pickers: dict[str, Callable[[], int]],
        strategy: PortSelectionStrategy,
        batch_scale: dict[str, float],
    ) -> None:
        self.pickers = pickers
        self.strategy = strategy
        self.batch_scale = batch_scale
        self.names = [*pickers, *ASYNC_CANDIDATES]

    def run(self, rounds: int, batch: int) -> dict[str, list[int]]:
        """Run one discarded warm-up round and `rounds` timed ones."""
        samples: dict[str, list[int]] = {name: [] for name in self.names}
        rng = random.Random()
        with ExitStack() as stack:
            portals = {
                backend: stack.enter_context(start_blocking_portal(backend))
                for backend in ("asyncio", "trio")
            }
            for round_index in range(rounds + 1):
                order = list(self.names)
                rng.shuffle(order)
                for name in order:
                    count = max(1, round(batch * self.batch_scale.get(name, 1.0)))
                    durations = self._batch(name, count, portals)
                    if round_index > 0:
                        samples[name].extend(durations)
        return samples

    def _batch(
        self, name: str, count: int, portals: dict[str, BlockingPortal]
    ) -> list[int]:
        if name in self.pickers:
            return sync_batch(self.pickers[name], count)
        backend, with_strategy = ASYNC_CANDIDATES[name]
        strategy = self.strategy if with_strategy else None
        return portals[backend].call(claim_batch, count, strategy)
