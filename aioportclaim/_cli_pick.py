"""The ``pick`` subcommand: claim a free port, release it and print it."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import anyio

from ._claim import open_claim
from ._cli_common import build_strategy, open_cli_registry, write_stdout

if TYPE_CHECKING:
    import argparse


def pick_command(args: argparse.Namespace) -> int:
    """Print a port that was free when it was claimed, as a number or JSON."""
    strategy = build_strategy(args)
    kind = "udp" if args.udp else "tcp"

    async def claim() -> int:
        async with (
            open_cli_registry(args) as registry,
            open_claim(
                strategy,
                host=args.host,
                kind=kind,
                app_id=args.app_id,
                registry=registry,
                timeout=args.claim_timeout,
                metrics=args.metrics,
            ) as claimer,
        ):
            return claimer.port

    port = anyio.run(claim)
    if args.json:
        output = json.dumps({"port": port, "protocol": kind, "host": args.host})
    else:
        output = str(port)
    write_stdout(output)
    return 0
