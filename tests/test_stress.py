"""Claims under load and faults: herds of processes, SIGKILL, cleaners, cancellation.

The multi-process scenarios run in tests/helpers/stress_launcher.py inside a
new network namespace, so the only processes that hold ports of the range
are the scenario's own. Every worker logs each hold (the time from a claim's
return to the start of its release) with time.monotonic, which is
CLOCK_MONOTONIC and so shared by all processes on Linux. The tests check that
no two holds of one port overlap in time.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import types
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.lowlevel
import pytest

from aioportclaim import (
    ClaimKey,
    FileLockRegistry,
    HolderRecord,
    PortSelectionStrategy,
    claim_port,
)

from .conftest import HELPERS, count_open_fds, find_free_ports, require_root_tools

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Generator
    from pathlib import Path

    from aioportclaim.registries import FileLease

T = TypeVar("T")

LAUNCHER = HELPERS / "stress_launcher.py"
FIRST_PORT = 30000
# Seconds a worker may overrun its claim timeout on a loaded two-core machine.
DEADLINE_SLACK = 1.0

Report = dict[str, Any]


@dataclass(frozen=True)
class Hold:
    """A time during which one worker held one port, as its log shows it."""

    port: int
    start: float
    end: float
    worker: object


def run_scenario(tmp_path: Path, scenario: str, *options: str) -> Report:
    """Run the launcher in a new network namespace and return its JSON report."""
    require_root_tools("unshare", "ip")
    command = [
        "unshare",
        "--net",
        "--",
        "sh",
        "-c",
        'ip link set lo up && exec "$0" "$@"',
        sys.executable,
        str(LAUNCHER),
        scenario,
        "--work-dir",
        str(tmp_path),
        "--first-port",
        str(FIRST_PORT),
        *options,
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=100, check=False
    )
    assert result.returncode == 0, result.stderr
    report: Report = json.loads(result.stdout)
    return report


def events_of(report: Report, kind: str) -> list[dict[str, Any]]:
    return [event for event in report["events"] if event["event"] == kind]


def collect_holds(report: Report) -> list[Hold]:
    """Pair each worker's log lines into holds.

    A hold that was acquired but never released ends at the moment the
    launcher sent SIGKILL to its worker.
    """
    killed_at = {worker["id"]: worker["killed_at"] for worker in report["workers"]}
    holds: list[Hold] = []
    open_holds: dict[object, dict[str, Any]] = {}
    for event in report["events"]:
        worker = event["worker"]
        if event["event"] == "claimed":
            holds.append(
                Hold(event["port"], event["acquired"], event["released"], worker)
            )
        elif event["event"] == "acquired":
            open_holds[worker] = event
        elif event["event"] == "released":
            start = open_holds.pop(worker)
            assert start["port"] == event["port"]
            holds.append(Hold(event["port"], start["time"], event["time"], worker))
    for worker, start in open_holds.items():
        end = killed_at[worker]
        assert end is not None, (
            f"worker {worker} holds port {start['port']} but was never killed"
        )
        holds.append(Hold(start["port"], start["time"], end, worker))
    return holds


def find_double_claims(holds: list[Hold]) -> list[tuple[Hold, Hold]]:
    """Return pairs of holds of one port that overlap in time."""
    by_port: dict[int, list[Hold]] = defaultdict(list)
    for hold in holds:
        by_port[hold.port].append(hold)
    overlaps: list[tuple[Hold, Hold]] = []
    for port_holds in by_port.values():
        port_holds.sort(key=lambda hold: hold.start)
        latest = port_holds[0]
        for hold in port_holds[1:]:
            if hold.start <= latest.end:
                overlaps.append((latest, hold))
            if hold.end > latest.end:
                latest = hold
    return overlaps


def max_concurrent(holds: list[Hold]) -> int:
    """Return the largest number of holds alive at one moment."""
    # At equal times a release sorts before an acquisition.
    changes = sorted(
        [(hold.start, 1) for hold in holds] + [(hold.end, -1) for hold in holds]
    )
    alive = peak = 0
    for _, change in changes:
        alive += change
        peak = max(peak, alive)
    return peak


def rejected_after_lock(report: Report) -> int:
    """Count claims that took a lock and then found the port bound by someone."""
    return sum(event.get("rejected_after_lock", 0) for event in report["events"])


def failed_workers(report: Report, *, allowed: tuple[int, ...] = (0,)) -> list[str]:
    return [
        f"worker {worker['id']} ({worker['mode']}) exited {worker['returncode']}: {worker['stderr']}"
        for worker in report["workers"]
        if worker["returncode"] not in allowed
    ]


@pytest.mark.netns
class TestProcessHerds:
    def test_herd_never_shares_a_port(self, tmp_path: Path) -> None:
        report = run_scenario(
            tmp_path,
            "herd",
            *("--workers", "32", "--ports", "64", "--rounds", "4", "--hold", "0.01"),
        )
        claims = events_of(report, "claimed")
        ports = {event["port"] for event in claims}

        assert failed_workers(report) == []
        assert report["ready"] == 32
        assert len(claims) == 32 * 4
        assert ports <= set(range(FIRST_PORT, FIRST_PORT + 64))
        assert all(event["listening"] for event in claims)
        assert find_double_claims(collect_holds(report)) == []
        assert rejected_after_lock(report) == 0

    def test_thundering_herd_waiters_get_freed_ports(self, tmp_path: Path) -> None:
        report = run_scenario(
            tmp_path, "thundering", "--ports", "8", "--hold", "0.3", "--timeout", "5"
        )
        holds = collect_holds(report)

        assert failed_workers(report) == []
        assert len(events_of(report, "claimed")) == 16
        assert events_of(report, "exhausted") == []
        assert max_concurrent(holds) == 8
        assert find_double_claims(holds) == []
        assert rejected_after_lock(report) == 0

    def test_thundering_herd_waiters_give_up_at_deadline(self, tmp_path: Path) -> None:
        timeout = 0.5
        report = run_scenario(
            tmp_path,
            "thundering",
            *("--ports", "8", "--hold", "2.0", "--timeout", str(timeout)),
        )
        exhausted = events_of(report, "exhausted")
        waits = [event["end"] - event["start"] for event in exhausted]

        assert failed_workers(report) == []
        assert len(events_of(report, "claimed")) == 8
        assert len(exhausted) == 8
        assert min(waits) >= timeout
        assert max(waits) <= timeout + DEADLINE_SLACK
        assert all(event["rejections"]["locked"] == 8 for event in exhausted)
        assert max_concurrent(collect_holds(report)) == 8


@pytest.mark.netns
class TestFaults:
    def test_killed_holders_ports_reclaimed_at_once(self, tmp_path: Path) -> None:
        iterations = 8
        report = run_scenario(
            tmp_path, "killed", "--ports", "8", "--iterations", str(iterations)
        )
        holds = collect_holds(report)
        killed_at = {worker["id"]: worker["killed_at"] for worker in report["workers"]}
        killed_while_holding = {
            hold.worker for hold in holds if hold.end == killed_at.get(hold.worker)
        }
        sleepers = [w for w in report["workers"] if w["mode"] == "lock-sleep"]
        sleeper_ids = {worker["id"] for worker in sleepers}

        assert failed_workers(report, allowed=(-9,)) == []
        assert report["unclaimable"] == [[]] * iterations
        assert find_double_claims(holds) == []
        assert sleeper_ids <= killed_while_holding
        assert killed_while_holding - sleeper_ids
        assert rejected_after_lock(report) == 0

    def test_prune_cleaner_never_doubles_a_lock(self, tmp_path: Path) -> None:
        report = run_scenario(
            tmp_path,
            "cleaner",
            *("--cleaner", "prune", "--workers", "6", "--ports", "8"),
            *("--seconds", "1.5"),
        )
        [cleaned] = events_of(report, "cleaned")

        assert failed_workers(report) == []
        assert cleaned["removed"] > 0
        assert len(events_of(report, "released")) > 100
        assert find_double_claims(collect_holds(report)) == []
        assert rejected_after_lock(report) == 0

    def test_naive_cleaner_never_doubles_a_claim(self, tmp_path: Path) -> None:
        # Unlinking without the lock lets two claimers lock two inodes of one
        # path. The bind then rejects the second claimer, so claims stay
        # single even though locks do not.
        report = run_scenario(
            tmp_path,
            "cleaner",
            *("--cleaner", "naive", "--workers", "6", "--ports", "8"),
            *("--seconds", "1.5"),
        )
        [cleaned] = events_of(report, "cleaned")

        assert failed_workers(report) == []
        assert cleaned["removed"] > 0
        assert len(events_of(report, "released")) > 100
        assert find_double_claims(collect_holds(report)) == []


@types.coroutine
def count_suspensions(
    coroutine: Coroutine[Any, Any, T], on_suspend: Callable[[int], None]
) -> Generator[Any, Any, T]:
    """Drive `coroutine`, calling `on_suspend(n)` at its n-th suspension.

    The wrapper passes every value that the coroutine yields to the event
    loop and everything the loop sends or throws back, so it works on
    asyncio and trio alike. `on_suspend` runs after the coroutine has
    suspended and before the event loop receives the yielded value.
    """
    value: Any = None
    error: BaseException | None = None
    count = 0
    while True:
        try:
            if error is not None:
                yielded = coroutine.throw(error)
            else:
                yielded = coroutine.send(value)
        except StopIteration as stop:
            result: T = stop.value
            return result
        count += 1
        on_suspend(count)
        try:
            value, error = (yield yielded), None
        except BaseException as thrown:  # passed on to the coroutine
            value, error = None, thrown


class BlockedPorts:
    """Ports made busy by registry locks and by listening sockets of the test."""

    def __init__(self, registry: FileLockRegistry) -> None:
        self.registry = registry
        self.leases: list[FileLease] = []
        self.sockets: list[socket.socket] = []

    def lock(self, port: int) -> None:
        key = ClaimKey(self.registry.scope(), "tcp", port)
        holder = HolderRecord.for_this_process("tcp", port, "blocker")
        lease = self.registry.try_acquire_now(key, holder)
        assert lease is not None
        self.leases.append(lease)

    def bind(self, port: int) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", port))
        sock.listen()
        self.sockets.append(sock)

    def free(self) -> None:
        for lease in self.leases:
            lease.release_now()
        for sock in self.sockets:
            sock.close()
        self.leases.clear()
        self.sockets.clear()


def claimable_now(lock_dir: Path, ports: list[int]) -> list[int]:
    """Return the ports whose lock a fresh registry takes and whose bind succeeds."""
    registry = FileLockRegistry(lock_dir)
    free: list[int] = []
    for port in ports:
        key = ClaimKey(registry.scope(), "tcp", port)
        lease = registry.try_acquire_now(
            key, HolderRecord.for_this_process("tcp", port, None)
        )
        if lease is None:
            continue
        try:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            lease.release_now()
        free.append(port)
    return free


class CancellationSweep:
    """Cancel one claim at each of its suspensions in turn and check the leftovers."""

    def __init__(
        self,
        lock_dir: Path,
        ports: list[int],
        claim: Callable[[], Coroutine[Any, Any, int]],
        on_suspend: Callable[[int], None] = lambda _: None,
    ) -> None:
        self.lock_dir = lock_dir
        self.ports = ports
        self.claim = claim
        self.on_suspend = on_suspend

    async def run(self, cancel_at: int | None) -> tuple[bool, int]:
        """Run the claim once; return whether it was cancelled and its suspensions."""
        suspensions = 0
        with anyio.CancelScope() as scope:

            def on_suspend(count: int) -> None:
                nonlocal suspensions
                suspensions = count
                self.on_suspend(count)
                if count == cancel_at:
                    scope.cancel()

            await count_suspensions(self.claim(), on_suspend)
        return scope.cancelled_caught, suspensions

    async def sweep(self) -> int:
        """Cancel at suspension 1, 2, ... until a run ends before its cancel point.

        An uncancelled run comes first, so lazily opened state does not count
        as a leak. Returns the number of suspensions of that first run.
        """
        cancelled, total = await self.run(None)
        assert not cancelled
        baseline = count_open_fds()

        cancel_at = 1
        while True:
            cancelled, reached = await self.run(cancel_at)
            where = f"after cancelling at suspension {cancel_at}"

            assert count_open_fds() == baseline, f"descriptor left {where}"
            assert claimable_now(self.lock_dir, self.ports) == self.ports, (
                f"port left claimed {where}"
            )
            if reached < cancel_at:
                assert not cancelled, f"cancelled without a cancel request {where}"
                return total
            assert cancelled, (
                f"claim finished although cancelled at suspension {cancel_at}"
            )
            cancel_at += 1
            assert cancel_at <= 2 * total + 10, (
                "the claim suspends far more often than its first run"
            )


class TestCancellationSweep:
    async def test_range_claim_cancelled_anywhere_leaves_nothing(
        self, lock_dir: Path
    ) -> None:
        # 80 candidates: 10 locked and 70 bound, so the first pass rejects
        # all of them, with a checkpoint after 64 bind attempts, and the
        # selector backs off. The validator frees them when it sees a port
        # for the second time, and the claim then waits out its verify delay.
        ports = find_free_ports(80)
        registry = FileLockRegistry(lock_dir)
        blocked = BlockedPorts(FileLockRegistry(lock_dir))
        validated: list[int] = []
        calls_per_run: list[int] = []

        async def accept_after_checkpoint(port: int) -> bool:
            if port in validated:
                blocked.free()
            validated.append(port)
            await anyio.lowlevel.checkpoint()
            return True

        strategy = PortSelectionStrategy(ports).add_validator(accept_after_checkpoint)

        async def claim() -> int:
            validated.clear()
            blocked.free()
            for port in ports[:10]:
                blocked.lock(port)
            for port in ports[10:]:
                blocked.bind(port)
            try:
                async with claim_port(
                    strategy, registry=registry, verify_delay=0.001, timeout=10
                ) as sock:
                    claimed: int = sock.getsockname()[1]
                    return claimed
            finally:
                blocked.free()
                calls_per_run.append(len(validated))

        suspensions = await CancellationSweep(lock_dir, ports, claim).sweep()
        calls = calls_per_run[0]  # the uncancelled run comes first

        # Each validator call, the checkpoint, the backoff and the verify delay.
        assert suspensions >= calls + 3
        assert calls > 70

    async def test_exact_port_polling_cancelled_anywhere_leaves_nothing(
        self, lock_dir: Path
    ) -> None:
        # The port is locked until the claim's third backoff sleep, so the
        # claim polls three times, then claims and waits out its verify delay.
        [port] = find_free_ports(1)
        registry = FileLockRegistry(lock_dir)
        blocked = BlockedPorts(FileLockRegistry(lock_dir))

        def free_at_third_sleep(count: int) -> None:
            if count == 3:
                blocked.free()

        async def claim() -> int:
            blocked.free()
            blocked.lock(port)
            try:
                async with claim_port(
                    port, registry=registry, verify_delay=0.001, timeout=10
                ) as sock:
                    claimed: int = sock.getsockname()[1]
                    return claimed
            finally:
                blocked.free()

        sweep = CancellationSweep(lock_dir, [port], claim, free_at_third_sleep)
        suspensions = await sweep.sweep()

        # Three backoff sleeps and the verify delay.
        assert suspensions >= 4
