"""Claim latency through Redis on loopback: p50 and p99 of claim_port with a RedisRegistry.

Usage: python tests/benchmarks/redis_latency.py [--samples N]
       [--backend asyncio|trio] [--url URL]

Without --url the script starts a private redis-server on a loopback TCP
port and stops it at the end. Each sample times claim_port from the call to
the start of its block (lock in Redis, bind, listen, probe the other IP
family), then the release as the block ends (a compare-and-delete in Redis).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import anyio

from aioportclaim import RedisRegistry, claim_port

ROOT = Path(__file__).resolve().parents[2]
_WARMUP = 20


async def claim_durations(url: str, samples: int) -> tuple[list[int], list[int]]:
    """Claim and release `samples` times; return claim and release durations in ns."""
    claims: list[int] = []
    releases: list[int] = []
    async with RedisRegistry(url) as registry:
        for index in range(_WARMUP + samples):
            started = time.perf_counter_ns()
            async with claim_port(registry=registry):
                claimed = time.perf_counter_ns()
            released = time.perf_counter_ns()
            if index >= _WARMUP:
                claims.append(claimed - started)
                releases.append(released - claimed)
    return claims, releases


def percentiles_ms(durations: list[int]) -> dict[str, float]:
    """Return p50 and p99 of durations in nanoseconds, in milliseconds."""
    cuts = statistics.quantiles(durations, n=100, method="inclusive")
    return {"p50_ms": cuts[49] / 1e6, "p99_ms": cuts[98] / 1e6}


def measure_redis_claim_latency(
    url: str, *, samples: int = 500, backend: str = "asyncio"
) -> dict[str, dict[str, float]]:
    """Measure claim_port through a RedisRegistry at `url`; return p50 and p99 in ms.

    The result maps "claim" and "release" to their percentiles.
    """
    if samples < 2:
        msg = f"invalid samples {samples!r}: expected 2 or more"
        raise ValueError(msg)
    claims, releases = anyio.run(claim_durations, url, samples, backend=backend)
    return {"claim": percentiles_ms(claims), "release": percentiles_ms(releases)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--samples", type=int, default=500, help="number of timed claims (default 500)"
    )
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    parser.add_argument(
        "--url",
        help="URL of the Redis server to use (default: start redis-server on 127.0.0.1)",
    )
    args = parser.parse_args()
    # This module lives in the tests package, which a script run by path
    # does not find on its own.
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.redis_server import start_redis_server

    with ExitStack() as stack:
        url = args.url
        if url is None:
            server = stack.enter_context(start_redis_server(tcp=True))
            url = server.tcp_url
        result = measure_redis_claim_latency(
            url, samples=args.samples, backend=args.backend
        )
    for phase, values in result.items():
        print(
            f"{phase:8} p50 {values['p50_ms']:.3f} ms  p99 {values['p99_ms']:.3f} ms"
            f"  ({args.samples} samples, {args.backend}, {url})"
        )


if __name__ == "__main__":
    main()
