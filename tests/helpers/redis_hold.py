"""Child process for Redis tests: claim a port through a RedisRegistry and hold it.

Usage: redis_hold.py URL SPEC [--scope host|cluster] [--host-id ID]
       [--lease S] [--timeout S] [--backend asyncio|trio]

Prints "CLAIMED <port> <fencing token>" once the claim holds, then keeps it
until its standard input closes (exit 0). Prints "LOST <message>" and exits
4 when the registry reports the claim lost, and "EXHAUSTED <message>" with
exit 3 when no port could be claimed.
"""

from __future__ import annotations

import argparse
import os
import sys

import anyio

from aioportclaim import ClaimLostError, PortExhaustedError, RedisRegistry, open_claim


async def wait_for_stdin_eof() -> None:
    descriptor = sys.stdin.fileno()
    while True:
        await anyio.wait_readable(descriptor)
        if not os.read(descriptor, 4096):
            return


async def hold(args: argparse.Namespace) -> int:
    spec: object = args.spec
    if args.spec.startswith("["):
        spec = [int(part) for part in args.spec.strip("[]").split(",")]
    registry = RedisRegistry(
        args.url, scope=args.scope, host_id=args.host_id, lease=args.lease
    )
    async with registry:
        try:
            async with open_claim(
                spec, registry=registry, timeout=args.timeout
            ) as claimer:
                token = claimer.leases[0].fencing_token
                print("CLAIMED", claimer.port, token, flush=True)
                await wait_for_stdin_eof()
        except ClaimLostError as error:
            print("LOST", error, flush=True)
            return 4
        except PortExhaustedError as error:
            print("EXHAUSTED", error, flush=True)
            return 3
    return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("spec")
    parser.add_argument("--scope", default="host", choices=["host", "cluster"])
    parser.add_argument("--host-id", default=None)
    parser.add_argument("--lease", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--backend", default="asyncio")
    args = parser.parse_args()
    sys.exit(anyio.run(hold, args, backend=args.backend))


if __name__ == "__main__":
    main()
