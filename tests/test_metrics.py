"""Metrics of the claim path: exact counts under contention, exporters, logs."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import urllib.request
from typing import TYPE_CHECKING

import anyio
import pytest
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from aioportclaim import (
    ClaimKey,
    ClaimLostError,
    ClaimTimeoutError,
    FileLockRegistry,
    MemoryRegistry,
    PortClaimer,
    PortExhaustedError,
    PortSelectionStrategy,
    RedisRegistry,
    Registry,
    RobustPortSelector,
    claim_port,
    open_claim,
    reserve_port,
)
from aioportclaim import _claimer as claimer_module
from aioportclaim.metrics import (
    FAILURE_REASONS,
    LATENCY_BUCKETS,
    MemoryRecorder,
    MetricsRecorder,
    OpenTelemetryRecorder,
    PrometheusRecorder,
    RepeatLimiter,
    format_snapshot,
    get_default_recorder,
    set_default_recorder,
)

from .conftest import HELPERS, count_open_fds, find_free_ports

# Importing the fixture registers it for this module's tests.
from .redis_server import redis_server_fixture  # noqa: F401

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from opentelemetry.sdk.metrics.export import MetricsData

    from .redis_server import RedisServer


@pytest.fixture
def recorder() -> MemoryRecorder:
    return MemoryRecorder()


@pytest.fixture
def clean_default() -> Iterator[None]:
    """Leave the process-wide default recorder as the test found it."""
    previous = get_default_recorder()
    set_default_recorder(None)
    yield
    set_default_recorder(previous, replace=True)


def hold_lock_in_child(port: int, lock_dir: Path) -> subprocess.Popen[str]:
    """Start a child process that claims `port` in `lock_dir` and keeps it until stdin closes."""
    child = subprocess.Popen(
        [sys.executable, str(HELPERS / "hold_claim.py"), str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "AIOPORTCLAIM_LOCK_DIR": str(lock_dir)},
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.split() == ["CLAIMED", str(port)]
    return child


def listen_on(port: int) -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


class TestClaimCounters:
    async def test_counters_match_contended_claims(
        self, registry: FileLockRegistry, lock_dir: Path, recorder: MemoryRecorder
    ) -> None:
        ports = find_free_ports(10)
        shared, in_use, locked, rejected, free, lost = ports[:6]
        block_bases = ports[6:9]
        fds_before = count_open_fds()
        child = hold_lock_in_child(locked, lock_dir)
        try:
            with listen_on(in_use), anyio.fail_after(20):
                won, exhausted = await self._contend(shared, registry, recorder)
                await self._fail_each_way(
                    (in_use, locked, rejected), block_bases, registry, recorder
                )
                await self._lose_during_verification(lost, registry, recorder)
                async with claim_port(free, registry=registry, metrics=recorder):
                    held_inside = recorder.snapshot()["held"]
        finally:
            child.communicate("", timeout=30)
        snapshot = recorder.snapshot()

        assert won == 1
        assert exhausted == 2
        assert held_inside == 1
        # Contention 3, range 3, exact ports 2, blocks 2, lost 1, free 1.
        assert snapshot["attempts"] == 12
        assert snapshot["successes"] == 3
        assert snapshot["releases"] == 3
        assert snapshot["held"] == 0
        expected = {
            "in_use": 2,
            "locked": 4,
            "excluded": 2,
            "validator": 1,
            "exhausted": 5,
            "timeout": 2,
            "lost": 1,
        }
        for reason, count in expected.items():
            assert snapshot["failures"][reason] == count, reason
        assert snapshot["claim_duration"]["count"] == 2
        assert snapshot["lock_wait"]["count"] == 1
        assert count_open_fds() == fds_before

    async def _contend(
        self, port: int, registry: FileLockRegistry, recorder: MemoryRecorder
    ) -> tuple[int, int]:
        # Three tasks race for one port, and the winner keeps it until all have tried.
        outcomes: list[str] = []
        all_tried = anyio.Event()

        def tried(outcome: str) -> None:
            outcomes.append(outcome)
            if len(outcomes) == 3:
                all_tried.set()

        async def claim_shared() -> None:
            strategy = PortSelectionStrategy([port])
            try:
                async with open_claim(
                    strategy, registry=registry, timeout=0, metrics=recorder
                ):
                    tried("won")
                    await all_tried.wait()
            except PortExhaustedError:
                tried("exhausted")

        async with anyio.create_task_group() as group:
            for _ in range(3):
                group.start_soon(claim_shared)
        return outcomes.count("won"), outcomes.count("exhausted")

    async def _fail_each_way(
        self,
        busy: tuple[int, int, int],
        block_bases: list[int],
        registry: FileLockRegistry,
        recorder: MemoryRecorder,
    ) -> None:
        in_use, locked, rejected = busy
        # A range whose ports are in use, locked by the child, and rejected.
        strategy = PortSelectionStrategy([in_use, locked, rejected]).add_validator(
            lambda port: port != rejected
        )
        with pytest.raises(PortExhaustedError):
            async with open_claim(
                strategy, registry=registry, timeout=0, metrics=recorder
            ):
                pass

        for port in (locked, in_use):
            with pytest.raises(ClaimTimeoutError):
                async with claim_port(
                    port, registry=registry, timeout=0, metrics=recorder
                ):
                    pass

        # Both blocks of two reach a port outside the allowed set.
        blocks = PortSelectionStrategy(block_bases).exclude_ports(block_bases[1])
        with pytest.raises(PortExhaustedError):
            async with open_claim(
                blocks, registry=registry, count=2, timeout=0, metrics=recorder
            ):
                pass

    async def _lose_during_verification(
        self, port: int, registry: FileLockRegistry, recorder: MemoryRecorder
    ) -> None:
        # A cleaner replaces the lock file while the claim waits to verify.
        path = registry.lock_path(ClaimKey(registry.scope(), "tcp", port))

        async def replace_lock_file() -> None:
            await anyio.sleep(0.05)
            os.unlink(path)

        async with anyio.create_task_group() as group:
            group.start_soon(replace_lock_file)
            selector = RobustPortSelector([port], registry, metrics=recorder)
            with pytest.raises(PortExhaustedError):
                await selector.select_and_claim(
                    max_attempts=1, timeout=5, verify_delay=0.3
                )

    async def test_lock_wait_covers_busy_time(
        self, registry: FileLockRegistry, recorder: MemoryRecorder
    ) -> None:
        [port] = find_free_ports(1)
        first = PortClaimer(port, registry=registry)
        assert await first.try_claim()

        async def release_soon() -> None:
            await anyio.sleep(0.2)
            await first.release()

        async with anyio.create_task_group() as group:
            group.start_soon(release_soon)
            async with claim_port(port, registry=registry, timeout=5, metrics=recorder):
                snapshot = recorder.snapshot()

        waited = snapshot["lock_wait"]
        assert waited["count"] == 1
        assert waited["sum"] >= 0.15
        assert snapshot["claim_duration"]["count"] == 1
        assert snapshot["claim_duration"]["sum"] >= waited["sum"]
        assert snapshot["attempts"] >= 2
        assert snapshot["attempts"] == 1 + snapshot["failures"]["locked"]

    async def test_verify_claim_counts_lost(
        self, registry: FileLockRegistry, recorder: MemoryRecorder
    ) -> None:
        async with open_claim(registry=registry, metrics=recorder) as claim:
            claim.socket.close()
            with pytest.raises(ClaimLostError):
                await claim.verify_claim()

        snapshot = recorder.snapshot()
        assert snapshot["failures"]["lost"] == 1
        assert snapshot["releases"] == 1

    async def test_claimer_alone_records_no_duration(
        self, registry: FileLockRegistry, recorder: MemoryRecorder
    ) -> None:
        [port] = find_free_ports(1)
        async with PortClaimer(port, registry=registry, metrics=recorder):
            pass

        snapshot = recorder.snapshot()
        assert snapshot["attempts"] == 1
        assert snapshot["successes"] == 1
        assert snapshot["releases"] == 1
        assert snapshot["claim_duration"]["count"] == 0

    async def test_failed_try_records_reason(
        self, registry: FileLockRegistry, recorder: MemoryRecorder
    ) -> None:
        [port] = find_free_ports(1)
        with listen_on(port):
            claimer = PortClaimer(port, registry=registry, metrics=recorder)
            assert not await claimer.try_claim()

        snapshot = recorder.snapshot()
        assert snapshot["failures"]["in_use"] == 1
        assert snapshot["successes"] == 0


@pytest.mark.usefixtures("clean_default")
class TestRecorderChoice:
    async def test_default_recorder_used_without_argument(
        self, registry: FileLockRegistry, recorder: MemoryRecorder
    ) -> None:
        set_default_recorder(recorder)
        async with claim_port(registry=registry):
            pass

        assert recorder.snapshot()["successes"] == 1

    async def test_registry_recorder_beats_default(self, lock_dir: Path) -> None:
        default, own = MemoryRecorder(), MemoryRecorder()
        set_default_recorder(default)
        async with claim_port(registry=FileLockRegistry(lock_dir, metrics=own)):
            pass

        assert own.snapshot()["successes"] == 1
        assert default.snapshot()["attempts"] == 0

    async def test_claim_recorder_beats_registry(self) -> None:
        own, explicit = MemoryRecorder(), MemoryRecorder()
        registry = MemoryRegistry(metrics=own)
        async with claim_port(registry=registry, metrics=explicit):
            pass

        assert explicit.snapshot()["successes"] == 1
        assert own.snapshot()["attempts"] == 0

    async def test_redis_registry_recorder_used(
        self, redis_server: RedisServer
    ) -> None:
        default, own = MemoryRecorder(), MemoryRecorder()
        set_default_recorder(default)
        async with RedisRegistry(redis_server.url, lease=1.0, metrics=own) as registry:
            async with claim_port(registry=registry):
                pass

        assert registry.metrics is own
        assert own.snapshot()["successes"] == 1
        assert own.snapshot()["releases"] == 1
        assert default.snapshot()["attempts"] == 0

    async def test_reserve_port_recorder_beats_registry(self, lock_dir: Path) -> None:
        own, explicit = MemoryRecorder(), MemoryRecorder()
        registry = FileLockRegistry(lock_dir, metrics=own)
        async with reserve_port(registry=registry, metrics=explicit) as reservation:
            reservation.release_socket()

        assert explicit.snapshot()["successes"] == 1
        assert explicit.snapshot()["releases"] == 1
        assert own.snapshot()["attempts"] == 0

    def test_registry_base_has_no_recorder(self) -> None:
        assert Registry.metrics is None
        assert RedisRegistry("redis://127.0.0.1").metrics is None

    async def test_no_recorder_leaves_metrics_unset(
        self, registry: FileLockRegistry
    ) -> None:
        async with open_claim(registry=registry) as claim:
            assert claim.metrics is None

    def test_setting_other_default_raises(self) -> None:
        first, second = MemoryRecorder(), MemoryRecorder()
        set_default_recorder(first)

        with pytest.raises(RuntimeError, match="replace=True"):
            set_default_recorder(second)
        assert get_default_recorder() is first

    def test_setting_same_default_keeps_it(self) -> None:
        recorder = MemoryRecorder()
        set_default_recorder(recorder)

        assert set_default_recorder(recorder) is recorder
        assert get_default_recorder() is recorder

    def test_replace_swaps_default(self) -> None:
        first, second = MemoryRecorder(), MemoryRecorder()
        set_default_recorder(first)

        assert set_default_recorder(second, replace=True) is first
        assert get_default_recorder() is second

    def test_none_clears_default(self) -> None:
        set_default_recorder(MemoryRecorder())
        set_default_recorder(None)

        assert get_default_recorder() is None

    def test_base_recorder_ignores_events(self) -> None:
        recorder = MetricsRecorder()
        recorder.record_attempt()
        recorder.record_failure("lost")
        recorder.record_claim_duration(0.1)

        assert set_default_recorder(recorder) is None


class TestMemoryRecorder:
    def test_snapshot_starts_empty(self, recorder: MemoryRecorder) -> None:
        snapshot = recorder.snapshot()

        assert list(snapshot["failures"]) == list(FAILURE_REASONS)
        assert set(snapshot["failures"].values()) == {0}
        assert snapshot["claim_duration"] == {
            "count": 0,
            "sum": 0.0,
            "min": None,
            "max": None,
            "p50": None,
            "p90": None,
            "p99": None,
        }

    def test_snapshot_survives_json(self, recorder: MemoryRecorder) -> None:
        recorder.record_failure("lost")
        recorder.record_lock_wait(0.5)
        snapshot = recorder.snapshot()

        assert json.loads(json.dumps(snapshot)) == snapshot

    def test_summary_uses_nearest_rank(self, recorder: MemoryRecorder) -> None:
        for value in range(100, 0, -1):
            recorder.record_claim_duration(value / 1000)

        summary = recorder.snapshot()["claim_duration"]
        assert summary["count"] == 100
        assert summary["sum"] == pytest.approx(5.05)
        assert summary["min"] == 0.001
        assert summary["max"] == 0.1
        assert summary["p50"] == 0.05
        assert summary["p90"] == 0.09
        assert summary["p99"] == 0.099

    def test_window_limits_percentiles_only(self) -> None:
        recorder = MemoryRecorder(window=2)
        for value in (9.0, 1.0, 2.0):
            recorder.record_lock_wait(value)

        summary = recorder.snapshot()["lock_wait"]
        assert summary["count"] == 3
        assert summary["max"] == 9.0
        assert summary["p99"] == 2.0

    def test_threads_lose_no_update(self, recorder: MemoryRecorder) -> None:
        def record_many() -> None:
            for _ in range(5000):
                recorder.record_attempt()
                recorder.record_success()
                recorder.record_failure("locked")
                recorder.record_release()
                recorder.record_claim_duration(0.001)

        threads = [threading.Thread(target=record_many) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)

        snapshot = recorder.snapshot()
        assert snapshot["attempts"] == 20_000
        assert snapshot["successes"] == 20_000
        assert snapshot["releases"] == 20_000
        assert snapshot["failures"]["locked"] == 20_000
        assert snapshot["claim_duration"]["count"] == 20_000

    def test_invalid_window_rejected(self) -> None:
        with pytest.raises(ValueError, match="invalid window 0"):
            MemoryRecorder(window=0)

    def test_format_snapshot_lists_everything(self, recorder: MemoryRecorder) -> None:
        recorder.record_attempt()
        recorder.record_failure("timeout")
        recorder.record_claim_duration(0.0025)

        text = format_snapshot(recorder.snapshot())
        assert text.splitlines() == [
            "attempts 1, successes 0, releases 0, held 0",
            "failures: in_use 0, locked 0, excluded 0, validator 0, exhausted 0, timeout 1, lost 0",
            "claim duration (ms, 1 observed): p50 2.500, p90 2.500, p99 2.500, min 2.500, max 2.500",
            "lock wait: none observed",
        ]


def scrape(port: int) -> str:
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def samples_by_name(text: str) -> dict[tuple[str, str], float]:
    """Map (sample name, reason label or "") to the value, from the text format."""
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name, sample.labels.get("reason", "")] = sample.value
    return values


class TestPrometheusRecorder:
    async def test_scrape_shows_claim_metrics(self, registry: FileLockRegistry) -> None:
        collectors = CollectorRegistry()
        recorder = PrometheusRecorder(collectors)
        [busy] = find_free_ports(1)
        with listen_on(busy), pytest.raises(ClaimTimeoutError):
            async with claim_port(busy, registry=registry, timeout=0, metrics=recorder):
                pass

        async with (
            open_claim(registry=registry, metrics=recorder),
            open_claim(registry=registry, listen=False) as served,
        ):
            # The exporter binds the claimed port itself, so the claim only
            # keeps its lock while the server runs.
            served.close_sockets()
            server, thread = start_http_server(
                served.port, addr="127.0.0.1", registry=collectors
            )
            try:
                text = await anyio.to_thread.run_sync(scrape, served.port)
            finally:
                server.shutdown()
                server.server_close()
                thread.join(timeout=5)

        values = samples_by_name(text)
        assert values["aioportclaim_claim_attempts_total", ""] == 2
        assert values["aioportclaim_claims_total", ""] == 1
        assert values["aioportclaim_releases_total", ""] == 0
        assert values["aioportclaim_claims_held", ""] == 1
        assert values["aioportclaim_claim_failures_total", "in_use"] == 1
        assert values["aioportclaim_claim_failures_total", "timeout"] == 1
        for reason in ("locked", "excluded", "validator", "exhausted", "lost"):
            assert values["aioportclaim_claim_failures_total", reason] == 0, reason
        assert values["aioportclaim_claim_duration_seconds_count", ""] == 1
        assert values["aioportclaim_lock_wait_seconds_count", ""] == 0

    def test_metric_types_in_exposition(self) -> None:
        collectors = CollectorRegistry()
        PrometheusRecorder(collectors)

        types = {family.name: family.type for family in collectors.collect()}
        assert types == {
            "aioportclaim_claim_attempts": "counter",
            "aioportclaim_claims": "counter",
            "aioportclaim_claim_failures": "counter",
            "aioportclaim_releases": "counter",
            "aioportclaim_claims_held": "gauge",
            "aioportclaim_claim_duration_seconds": "histogram",
            "aioportclaim_lock_wait_seconds": "histogram",
        }

    def test_buckets_fit_fast_claims(self) -> None:
        collectors = CollectorRegistry()
        PrometheusRecorder(collectors).record_claim_duration(0.00005)

        first_bucket = collectors.get_sample_value(
            "aioportclaim_claim_duration_seconds_bucket", {"le": "0.0001"}
        )
        assert first_bucket == 1

    def test_second_recorder_on_registry_raises(self) -> None:
        collectors = CollectorRegistry()
        PrometheusRecorder(collectors)

        with pytest.raises(ValueError, match="one PrometheusRecorder per registry"):
            PrometheusRecorder(collectors)

    def test_missing_client_names_extra(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(sys.modules, "prometheus_client", None)

        with pytest.raises(ImportError, match=r"aioportclaim\[prometheus\]"):
            PrometheusRecorder()


def collect_points(data: MetricsData | None) -> dict[str, list[object]]:
    assert data is not None
    return {
        metric.name: list(metric.data.data_points)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }


class TestOpenTelemetryRecorder:
    async def test_reader_sees_claim_metrics(self, registry: FileLockRegistry) -> None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import (
            HistogramDataPoint,
            InMemoryMetricReader,
            NumberDataPoint,
        )

        reader = InMemoryMetricReader()
        provider = MeterProvider(metric_readers=[reader])
        recorder = OpenTelemetryRecorder(meter_provider=provider)
        [busy] = find_free_ports(1)
        try:
            with listen_on(busy), pytest.raises(ClaimTimeoutError):
                async with claim_port(
                    busy, registry=registry, timeout=0, metrics=recorder
                ):
                    pass
            async with open_claim(registry=registry, metrics=recorder):
                pass
            points = collect_points(reader.get_metrics_data())
        finally:
            provider.shutdown()

        def value(name: str, reason: str | None = None) -> float:
            for point in points[name]:
                assert isinstance(point, NumberDataPoint)
                if reason is None or (point.attributes or {}).get("reason") == reason:
                    return point.value
            msg = f"no data point for {name} with reason {reason}"
            raise AssertionError(msg)

        assert value("aioportclaim_claim_attempts_total") == 2
        assert value("aioportclaim_claims_total") == 1
        assert value("aioportclaim_releases_total") == 1
        assert value("aioportclaim_claims_held") == 0
        assert value("aioportclaim_claim_failures_total", "in_use") == 1
        assert value("aioportclaim_claim_failures_total", "timeout") == 1
        [duration] = points["aioportclaim_claim_duration_seconds"]
        assert isinstance(duration, HistogramDataPoint)
        assert duration.count == 1
        assert tuple(duration.explicit_bounds) == LATENCY_BUCKETS

    def test_meter_and_provider_together_rejected(self) -> None:
        from opentelemetry.metrics import NoOpMeter, NoOpMeterProvider

        with pytest.raises(ValueError, match="not both"):
            OpenTelemetryRecorder(NoOpMeter("x"), meter_provider=NoOpMeterProvider())

    def test_missing_api_names_extra(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(sys.modules, "opentelemetry.metrics", None)

        with pytest.raises(ImportError, match=r"aioportclaim\[opentelemetry\]"):
            OpenTelemetryRecorder()


def fields_of(record: logging.LogRecord) -> dict[str, object]:
    return {
        name: record.__dict__.get(name, "missing")
        for name in ("port", "protocol", "app_id", "registry")
    }


class TestClaimLogs:
    async def test_claim_records_carry_fields(
        self, registry: FileLockRegistry, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, logger="aioportclaim")
        async with open_claim(
            registry=registry, app_id="web", kind=("tcp", "udp")
        ) as claim:
            port = claim.port

        messages = [record for record in caplog.records if "claimed" in record.message]
        assert len(messages) == 1
        assert fields_of(messages[0]) == {
            "port": port,
            "protocol": "tcp+udp",
            "app_id": "web",
            "registry": "file",
        }

    async def test_exhausted_record_carries_fields(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, logger="aioportclaim")
        [port] = find_free_ports(1)
        strategy = PortSelectionStrategy([port]).add_validator(lambda _: False)
        with pytest.raises(PortExhaustedError):
            async with open_claim(
                strategy, registry=MemoryRegistry(), app_id="api", timeout=0
            ):
                pass

        [record] = [
            r for r in caplog.records if "no port could be claimed" in r.message
        ]
        assert record.name == "aioportclaim._selector"
        assert fields_of(record) == {
            "port": None,
            "protocol": "tcp",
            "app_id": "api",
            "registry": "memory",
        }

    async def test_busy_polls_logged_once(
        self,
        registry: FileLockRegistry,
        recorder: MemoryRecorder,
        caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        # A fresh limiter, so records of earlier tests on this port do not count.
        limiter = RepeatLimiter(claimer_module.logger)
        monkeypatch.setattr(claimer_module, "_repeat_log", limiter)
        caplog.set_level(logging.DEBUG, logger="aioportclaim")
        [port] = find_free_ports(1)
        with listen_on(port), pytest.raises(ClaimTimeoutError):
            async with claim_port(
                port, registry=registry, timeout=0.3, metrics=recorder
            ):
                pass

        busy = [record for record in caplog.records if "is busy" in record.message]
        assert recorder.snapshot()["attempts"] >= 3
        assert len(busy) == 1
        assert fields_of(busy[0])["port"] == port
        assert busy[0].__dict__["repeated"] == 0


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class TestRepeatLimiter:
    @pytest.fixture
    def clock(self) -> FakeClock:
        return FakeClock()

    @pytest.fixture
    def limiter(self, clock: FakeClock) -> RepeatLimiter:
        logger = logging.getLogger("aioportclaim.tests.limiter")
        return RepeatLimiter(logger, interval=10.0, clock=clock, max_keys=2)

    @pytest.fixture(autouse=True)
    def _capture(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.DEBUG, logger="aioportclaim.tests.limiter")

    def test_repeats_within_interval_dropped(
        self,
        limiter: RepeatLimiter,
        clock: FakeClock,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        for second in (0.0, 1.0, 2.0, 9.9):
            clock.now = second
            limiter.log(logging.WARNING, "port %d is busy", 80, key=80)

        assert [record.message for record in caplog.records] == ["port 80 is busy"]

    def test_summary_after_interval(
        self,
        limiter: RepeatLimiter,
        clock: FakeClock,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        for second in (0.0, 1.0, 2.0, 3.0, 12.5):
            clock.now = second
            limiter.log(logging.INFO, "port %d is busy", 80, key=80, extra={"port": 80})

        last = caplog.records[-1]
        assert len(caplog.records) == 2
        assert last.message == (
            "port 80 is busy (3 similar messages suppressed in the last 12.5 s)"
        )
        assert last.__dict__["repeated"] == 3
        assert last.__dict__["port"] == 80

    def test_other_key_logged_at_once(
        self,
        limiter: RepeatLimiter,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        limiter.log(logging.INFO, "port %d is busy", 80, key=80)
        limiter.log(logging.INFO, "port %d is busy", 81, key=81)
        limiter.log(logging.INFO, "lost port %d", 80, key=80)

        assert len(caplog.records) == 3

    def test_oldest_key_forgotten_past_limit(
        self,
        limiter: RepeatLimiter,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        for port in (80, 81, 82, 80):
            limiter.log(logging.INFO, "port %d is busy", port, key=port)

        assert len(caplog.records) == 4

    def test_disabled_level_not_counted(
        self,
        limiter: RepeatLimiter,
        clock: FakeClock,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        caplog.set_level(logging.INFO, logger="aioportclaim.tests.limiter")
        limiter.log(logging.DEBUG, "port %d is busy", 80, key=80)
        clock.now = 1.0
        limiter.log(logging.INFO, "port %d is busy", 80, key=80)

        assert [record.__dict__["repeated"] for record in caplog.records] == [0]

    def test_record_points_at_caller(
        self, limiter: RepeatLimiter, caplog: pytest.LogCaptureFixture
    ) -> None:
        limiter.log(logging.INFO, "port %d is busy", 80, key=80)

        assert caplog.records[0].funcName == "test_record_points_at_caller"
