"""The benchmark run behind run.py: measure, check the targets, write the page."""

from __future__ import annotations

import cProfile
import datetime
import importlib
import io
import json
import os
import platform
import pstats
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from aioportclaim import PortSelectionStrategy, claim_port
from aioportclaim.registries import LOCK_DIR_ENV

from .claimers import PortServer, WindowClaims, find_free_window, sync_pickers
from .latency import LatencyRun
from .report import (
    HERD_SIZES,
    Extra,
    FillRow,
    HerdCell,
    LatencyRow,
    Page,
    Target,
    draw_chart,
    percentile,
    render_page,
    summarize_herds,
)

if TYPE_CHECKING:
    from collections.abc import Callable

HerdTable = dict[str, dict[int, HerdCell]]

ROOT = Path(__file__).resolve().parents[2]
WINDOW_SIZE = 2000
CLAIM_PORT = "claim_port, asyncio"
CLAIM_PORT_TRIO = "claim_port, trio"
MINIMAL = "minimal correct claim"
LOCK_FLOOR = "lock file + bind floor"
PORTPICKER = "portpicker, no server"
PORTPICKER_SERVER = "portpicker, port server"
HERD_CANDIDATES = [
    "bind-to-0 floor",
    PORTPICKER,
    PORTPICKER_SERVER,
    "port-for select_random",
    "ephemeral-port-reserve",
    LOCK_FLOOR,
    MINIMAL,
    CLAIM_PORT,
]
FILL_CANDIDATES = [CLAIM_PORT, CLAIM_PORT_TRIO, MINIMAL]
# Fewer samples for the slow peers: port-for takes milliseconds per call, and
# each ephemeral-port-reserve call leaves a connection in TIME_WAIT for 60 s.
BATCH_SCALE = {"port-for select_random": 0.1, "ephemeral-port-reserve": 0.25}
EXTRA_MODULES = {
    "bench_metrics": "Metrics recorder overhead (bench_metrics.py)",
    "redis_latency": "Redis registry latency (redis_latency.py)",
}


@dataclass(frozen=True)
class Settings:
    rounds: int
    batch: int
    herd_trials: int
    fill_rounds: int
    extra_timeout: float

    def describe(self) -> dict[str, object]:
        return {
            "latency rounds": self.rounds,
            "batch per candidate and round": self.batch,
            "herd trials": self.herd_trials,
            "fill rounds": self.fill_rounds,
        }


FULL = Settings(rounds=40, batch=100, herd_trials=20, fill_rounds=5, extra_timeout=300)
QUICK = Settings(rounds=5, batch=40, herd_trials=2, fill_rounds=1, extra_timeout=120)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def run_suite(*, quick: bool, output: Path) -> None:
    settings = QUICK if quick else FULL
    command = "python tests/benchmarks/run.py" + (" --quick" if quick else "")
    machine = describe_machine()
    with tempfile.TemporaryDirectory(prefix="aioportclaim-bench-") as work_name:
        work = Path(work_name)
        lock_dir = work / "locks"
        lock_dir.mkdir(mode=0o700)
        os.environ[LOCK_DIR_ENV] = str(lock_dir)
        os.environ.pop("PORTSERVER_ADDRESS", None)
        ports = find_free_window(WINDOW_SIZE)
        window = WindowClaims(lock_dir, ports)
        window.create_lock_files()
        server = PortServer(work / "portserver.log")
        server.start()
        try:
            measured = measure_all(settings, window, server, work)
        finally:
            server.stop()

        log("running the benchmarks of other modules")
        extras = [
            run_extra(name, title, quick, settings)
            for name, title in EXTRA_MODULES.items()
        ]
        latency, herds, fills = measured
        targets = evaluate_targets(latency, herds, fills)
        profiles = profile_misses(targets, ports, work)
    machine["Load average at the end"] = load_average()

    page = Page(
        command=command,
        machine=machine,
        latency=latency,
        herds=herds,
        fills=fills,
        targets=targets,
        settings=settings.describe(),
        notes=write_notes(server, ports),
        extras=[extra for extra in extras if extra is not None],
        profiles=profiles,
    )
    output.mkdir(parents=True, exist_ok=True)
    draw_chart(page, output / "benchmarks.png")
    (output / "benchmarks.md").write_text(render_page(page, "benchmarks.png"))
    for target in targets:
        print(f"{target.verdict}  {target.name}: {target.measured}")
    log(f"wrote {output / 'benchmarks.md'} and {output / 'benchmarks.png'}")


def measure_all(
    settings: Settings, window: WindowClaims, server: PortServer, work: Path
) -> tuple[list[LatencyRow], HerdTable, list[FillRow]]:
    log("measuring the latency of one claim")
    pickers = sync_pickers(window, server)
    strategy = PortSelectionStrategy(window.ports)
    samples = LatencyRun(pickers, strategy, BATCH_SCALE).run(
        settings.rounds, settings.batch
    )
    latency = [
        LatencyRow.from_samples(name, durations) for name, durations in samples.items()
    ]

    log("starting herds of processes")
    portserver = server.address if server.problem is None else None
    jobs = run_herds(settings, window, portserver, work)
    herds = summarize_herds(jobs, HERD_CANDIDATES)

    log("filling the window")
    fills = run_fills(settings, window, work)
    return latency, herds, fills


def module_command(module: str, *arguments: str) -> list[str]:
    return [sys.executable, "-m", f"tests.benchmarks.{module}", *arguments]


def child_environment() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}


def run_module(module: str, *arguments: str, timeout: float) -> str:
    result = subprocess.run(
        module_command(module, *arguments),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
        env=child_environment(),
    )
    if result.returncode != 0:
        msg = f"tests.benchmarks.{module} failed with exit code {result.returncode}: {result.stderr[-2000:]}"
        raise RuntimeError(msg)
    return result.stdout


def run_herds(
    settings: Settings, window: WindowClaims, portserver: str | None, work: Path
) -> list[dict[str, Any]]:
    rng = random.Random()
    candidates = [
        name
        for name in HERD_CANDIDATES
        if portserver is not None or name != PORTPICKER_SERVER
    ]
    jobs: list[list[object]] = []
    for _ in range(settings.herd_trials):
        for size in HERD_SIZES:
            order = list(candidates)
            rng.shuffle(order)
            jobs += [[name, size] for name in order]
    config = work / "herd.json"
    config.write_text(
        json.dumps(
            {
                "lock_dir": str(window.lock_dir),
                "ports": window.ports,
                "portserver": portserver,
                "jobs": jobs,
            }
        )
    )
    output = run_module("herd", str(config), timeout=1800)
    return [json.loads(line) for line in output.splitlines()]


def run_fills(settings: Settings, window: WindowClaims, work: Path) -> list[FillRow]:
    config = work / "fill.json"
    config.write_text(
        json.dumps({"lock_dir": str(window.lock_dir), "ports": window.ports})
    )
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in FILL_CANDIDATES}
    rng = random.Random()
    for _ in range(settings.fill_rounds):
        order = list(FILL_CANDIDATES)
        rng.shuffle(order)
        for name in order:
            rounds[name].append(
                json.loads(run_module("fill", name, str(config), timeout=600))
            )
    return [FillRow.from_rounds(name, results) for name, results in rounds.items()]


def evaluate_targets(
    latency: list[LatencyRow], herds: HerdTable, fills: list[FillRow]
) -> list[Target]:
    rows = {row.name: row for row in latency}
    return [*latency_targets(rows), *herd_targets(herds, rows), *fill_targets(fills)]


def latency_targets(rows: dict[str, LatencyRow]) -> list[Target]:
    claim, trio = rows[CLAIM_PORT], rows[CLAIM_PORT_TRIO]
    minimal, picker = rows[MINIMAL], rows[PORTPICKER]
    return [
        ratio_target(
            "claim_port p50 at most 1.5x the minimal correct claim (asyncio)",
            claim.p50,
            minimal.p50,
            1.5,
        ),
        ratio_target(
            "claim_port p50 at most 1.5x the minimal correct claim (trio)",
            trio.p50,
            minimal.p50,
            1.5,
        ),
        Target(
            "claim_port p50 below portpicker without a server",
            f"{claim.p50:.1f} µs against {picker.p50:.1f} µs ({claim.p50 / picker.p50:.2f}x)",
            claim.p50 < picker.p50,
            note=(
                f"portpicker costs {picker.p50 / minimal.p50:.2f}x the minimal correct "
                "claim here: it binds and closes, with no lock, no probe and no record, "
                "so beating it leaves the claim's Python layers (context manager, "
                "selector, claimer) less time than they take"
            ),
        ),
    ]


def herd_targets(herds: HerdTable, rows: dict[str, LatencyRow]) -> list[Target]:
    largest = HERD_SIZES[-1]
    floor_p99 = percentile(herds[LOCK_FLOOR][largest].pick_micros, 0.99)
    tail = ratio_target(
        f"claim_port p99 in the {largest}-process herd at most 1.5x the lock file + bind floor's",
        percentile(herds[CLAIM_PORT][largest].pick_micros, 0.99),
        floor_p99,
        1.5,
    )
    minimal_p99 = percentile(herds[MINIMAL][largest].pick_micros, 0.99)
    single = rows[CLAIM_PORT].p50 / rows[LOCK_FLOOR].p50
    tail.note = (
        f"in one process claim_port costs {single:.1f}x the floor (p50 above), "
        f"and the minimal correct claim's herd p99 is {minimal_p99 / floor_p99:.1f}x "
        "the floor's, because the floor skips the inode check, the probe and the record. "
        "With 64 processes on 2 cores, a claim that runs longer is more often "
        "preempted before it ends, so the herd's tail follows the single-claim cost"
    )

    cells = herds[CLAIM_PORT].values()
    duplicates = sum(cell.duplicates for cell in cells)
    failures = sum(cell.bind_failures + cell.errors for cell in cells)
    claims = sum(cell.workers for cell in cells)
    exclusive = Target(
        "claim_port: no duplicates and no bind failures in any herd",
        f"{duplicates} duplicates, {failures} bind failures or errors in {claims} claims",
        duplicates == 0 and failures == 0,
    )
    return [tail, exclusive]


def fill_targets(fills: list[FillRow]) -> list[Target]:
    return [
        Target(
            f"filling 2,000 ports: last 1 % of claims at most 10x the first 1 % ({row.name})",
            f"{row.last_percent:.1f} µs against {row.first_percent:.1f} µs ({row.growth:.1f}x)",
            row.growth <= 10,
        )
        for row in fills
        if row.name in (CLAIM_PORT, CLAIM_PORT_TRIO)
    ]


def ratio_target(name: str, value: float, reference: float, limit: float) -> Target:
    ratio = value / reference
    return Target(
        name,
        f"{value:.1f} µs against {reference:.1f} µs ({ratio:.2f}x)",
        ratio <= limit,
    )


def profile_misses(
    targets: list[Target], ports: list[int], work: Path
) -> dict[str, str]:
    """Profile claim_port where a target about it was missed, and point the target there."""
    profiles: dict[str, str] = {}
    latency_misses = [
        t for t in targets if not t.passed and ("p50" in t.name or "p99" in t.name)
    ]
    fill_misses = [t for t in targets if not t.passed and "filling" in t.name]
    if latency_misses:
        log("profiling claim_port latency")
        title = "2,000 claims with claim_port on asyncio"
        profiles[title] = anyio.run(profile_claims, PortSelectionStrategy(ports), 2000)
        for target in latency_misses:
            target.add_note(f"see the profile of {title} below")
    if fill_misses:
        log("profiling the end of a fill")
        config = work / "fill.json"
        output = run_module("fill", CLAIM_PORT, str(config), "--profile", timeout=600)
        title = "the last 5 % of a fill with claim_port on asyncio"
        profiles[title] = json.loads(output)["profile"]
        for target in fill_misses:
            target.add_note(f"see the profile of {title} below")
    return profiles


async def profile_claims(strategy: PortSelectionStrategy, count: int) -> str:
    for _ in range(100):
        async with claim_port(strategy):
            pass
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(count):
        async with claim_port(strategy):
            pass
    profiler.disable()
    return format_profile(profiler)


def format_profile(profiler: cProfile.Profile) -> str:
    """Render the functions of aioportclaim by cumulative time, then all by own time."""
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("cumulative").print_stats("aioportclaim", 25)
    stats.sort_stats("tottime").print_stats(15)
    return text.getvalue()


def run_extra(
    module_name: str, title: str, quick: bool, settings: Settings
) -> Extra | None:
    """Run a benchmark module that others maintain, if it exists.

    A module may offer ``run_benchmark(quick: bool) -> list[dict]``, one dict
    per table row. bench_metrics.py offers ``measure(rounds)`` and
    redis_latency.py ``measure_redis_claim_latency(url, samples, backend)``
    instead. Any other module runs as a script without arguments and its
    output is shown. These run after the interleaved measurements.
    """
    path = Path(__file__).with_name(f"{module_name}.py")
    if not path.exists():
        return None
    extra = Extra(title)
    try:
        module = importlib.import_module(f"tests.benchmarks.{module_name}")
        if hasattr(module, "run_benchmark"):
            extra.rows = list(module.run_benchmark(quick=quick))
        elif hasattr(module, "measure"):
            rounds = 300 if quick else 2000
            extra.rows = metrics_rows(anyio.run(module.measure, rounds))
        elif hasattr(module, "measure_redis_claim_latency"):
            extra.rows = redis_rows(module.measure_redis_claim_latency, quick)
        else:
            extra.text = run_module(module_name, timeout=settings.extra_timeout)
    except Exception as error:  # another module's failure must not lose this page
        extra.problem = f"{type(error).__name__}: {error}"
        log(f"{module_name} failed: {extra.problem}")
    return extra


def metrics_rows(results: list[tuple[str, float, float]]) -> list[dict[str, object]]:
    return [
        {
            "Scenario": name,
            "p50 without µs": f"{without * 1e6:.1f}",
            "p50 with a MemoryRecorder µs": f"{with_recorder * 1e6:.1f}",
            "Ratio": f"{with_recorder / without:.3f}",
        }
        for name, without, with_recorder in results
    ]


def redis_rows(
    measure: Callable[..., dict[str, dict[str, float]]], quick: bool
) -> list[dict[str, object]]:
    """Time claim_port through a private redis-server on loopback, on both backends."""
    from tests.redis_server import start_redis_server

    if shutil.which("redis-server") is None:
        msg = "redis-server is not installed; install it to measure the Redis registry"
        raise RuntimeError(msg)
    samples = 100 if quick else 500
    rows: list[dict[str, object]] = []
    with start_redis_server(tcp=True) as server:
        for backend in ("asyncio", "trio"):
            result = measure(server.tcp_url, samples=samples, backend=backend)
            rows.extend(
                {
                    "Backend": backend,
                    "Phase": phase,
                    "p50 ms": f"{values['p50_ms']:.3f}",
                    "p99 ms": f"{values['p99_ms']:.3f}",
                    "Samples": samples,
                }
                for phase, values in result.items()
            )
    return rows


def write_notes(server: PortServer, ports: list[int]) -> list[str]:
    notes = [
        f"The locked candidates (claim_port and the lock-file claims) claim from {len(ports)} ports, {ports[0]}-{ports[-1]}, all free when the run began; the peers pick from their own ranges.",
        "claim_port is called as `claim_port(strategy)` with a strategy built once over that window. It is also called as `claim_port()` with the host's default ports: most of those claims meet a port without a lock file and create one, which dominates their cost.",
        "The minimal correct claim writes a holder record of about 30 bytes; claim_port writes a JSON record with host, container and start time.",
        "port-for and ephemeral-port-reserve ran a tenth and a quarter of the batch size: port-for takes milliseconds per call, and each ephemeral-port-reserve call leaves a connection in TIME_WAIT for 60 s.",
        "Herd children are forked from one process that has made one claim. Each child picks and releases one port before the common start, so the timed pick runs on warm caches in every candidate, as in a long-running test worker.",
    ]
    if server.problem is not None:
        notes.append(
            f"portpicker with its port server was not measured: {server.problem}."
        )
    else:
        notes.append(
            "portpicker's port server ran as `portserver.py --portserver_address @NAME` "
            "(an abstract unix socket) with its default pool of ports 15000-24999."
        )
    return notes


def describe_machine() -> dict[str, str]:
    return {
        "Date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "CPU": f"{cpu_model()}, {os.cpu_count()} cores",
        "Kernel": f"{platform.system()} {platform.release()}",
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "Load average at the start": load_average(),
    }


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())
