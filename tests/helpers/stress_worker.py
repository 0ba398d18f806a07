"""Child process of the stress tests: claim ports under load and log every hold.

Usage: stress_worker.py MODE --lock-dir DIR --log FILE [options]

Modes:
  rounds      claim from --spec --rounds times and hold each claim for
              --hold seconds (a random time up to it with --random-hold);
              one "claimed" or "exhausted" line per round
  churn       claim and release from --spec in a loop for --seconds, with an
              "acquired" line after each claim and a "released" line before
              each release, so a SIGKILL leaves at most one open hold
  lock-sleep  lock one port of --spec through FileLockRegistry, log it, then
              sleep --seconds before binding: a holder killed between lock
              and bind
  clean       remove lock files for --seconds, with FileLockRegistry.prune
              (--cleaner prune) or by unlinking them without a lock
              (--cleaner naive)

Each log line is one JSON object with an "event" field. Times come from
time.monotonic, which is CLOCK_MONOTONIC on Linux and so comparable across
processes. A hold is logged only inside the time it really lasted: "acquired"
after the claim returned, "released" before the release began.

With --start-fd and --ready-fd the worker writes one byte to the ready pipe
and then waits until the start pipe reaches end of file, so a launcher can
release every worker at the same moment.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import time
from typing import TYPE_CHECKING

import anyio

from aioportclaim import (
    ClaimKey,
    FileLockRegistry,
    HolderRecord,
    PortExhaustedError,
    PortSelectionStrategy,
    Registry,
    claim_port,
)

if TYPE_CHECKING:
    from aioportclaim import ClaimInfo, Lease


class CountingRegistry(Registry):
    """A FileLockRegistry that counts the locks it grants.

    A claim that is granted more locks than it keeps took a lock and then
    found the port bound: two holders had the lock of one port, or a process
    outside the registry holds the port.
    """

    name = "file"

    def __init__(self, inner: FileLockRegistry) -> None:
        self.inner = inner
        self.granted = 0

    def scope(self) -> str:
        return self.inner.scope()

    async def try_acquire(self, key: ClaimKey, holder: HolderRecord) -> Lease | None:
        lease = await self.inner.try_acquire(key, holder)
        if lease is not None:
            self.granted += 1
        return lease

    async def list_claims(self) -> list[ClaimInfo]:
        return await self.inner.list_claims()


class EventLog:
    """Append JSON lines to a file, one write call per line."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, event: str, **fields: object) -> None:
        line = json.dumps({"event": event, **fields}, separators=(",", ":"))
        os.write(self._fd, line.encode() + b"\n")


def wait_for_start(args: argparse.Namespace) -> None:
    """Report readiness and block until the launcher closes the start pipe."""
    if args.ready_fd >= 0:
        os.write(args.ready_fd, b"r")
        os.close(args.ready_fd)
    if args.start_fd >= 0:
        os.read(args.start_fd, 1)
        os.close(args.start_fd)


async def run_rounds(args: argparse.Namespace, log: EventLog) -> None:
    registry = CountingRegistry(FileLockRegistry(args.lock_dir))
    rng = random.Random()
    wait_for_start(args)
    for _ in range(args.rounds):
        hold = rng.uniform(0, args.hold) if args.random_hold else args.hold
        granted = registry.granted
        start = time.monotonic()
        try:
            async with claim_port(
                args.spec, registry=registry, timeout=args.timeout
            ) as sock:
                acquired = time.monotonic()
                port = sock.getsockname()[1]
                listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                await anyio.sleep(hold)
                released = time.monotonic()
        except PortExhaustedError as error:
            log.write(
                "exhausted",
                start=start,
                end=time.monotonic(),
                rejections=error.rejections,
                rejected_after_lock=registry.granted - granted,
            )
            continue
        log.write(
            "claimed",
            port=port,
            start=start,
            acquired=acquired,
            released=released,
            listening=bool(listening),
            rejected_after_lock=registry.granted - granted - 1,
        )


async def run_churn(args: argparse.Namespace, log: EventLog) -> None:
    registry = CountingRegistry(FileLockRegistry(args.lock_dir))
    rng = random.Random()
    wait_for_start(args)
    deadline = time.monotonic() + args.seconds
    while (remaining := deadline - time.monotonic()) > 0:
        granted = registry.granted
        try:
            async with claim_port(
                args.spec, registry=registry, timeout=remaining
            ) as sock:
                port = sock.getsockname()[1]
                log.write("acquired", port=port, time=time.monotonic())
                await anyio.sleep(rng.uniform(0, args.hold))
                log.write(
                    "released",
                    port=port,
                    time=time.monotonic(),
                    rejected_after_lock=registry.granted - granted - 1,
                )
        except PortExhaustedError:
            break


def run_lock_sleep(args: argparse.Namespace, log: EventLog) -> None:
    registry = FileLockRegistry(args.lock_dir)
    for port in PortSelectionStrategy(args.spec).candidates():
        key = ClaimKey(registry.scope(), "tcp", port)
        lease = registry.try_acquire_now(
            key, HolderRecord.for_this_process("tcp", port, None)
        )
        if lease is None:
            continue
        log.write("acquired", port=port, time=time.monotonic(), lock_only=True)
        time.sleep(args.seconds)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
        lease.release_now()
        return
    log.write("no_lock")


def run_clean(args: argparse.Namespace, log: EventLog) -> None:
    registry = FileLockRegistry(args.lock_dir)
    scope_dir = registry.scope_dir()
    wait_for_start(args)
    removed = passes = 0
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        if args.cleaner == "prune":
            removed += len(registry.prune())
        else:
            removed += unlink_lock_files(scope_dir)
        passes += 1
        time.sleep(0.0002)  # leaves the claimers some CPU on a small machine
    log.write("cleaned", cleaner=args.cleaner, removed=removed, passes=passes)


def unlink_lock_files(scope_dir: str) -> int:
    """Unlink every lock file without locking it, as a careless cleanup job would."""
    removed = 0
    with os.scandir(scope_dir) as entries:
        for entry in entries:
            if entry.name.endswith(".lock"):
                try:
                    os.unlink(entry.path)
                except FileNotFoundError:
                    continue
                removed += 1
    return removed


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["rounds", "churn", "lock-sleep", "clean"])
    parser.add_argument("--lock-dir", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--spec", default="30000-30007")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--hold", type=float, default=0.0)
    parser.add_argument("--random-hold", action="store_true")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--cleaner", default="prune", choices=["prune", "naive"])
    parser.add_argument("--start-fd", type=int, default=-1)
    parser.add_argument("--ready-fd", type=int, default=-1)
    return parser.parse_args()


def main() -> None:
    args = parse_arguments()
    log = EventLog(args.log)
    if args.mode == "rounds":
        anyio.run(run_rounds, args, log, backend=args.backend)
    elif args.mode == "churn":
        anyio.run(run_churn, args, log, backend=args.backend)
    elif args.mode == "lock-sleep":
        run_lock_sleep(args, log)
    else:
        run_clean(args, log)


if __name__ == "__main__":
    main()
