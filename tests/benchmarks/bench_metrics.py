"""Overhead of a MemoryRecorder per claim: claims with and without it, interleaved.

Run ``python tests/benchmarks/bench_metrics.py [--rounds N] [--backend trio]``.
Each round makes one claim without a recorder and one with a
`MemoryRecorder`, in alternating order, so both see the same machine state.
The table shows the median (p50) time of each and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import TYPE_CHECKING

import anyio

from aioportclaim import FileLockRegistry, PortClaimer, claim_port, open_claim
from aioportclaim.metrics import MemoryRecorder

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from aioportclaim.metrics import MetricsRecorder

    ClaimOnce = Callable[[MetricsRecorder | None], Awaitable[None]]

WARMUP_ROUNDS = 50


def range_claim(registry: FileLockRegistry) -> ClaimOnce:
    """Return a claim over the default range, released at once."""

    async def claim(metrics: MetricsRecorder | None) -> None:
        async with open_claim(registry=registry, metrics=metrics):
            pass

    return claim


def exact_claim(registry: FileLockRegistry, port: int) -> ClaimOnce:
    """Return an exact-port `claim_port`, released at once."""

    async def claim(metrics: MetricsRecorder | None) -> None:
        async with claim_port(port, registry=registry, metrics=metrics):
            pass

    return claim


def one_port_claim(registry: FileLockRegistry, port: int) -> ClaimOnce:
    """Return a `PortClaimer` try and release of one fixed port."""

    async def claim(metrics: MetricsRecorder | None) -> None:
        claimer = PortClaimer(port, registry=registry, metrics=metrics)
        if not await claimer.try_claim():
            msg = f"port {port} is busy; run the benchmark again to pick another port"
            raise RuntimeError(msg)
        await claimer.release()

    return claim


async def time_interleaved(
    claim: ClaimOnce, rounds: int
) -> tuple[list[float], list[float]]:
    """Time `rounds` claims without and with a recorder, alternating which goes first."""
    recorder = MemoryRecorder()
    without: list[float] = []
    with_recorder: list[float] = []
    for index in range(WARMUP_ROUNDS + rounds):
        order: tuple[MetricsRecorder | None, ...] = (
            (None, recorder) if index % 2 == 0 else (recorder, None)
        )
        for metrics in order:
            started = time.perf_counter()
            await claim(metrics)
            elapsed = time.perf_counter() - started
            if index >= WARMUP_ROUNDS:
                (without if metrics is None else with_recorder).append(elapsed)
    if recorder.snapshot()["successes"] != WARMUP_ROUNDS + rounds:
        msg = "the recorder missed claims; the benchmark measured the wrong path"
        raise RuntimeError(msg)
    return without, with_recorder


async def measure(rounds: int) -> list[tuple[str, float, float]]:
    """Return (scenario, p50 without, p50 with) in seconds for each scenario."""
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as lock_dir:
        registry = FileLockRegistry(lock_dir)
        async with open_claim(registry=registry) as probe:
            port = probe.port
        scenarios = {
            "PortClaimer, one port": one_port_claim(registry, port),
            "claim_port, exact port": exact_claim(registry, port),
            "open_claim, default range": range_claim(registry),
        }
        for name, claim in scenarios.items():
            without, with_recorder = await time_interleaved(claim, rounds)
            results.append(
                (name, statistics.median(without), statistics.median(with_recorder))
            )
    return results


def time_recorder_events(rounds: int) -> float:
    """Return the seconds that the events of one successful claim cost a MemoryRecorder."""
    recorder = MemoryRecorder()
    started = time.perf_counter()
    for _ in range(rounds):
        recorder.record_attempt()
        recorder.record_success()
        recorder.record_claim_duration(0.0001)
        recorder.record_release()
    return (time.perf_counter() - started) / rounds


def main(argv: list[str] | None = None) -> None:
    """Print the p50 claim time without and with a MemoryRecorder, and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds",
        type=int,
        default=2000,
        help="timed claims of each kind (default 2000)",
    )
    parser.add_argument(
        "--backend", choices=("asyncio", "trio"), default="asyncio", help="event loop"
    )
    args = parser.parse_args(argv)

    results = anyio.run(measure, args.rounds, backend=args.backend)
    print(f"{args.rounds} interleaved rounds on {args.backend}, p50 per claim:")
    print(f"{'scenario':<28} {'without':>10} {'with':>10} {'ratio':>7} {'extra':>9}")
    for name, without, with_recorder in results:
        print(
            f"{name:<28} {without * 1e6:>8.1f}us {with_recorder * 1e6:>8.1f}us "
            f"{with_recorder / without:>7.3f} {(with_recorder - without) * 1e6:>+7.2f}us"
        )
    events = time_recorder_events(100_000)
    print(f"MemoryRecorder events of one claim, called alone: {events * 1e6:.2f}us")


if __name__ == "__main__":
    main()
