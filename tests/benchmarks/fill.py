"""Fill a window of ports one claim at a time, holding every earlier claim; run by run.py.

Usage: python -m tests.benchmarks.fill CANDIDATE CONFIG.json [--profile]

CANDIDATE is "claim_port, asyncio", "claim_port, trio" or "minimal correct
claim"; the config names the lock directory and the ports. The process
prints one JSON object with the duration of each claim in nanoseconds, in
order. It also holds the change of open descriptors and resident memory per
held claim, and the Python heap growth per held claim that tracemalloc saw
in a second, untimed fill of a quarter of the window. With --profile the
process instead profiles the last 5 % of a fill with cProfile and prints the
top functions.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import time
import tracemalloc
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio

from aioportclaim import PortExhaustedError, PortSelectionStrategy, claim_port

from .claimers import Held, WindowClaims

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")

MINIMAL = "minimal correct claim"
BACKENDS = {"claim_port, asyncio": "asyncio", "claim_port, trio": "trio"}
# Seconds the last claims may search before a port busy outside the benchmark
# ends the fill early.
CLAIM_TIMEOUT = 2.0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def resident_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def footprint() -> dict[str, int]:
    return {"fds": open_fds(), "rss": resident_bytes()}


class Filler:
    """Claim ports in turn, timing each claim, and inspect the process once all are held."""

    def __init__(self, candidate: str, lock_dir: Path, ports: list[int]) -> None:
        self.candidate = candidate
        self.window = WindowClaims(lock_dir, ports)
        self.strategy = PortSelectionStrategy(ports)
        self.profiler: cProfile.Profile | None = None
        self.profile_from = len(ports)

    def fill(self, count: int, inspect: Callable[[], T]) -> tuple[list[int], T]:
        """Claim up to `count` ports; return each duration and `inspect()` taken with all held."""
        if self.candidate == MINIMAL:
            return self._fill_minimal(count, inspect)
        result: tuple[list[int], T] = anyio.run(
            self._fill_claim_port, count, inspect, backend=BACKENDS[self.candidate]
        )
        return result

    def _profile_if_due(self, index: int) -> None:
        if self.profiler is not None and index == self.profile_from:
            self.profiler.enable()

    def _fill_minimal(
        self, count: int, inspect: Callable[[], T]
    ) -> tuple[list[int], T]:
        held: list[Held] = []
        durations: list[int] = []
        try:
            for index in range(count):
                self._profile_if_due(index)
                started = time.perf_counter_ns()
                try:
                    held.append(self.window.take_minimal())
                except RuntimeError:
                    break
                durations.append(time.perf_counter_ns() - started)
            if self.profiler is not None:
                self.profiler.disable()
            return durations, inspect()
        finally:
            for claim in held:
                claim.release()

    async def _fill_claim_port(
        self, count: int, inspect: Callable[[], T]
    ) -> tuple[list[int], T]:
        durations: list[int] = []
        async with AsyncExitStack() as stack:
            for index in range(count):
                self._profile_if_due(index)
                started = time.perf_counter_ns()
                try:
                    await stack.enter_async_context(
                        claim_port(self.strategy, timeout=CLAIM_TIMEOUT)
                    )
                except PortExhaustedError:
                    break
                durations.append(time.perf_counter_ns() - started)
            if self.profiler is not None:
                self.profiler.disable()
            return durations, inspect()


def traced_heap() -> int:
    return tracemalloc.get_traced_memory()[0]


def measure(filler: Filler, count: int) -> dict[str, Any]:
    before = footprint()
    durations, full = filler.fill(count, footprint)
    held = len(durations)

    # A second, smaller fill under tracemalloc, which slows every allocation.
    traced_count = max(1, count // 4)
    tracemalloc.start()
    empty = traced_heap()
    traced_durations, heap_full = filler.fill(traced_count, traced_heap)
    tracemalloc.stop()
    return {
        "durations": durations,
        "held": held,
        "fds_per_claim": (full["fds"] - before["fds"]) / max(held, 1),
        "rss_per_claim": (full["rss"] - before["rss"]) / max(held, 1),
        "heap_per_claim": (heap_full - empty) / max(len(traced_durations), 1),
    }


def profile_tail(filler: Filler, count: int) -> str:
    filler.profiler = cProfile.Profile()
    filler.profile_from = count - max(1, count // 20)
    filler.fill(count, footprint)
    text = io.StringIO()
    stats = pstats.Stats(filler.profiler, stream=text)
    stats.sort_stats("cumulative").print_stats("aioportclaim", 25)
    stats.sort_stats("tottime").print_stats(15)
    return text.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("candidate", choices=[MINIMAL, *BACKENDS])
    parser.add_argument("config", type=Path)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    config = json.loads(args.config.read_text())
    ports: list[int] = config["ports"]

    # Each held claim keeps a socket and a lock file open.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    filler = Filler(args.candidate, Path(config["lock_dir"]), ports)
    filler.window.create_lock_files()
    if args.profile:
        result: dict[str, Any] = {"profile": profile_tail(filler, len(ports))}
    else:
        result = measure(filler, len(ports))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
