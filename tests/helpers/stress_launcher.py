"""Run one stress scenario with real processes and print what happened as JSON.

Usage: stress_launcher.py SCENARIO --work-dir DIR [options]

Scenarios:
  herd        --workers processes claim from --ports ports for --rounds
              rounds each, all released at the same moment
  thundering  twice as many workers as --ports, released at once, each
              claiming once, holding --hold seconds and giving up after
              --timeout seconds
  killed      --iterations times: three claimers that claim and release in
              a loop and one holder that sleeps between lock and bind, each
              killed with SIGKILL at a random moment; then the launcher
              claims every port of the range at once
  cleaner     --workers looping claimers while one process removes lock
              files (--cleaner prune or naive)

The stress tests run this script inside a new network namespace, so no
process outside the scenario holds a port of its range. Workers alternate
between the asyncio and trio backends. The output is one JSON object:
"events" (every log line of every worker, each with its "worker" id),
"workers" (id, mode, backend, return code, kill time, standard error) and,
for "killed", "unclaimable" (per iteration, the ports that the launcher could
not claim right after the kills).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import anyio

from aioportclaim import FileLockRegistry, PortClaimer

WORKER = Path(__file__).with_name("stress_worker.py")
BACKENDS = ("asyncio", "trio")
# Seconds that any single stage of a scenario may take before the launcher
# kills what is left; the scenarios themselves take a few seconds.
STAGE_LIMIT = 60.0


class Barrier:
    """Two pipes that release every worker at once: ready bytes in, EOF out."""

    def __init__(self) -> None:
        self.start_read, self.start_write = os.pipe()
        self.ready_read, self.ready_write = os.pipe()

    def options(self) -> list[str]:
        return [
            "--start-fd",
            str(self.start_read),
            "--ready-fd",
            str(self.ready_write),
        ]

    def release(self, count: int) -> int:
        """Wait until `count` workers are ready (or gone), then start them all."""
        os.close(self.start_read)
        os.close(self.ready_write)
        ready = 0
        deadline = time.monotonic() + STAGE_LIMIT
        try:
            while ready < count:
                remaining = deadline - time.monotonic()
                if (
                    remaining <= 0
                    or not select.select([self.ready_read], [], [], remaining)[0]
                ):
                    break
                data = os.read(self.ready_read, count - ready)
                if not data:
                    break  # every worker is ready or dead
                ready += len(data)
        finally:
            os.close(self.start_write)
            os.close(self.ready_read)
        return ready


@dataclass
class Worker:
    id: int
    mode: str
    backend: str
    process: subprocess.Popen[bytes]
    log: Path
    stderr: Path
    killed_at: float | None = None

    def has_logged(self) -> bool:
        return self.log.exists() and self.log.stat().st_size > 0


class Launcher:
    """Start workers, kill them by pid, and collect their logs."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.lock_dir = work_dir / "locks"
        self.lock_dir.mkdir(mode=0o700, exist_ok=True)
        self.workers: list[Worker] = []

    def spawn(
        self,
        mode: str,
        *options: str,
        backend: str = "asyncio",
        barrier: Barrier | None = None,
    ) -> Worker:
        index = len(self.workers)
        log = self.work_dir / f"worker-{index}.log"
        stderr = self.work_dir / f"worker-{index}.stderr"
        command = [
            sys.executable,
            str(WORKER),
            mode,
            "--lock-dir",
            str(self.lock_dir),
            "--log",
            str(log),
            "--backend",
            backend,
            *options,
        ]
        pass_fds: tuple[int, ...] = ()
        if barrier is not None:
            command += barrier.options()
            pass_fds = (barrier.start_read, barrier.ready_write)
        with stderr.open("wb") as error_file:
            process = subprocess.Popen(
                command,
                pass_fds=pass_fds,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=error_file,
            )
        worker = Worker(index, mode, backend, process, log, stderr)
        self.workers.append(worker)
        return worker

    def kill(self, worker: Worker) -> None:
        if worker.process.poll() is None:
            worker.killed_at = time.monotonic()
            worker.process.kill()

    def reap(self) -> None:
        """Wait for every worker; kill those still running after `STAGE_LIMIT`."""
        deadline = time.monotonic() + STAGE_LIMIT
        for worker in self.workers:
            try:
                worker.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.kill(worker)
                worker.process.wait()

    def events(self) -> list[dict[str, object]]:
        events: list[dict[str, object]] = []
        for worker in self.workers:
            if not worker.log.exists():
                continue
            for line in worker.log.read_bytes().splitlines():
                try:
                    event = json.loads(line)
                except ValueError:
                    continue  # a line cut short by SIGKILL
                events.append({**event, "worker": worker.id})
        return events

    def describe_workers(self) -> list[dict[str, object]]:
        return [
            {
                "id": worker.id,
                "mode": worker.mode,
                "backend": worker.backend,
                "returncode": worker.process.returncode,
                "killed_at": worker.killed_at,
                "stderr": worker.stderr.read_text(errors="replace")[-2000:],
            }
            for worker in self.workers
        ]


def port_spec(first: int, count: int) -> str:
    return f"{first}-{first + count - 1}"


def run_herd(launcher: Launcher, args: argparse.Namespace) -> dict[str, object]:
    barrier = Barrier()
    for index in range(args.workers):
        launcher.spawn(
            "rounds",
            "--spec",
            port_spec(args.first_port, args.ports),
            "--rounds",
            str(args.rounds),
            "--hold",
            str(args.hold),
            "--random-hold",
            "--timeout",
            str(args.timeout),
            backend=BACKENDS[index % 2],
            barrier=barrier,
        )
    ready = barrier.release(args.workers)
    launcher.reap()
    return {"ready": ready}


def run_thundering(launcher: Launcher, args: argparse.Namespace) -> dict[str, object]:
    barrier = Barrier()
    workers = 2 * args.ports
    for index in range(workers):
        launcher.spawn(
            "rounds",
            "--spec",
            port_spec(args.first_port, args.ports),
            "--hold",
            str(args.hold),
            "--timeout",
            str(args.timeout),
            backend=BACKENDS[index % 2],
            barrier=barrier,
        )
    ready = barrier.release(workers)
    launcher.reap()
    return {"ready": ready}


def run_killed(launcher: Launcher, args: argparse.Namespace) -> dict[str, object]:
    rng = random.Random()
    spec = port_spec(args.first_port, args.ports)
    ports = list(range(args.first_port, args.first_port + args.ports))
    unclaimable: list[list[int]] = []
    launcher_events: list[dict[str, object]] = []
    for _ in range(args.iterations):
        victims = [
            launcher.spawn(
                "churn",
                "--spec",
                spec,
                "--hold",
                "0.002",
                "--seconds",
                "20",
                backend=BACKENDS[index % 2],
            )
            for index in range(3)
        ]
        sleeper = launcher.spawn("lock-sleep", "--spec", spec, "--seconds", "20")
        kill_victims_at_random(launcher, victims, sleeper, rng)
        launcher.reap()
        failed, events = anyio.run(claim_every_port, ports, launcher.lock_dir)
        unclaimable.append(failed)
        launcher_events.extend(events)
    return {"unclaimable": unclaimable, "launcher_events": launcher_events}


def kill_victims_at_random(
    launcher: Launcher, victims: list[Worker], sleeper: Worker, rng: random.Random
) -> None:
    """Kill each worker at a random moment.

    The first claimer dies at a random time after its start, which may fall
    before its first claim on a slow machine. The other claimers and the
    sleeper die at a random time after their first log line, so they are
    killed while claiming, holding or releasing.
    """
    spawned = time.monotonic()
    due = {victims[0].id: spawned + rng.uniform(0.02, 0.4)}
    pending = [*victims, sleeper]
    while pending:
        now = time.monotonic()
        for worker in list(pending):
            if worker.id not in due and worker.has_logged():
                due[worker.id] = now + rng.uniform(0, 0.05)
            if worker.id in due and now >= due[worker.id]:
                launcher.kill(worker)
                pending.remove(worker)
            elif worker.process.poll() is not None or now > spawned + STAGE_LIMIT:
                pending.remove(worker)  # ended by itself: its return code shows why
        time.sleep(0.001)


async def claim_every_port(
    ports: list[int], lock_dir: Path
) -> tuple[list[int], list[dict[str, object]]]:
    """Claim every port at once; return the ports that failed and the holds."""
    registry = FileLockRegistry(lock_dir)
    claimers = [PortClaimer(port, registry=registry) for port in ports]
    failed: list[int] = []
    try:
        for claimer in claimers:
            claimed = await claimer.try_claim()
            if not claimed:
                failed.append(claimer.port)
        acquired = time.monotonic()
        released = time.monotonic()
    finally:
        for claimer in claimers:
            await claimer.release()
    events: list[dict[str, object]] = [
        {
            "event": "claimed",
            "worker": "launcher",
            "port": port,
            "acquired": acquired,
            "released": released,
        }
        for port in ports
        if port not in failed
    ]
    return failed, events


def run_cleaner(launcher: Launcher, args: argparse.Namespace) -> dict[str, object]:
    barrier = Barrier()
    for index in range(args.workers):
        launcher.spawn(
            "churn",
            "--spec",
            port_spec(args.first_port, args.ports),
            "--hold",
            "0.0005",
            "--seconds",
            str(args.seconds),
            backend=BACKENDS[index % 2],
            barrier=barrier,
        )
    launcher.spawn(
        "clean",
        "--cleaner",
        args.cleaner,
        "--seconds",
        str(args.seconds),
        barrier=barrier,
    )
    ready = barrier.release(args.workers + 1)
    launcher.reap()
    return {"ready": ready}


SCENARIOS = {
    "herd": run_herd,
    "thundering": run_thundering,
    "killed": run_killed,
    "cleaner": run_cleaner,
}


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--work-dir", required=True, type=Path)
    parser.add_argument("--first-port", type=int, default=30000)
    parser.add_argument("--ports", type=int, default=8)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--hold", type=float, default=0.0)
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--iterations", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--cleaner", default="prune", choices=["prune", "naive"])
    return parser.parse_args()


def main() -> None:
    args = parse_arguments()
    launcher = Launcher(args.work_dir)
    try:
        extra = SCENARIOS[args.scenario](launcher, args)
    finally:
        for worker in launcher.workers:
            launcher.kill(worker)
        launcher.reap()
    own_events = extra.pop("launcher_events", [])
    assert isinstance(own_events, list)
    report = {
        "events": [*launcher.events(), *own_events],
        "workers": launcher.describe_workers(),
        **extra,
    }
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
