"""Herds of processes that pick a port, hand it on, then bind it; run by run.py.

Usage: python -m tests.benchmarks.herd CONFIG.json

The config names the lock directory, the window of ports for the locked
candidates, the port server address (or null) and a list of jobs
``[candidate, workers]``. For each job this process forks `workers`
children. Each child picks and releases one port to warm its caches. Then
all children start together: each writes a byte to a ready pipe and waits
for the end of a start pipe. A child picks a port, waits 0-20 ms as a test
harness does while it hands the number to a server, then binds it with
SO_REUSEADDR and listens, as a server does. Candidates that hold their claim
(claim_port and the two lock-file claims) keep the bound socket instead of
binding again. Every child keeps its socket until all children of the job
have reported, so a later bind meets every earlier one. Each job prints one
JSON line: the candidate, the worker count and one result per child (port,
seconds to pick, whether the bind succeeded).
"""

from __future__ import annotations

import gc
import json
import os
import random
import select
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import portpicker

from aioportclaim import PortSelectionStrategy, claim_port

from .claimers import (
    Held,
    WindowClaims,
    bind_zero,
    ephemeral_reserve,
    port_for_random,
    portpicker_without_server,
)

if TYPE_CHECKING:
    from collections.abc import Callable

CLAIM_PORT = "claim_port, asyncio"
# Seconds a job may take before the parent stops waiting and kills its children.
JOB_LIMIT = 60.0
MAX_HANDOFF_DELAY = 0.020


@dataclass
class Context:
    window: WindowClaims
    strategy: PortSelectionStrategy
    portserver: str | None


class JobPipes:
    """Pipes that start a job's children together and collect their reports."""

    def __init__(self) -> None:
        self.start_read, self.start_write = os.pipe()
        self.ready_read, self.ready_write = os.pipe()
        self.result_read, self.result_write = os.pipe()
        self.done_read, self.done_write = os.pipe()

    # Child side.
    def enter_child(self) -> None:
        for fd in (
            self.start_write,
            self.ready_read,
            self.result_read,
            self.done_write,
        ):
            os.close(fd)

    def wait_for_start(self) -> None:
        os.write(self.ready_write, b"r")
        os.close(self.ready_write)
        os.read(self.start_read, 1)

    def report(self, result: dict[str, Any]) -> None:
        os.write(self.result_write, json.dumps(result).encode() + b"\n")
        os.close(self.result_write)

    def wait_for_done(self) -> None:
        os.read(self.done_read, 1)

    # Parent side.
    def enter_parent(self) -> None:
        for fd in (
            self.start_read,
            self.ready_write,
            self.result_write,
            self.done_read,
        ):
            os.close(fd)

    def start_when_ready(self, workers: int, deadline: float) -> None:
        read_until(self.ready_read, workers, deadline)
        os.close(self.start_write)
        os.close(self.ready_read)

    def collect(self, deadline: float) -> list[dict[str, Any]]:
        data = read_until(self.result_read, None, deadline)
        os.close(self.result_read)
        return [json.loads(line) for line in data.splitlines()]

    def finish(self) -> None:
        os.close(self.done_write)


def read_until(fd: int, size: int | None, deadline: float) -> bytes:
    """Read until `size` bytes, end of file or the deadline, whichever comes first."""
    data = b""
    while size is None or len(data) < size:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return data


def run_job(candidate: str, workers: int, context: Context) -> dict[str, Any]:
    pipes = JobPipes()
    pids: list[int] = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            run_child(candidate, context, pipes)
        pids.append(pid)
    pipes.enter_parent()
    deadline = time.monotonic() + JOB_LIMIT
    pipes.start_when_ready(workers, deadline)
    results = pipes.collect(deadline)
    pipes.finish()
    reap(pids, deadline)
    return {"candidate": candidate, "workers": workers, "results": results}


def reap(pids: list[int], deadline: float) -> None:
    pending = set(pids)
    while pending and time.monotonic() < deadline:
        for pid in list(pending):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                pending.discard(pid)
        time.sleep(0.001)
    for pid in pending:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def run_child(candidate: str, context: Context, pipes: JobPipes) -> None:
    """Run one child of a job and leave the process; never returns."""
    code = 0
    try:
        pipes.enter_child()
        # A forked child copies the parent's generator, so every child
        # would try the window in the same order without a new seed.
        context.window.rng = random.Random()
        rng = random.Random()
        if candidate == CLAIM_PORT:
            anyio.run(claim_child, context.strategy, pipes, rng)
        else:
            sync_child(candidate, context, pipes, rng)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)


def sync_child(
    candidate: str, context: Context, pipes: JobPipes, rng: random.Random
) -> None:
    takers: dict[str, Callable[[], Held]] = {
        "lock file + bind floor": context.window.take_lock_file_bind,
        "minimal correct claim": context.window.take_minimal,
    }
    pickers = peer_pickers(context.portserver)
    held: Held | None = None
    if candidate in takers:
        takers[candidate]().release()
    else:
        pickers[candidate]()
    pipes.wait_for_start()
    started = time.perf_counter()
    try:
        if candidate in takers:
            held = takers[candidate]()
            port = held.port
        else:
            port = pickers[candidate]()
    except Exception as error:  # a peer that finds no port counts as a failure
        pipes.report({"error": repr(error)})
        pipes.wait_for_done()
        return
    pick_seconds = time.perf_counter() - started

    time.sleep(rng.uniform(0, MAX_HANDOFF_DELAY))
    sock: socket.socket | None
    if held is not None:
        sock, error_number = held.sock, 0
    else:
        sock, error_number = bind_like_a_server(port)
    pipes.report(
        {
            "port": port,
            "pick_seconds": pick_seconds,
            "bound": sock is not None,
            "errno": error_number,
        }
    )
    pipes.wait_for_done()
    if held is not None:
        held.release()
    elif sock is not None:
        sock.close()


def peer_pickers(portserver: str | None) -> dict[str, Callable[[], int]]:
    pickers: dict[str, Callable[[], int]] = {
        "bind-to-0 floor": bind_zero,
        "portpicker, no server": portpicker_without_server,
        "port-for select_random": port_for_random,
        "ephemeral-port-reserve": ephemeral_reserve,
    }
    if portserver is not None:
        address = portserver

        def pick_from_server() -> int:
            port: int = portpicker.pick_unused_port(portserver_address=address)
            return port

        pickers["portpicker, port server"] = pick_from_server
    return pickers


def bind_like_a_server(port: int) -> tuple[socket.socket | None, int]:
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(128)
    except OSError as error:
        sock.close()
        return None, error.errno or 0
    return sock, 0


async def claim_child(
    strategy: PortSelectionStrategy, pipes: JobPipes, rng: random.Random
) -> None:
    async with claim_port(strategy, timeout=JOB_LIMIT / 2):
        pass
    pipes.wait_for_start()
    started = time.perf_counter()
    async with claim_port(strategy, timeout=JOB_LIMIT / 2) as sock:
        pick_seconds = time.perf_counter() - started
        await anyio.sleep(rng.uniform(0, MAX_HANDOFF_DELAY))
        pipes.report(
            {
                "port": sock.getsockname()[1],
                "pick_seconds": pick_seconds,
                "bound": True,
                "errno": 0,
            }
        )
        pipes.wait_for_done()


async def claim_once(strategy: PortSelectionStrategy) -> None:
    async with claim_port(strategy):
        pass


def main() -> None:
    config = json.loads(Path(sys.argv[1]).read_text())
    window = WindowClaims(Path(config["lock_dir"]), config["ports"])
    window.create_lock_files()
    strategy = PortSelectionStrategy(config["ports"])
    # One claim before the forks fills the caches that every child would
    # otherwise fill on its first claim: the candidate plan, the lock
    # directory checks and the host facts of the holder record.
    anyio.run(claim_once, strategy)
    # Without this, each child's first collection would scan the inherited
    # heap and copy its pages; the gc.freeze documentation advises it before fork.
    gc.freeze()
    context = Context(window, strategy, config["portserver"])
    for candidate, workers in config["jobs"]:
        result = run_job(candidate, workers, context)
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
