"""Child process for cross-process tests: claim a port, report it, hold it.

Usage: hold_claim.py SPEC [--kind tcp|udp] [--host H] [--timeout S]
       [--backend asyncio|trio] [--no-listen]

Prints "CLAIMED <port>" once the claim holds, then keeps it until its
standard input closes. Prints "EXHAUSTED <message>" and exits 3 when no
port could be claimed.
"""

from __future__ import annotations

import argparse
import sys

import anyio

from aioportclaim import PortExhaustedError, claim_port


async def hold(args: argparse.Namespace) -> int:
    spec: object = args.spec
    if args.spec.startswith("["):
        spec = [int(part) for part in args.spec.strip("[]").split(",")]
    try:
        async with claim_port(
            spec,
            host=args.host,
            kind=args.kind,
            timeout=args.timeout,
            listen=not args.no_listen,
        ) as sock:
            print("CLAIMED", sock.getsockname()[1], flush=True)
            await anyio.to_thread.run_sync(sys.stdin.read)
    except PortExhaustedError as error:
        print("EXHAUSTED", error, flush=True)
        return 3
    return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("spec")
    parser.add_argument("--kind", default="tcp")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--backend", default="asyncio")
    parser.add_argument("--no-listen", action="store_true")
    args = parser.parse_args()
    sys.exit(anyio.run(hold, args, backend=args.backend))


if __name__ == "__main__":
    main()
