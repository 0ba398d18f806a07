"""MemoryRecorder: counters and latency summaries kept in this process."""

from __future__ import annotations

import math
import threading
from collections import deque
from typing import TypedDict

from ._metrics_base import FAILURE_REASONS, FailureReason, MetricsRecorder

#: Observations per histogram that `MemoryRecorder` keeps for percentiles.
DEFAULT_WINDOW = 10_000


class LatencySummary(TypedDict):
    """Summary of one histogram in seconds, with None where no value was observed.

    `count`, `sum`, `min` and `max` cover every observation. The percentiles
    cover the most recent observations that the recorder keeps (its
    `window`), by the nearest-rank method.

    .. versionadded:: 0.1
    """

    count: int
    sum: float
    min: float | None
    max: float | None
    p50: float | None
    p90: float | None
    p99: float | None


class MetricsSnapshot(TypedDict):
    """Plain data from `MemoryRecorder.snapshot`, ready for `json.dumps`.

    `failures` always has every reason of `FAILURE_REASONS`, in that order,
    followed by any other reason that a caller recorded.

    .. versionadded:: 0.1
    """

    attempts: int
    successes: int
    releases: int
    held: int
    failures: dict[str, int]
    claim_duration: LatencySummary
    lock_wait: LatencySummary


class _Histogram:
    __slots__ = ("count", "maximum", "minimum", "recent", "total")

    def __init__(self, window: int) -> None:
        self.count = 0
        self.total = 0.0
        self.minimum = math.inf
        self.maximum = -math.inf
        self.recent: deque[float] = deque(maxlen=window)

    def observe(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        self.minimum = min(self.minimum, seconds)
        self.maximum = max(self.maximum, seconds)
        self.recent.append(seconds)


class MemoryRecorder(MetricsRecorder):
    """Keep the claim metrics in memory and return them with `snapshot`.

    Safe to share between threads and event loops: one lock guards every
    update. Each histogram keeps its last `window` observations for the
    percentiles, while counts, sums, minimum and maximum cover all of them.

    .. versionadded:: 0.1
    """

    def __init__(self, *, window: int = DEFAULT_WINDOW) -> None:
        if isinstance(window, bool) or window < 1:
            msg = f"invalid window {window!r}: expected the number of observations to keep, 1 or more"
            raise ValueError(msg)
        self.window = window
        self._lock = threading.Lock()
        self._attempts = 0
        self._successes = 0
        self._releases = 0
        self._failures: dict[str, int] = dict.fromkeys(FAILURE_REASONS, 0)
        self._claim_duration = _Histogram(window)
        self._lock_wait = _Histogram(window)

    def __repr__(self) -> str:
        return f"<MemoryRecorder {self._attempts} attempts, {self._successes - self._releases} held>"

    def record_attempt(self) -> None:
        with self._lock:
            self._attempts += 1

    def record_success(self) -> None:
        with self._lock:
            self._successes += 1

    def record_failure(self, reason: FailureReason) -> None:
        # A reason outside FAILURE_REASONS is counted under its own key
        # rather than raised, so a newer caller never breaks a claim.
        with self._lock:
            self._failures[reason] = self._failures.get(reason, 0) + 1

    def record_release(self) -> None:
        with self._lock:
            self._releases += 1

    def record_claim_duration(self, seconds: float) -> None:
        with self._lock:
            self._claim_duration.observe(seconds)

    def record_lock_wait(self, seconds: float) -> None:
        with self._lock:
            self._lock_wait.observe(seconds)

    def snapshot(self) -> MetricsSnapshot:
        """Return every counter and both latency summaries as plain data."""
        with self._lock:
            attempts, successes = self._attempts, self._successes
            releases, failures = self._releases, dict(self._failures)
            durations = _copy(self._claim_duration)
            waits = _copy(self._lock_wait)
        return {
            "attempts": attempts,
            "successes": successes,
            "releases": releases,
            "held": successes - releases,
            "failures": failures,
            "claim_duration": _summarize(*durations),
            "lock_wait": _summarize(*waits),
        }


def _copy(histogram: _Histogram) -> tuple[int, float, float, float, list[float]]:
    return (
        histogram.count,
        histogram.total,
        histogram.minimum,
        histogram.maximum,
        list(histogram.recent),
    )


def _summarize(
    count: int, total: float, minimum: float, maximum: float, recent: list[float]
) -> LatencySummary:
    if count == 0:
        return {
            "count": 0,
            "sum": 0.0,
            "min": None,
            "max": None,
            "p50": None,
            "p90": None,
            "p99": None,
        }
    recent.sort()
    return {
        "count": count,
        "sum": total,
        "min": minimum,
        "max": maximum,
        "p50": nearest_rank(recent, 50),
        "p90": nearest_rank(recent, 90),
        "p99": nearest_rank(recent, 99),
    }


def nearest_rank(ordered: list[float], percent: float) -> float:
    """Return the smallest value that at least `percent` % of `ordered` do not exceed."""
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


def format_snapshot(snapshot: MetricsSnapshot) -> str:
    """Render a snapshot as a few lines of text for people, with latencies in milliseconds.

    .. versionadded:: 0.1
    """
    failures = ", ".join(
        f"{reason} {count}" for reason, count in snapshot["failures"].items()
    )
    lines = [
        (
            f"attempts {snapshot['attempts']}, successes {snapshot['successes']}, "
            f"releases {snapshot['releases']}, held {snapshot['held']}"
        ),
        f"failures: {failures}",
        _format_summary("claim duration", snapshot["claim_duration"]),
        _format_summary("lock wait", snapshot["lock_wait"]),
    ]
    return "\n".join(lines)


def _format_summary(label: str, summary: LatencySummary) -> str:
    if summary["count"] == 0:
        return f"{label}: none observed"
    values = {
        "p50": summary["p50"],
        "p90": summary["p90"],
        "p99": summary["p99"],
        "min": summary["min"],
        "max": summary["max"],
    }
    parts = [f"{name} {_milliseconds(value)}" for name, value in values.items()]
    return f"{label} (ms, {summary['count']} observed): {', '.join(parts)}"


def _milliseconds(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.3f}"
