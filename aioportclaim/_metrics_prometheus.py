"""PrometheusRecorder: the claim metrics as prometheus_client collectors."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._metrics_base import (
    FAILURE_REASONS,
    LATENCY_BUCKETS,
    FailureReason,
    MetricsRecorder,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from prometheus_client import CollectorRegistry


def import_prometheus_client() -> object:
    """Import prometheus_client, or raise an ImportError that names the extra to install."""
    try:
        import prometheus_client
    except ImportError as error:
        msg = "PrometheusRecorder needs the prometheus_client package; install it with 'pip install aioportclaim[prometheus]'"
        raise ImportError(msg, name="prometheus_client") from error
    return prometheus_client


class PrometheusRecorder(MetricsRecorder):
    """Export the claim metrics through `prometheus_client`.

    Creates and registers these metrics in `registry`, or in the default
    ``prometheus_client.REGISTRY`` when it is None:

    - counters ``aioportclaim_claim_attempts_total``,
      ``aioportclaim_claims_total``, ``aioportclaim_claim_failures_total``
      with a ``reason`` label (every reason is exported from the start, at 0)
      and ``aioportclaim_releases_total``,
    - the gauge ``aioportclaim_claims_held``,
    - histograms ``aioportclaim_claim_duration_seconds`` and
      ``aioportclaim_lock_wait_seconds``, with `buckets` in seconds.

    One registry takes one recorder: create it once and share it, for
    example with `set_default_recorder`.

    Raises:
        ImportError: prometheus_client is not installed.
        ValueError: `registry` already has metrics of these names.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> None:
        import_prometheus_client()
        from prometheus_client import REGISTRY, Counter, Gauge, Histogram

        self.registry = registry if registry is not None else REGISTRY
        target = self.registry
        created: list[Counter | Gauge | Histogram] = []
        try:
            # prometheus_client appends "_total" to counter names itself.
            self._attempts = Counter(
                "aioportclaim_claim_attempts",
                "Tries of one candidate port or block: checked, or locked and bound.",
                registry=target,
            )
            created.append(self._attempts)
            self._successes = Counter(
                "aioportclaim_claims",
                "Attempts that took their locks and bound their sockets.",
                registry=target,
            )
            created.append(self._successes)
            self._failure_family = Counter(
                "aioportclaim_claim_failures",
                "Failed attempts, claims and verifications, by reason.",
                ["reason"],
                registry=target,
            )
            created.append(self._failure_family)
            self._releases = Counter(
                "aioportclaim_releases", "Releases of held claims.", registry=target
            )
            created.append(self._releases)
            self._claims_held = Gauge(
                "aioportclaim_claims_held",
                "Claims held now: successes minus releases.",
                registry=target,
            )
            created.append(self._claims_held)
            self._claim_duration = Histogram(
                "aioportclaim_claim_duration_seconds",
                "Seconds from the start of a claim call until it held its ports.",
                buckets=buckets,
                registry=target,
            )
            created.append(self._claim_duration)
            self._lock_wait = Histogram(
                "aioportclaim_lock_wait_seconds",
                "Seconds an exact-port claim waited for a lock that another holder had.",
                buckets=buckets,
                registry=target,
            )
        except ValueError as error:
            for collector in created:
                target.unregister(collector)
            msg = f"cannot register the aioportclaim metrics in {target!r}: {error}; create one PrometheusRecorder per registry and share it"
            raise ValueError(msg) from error
        self._failures = {
            reason: self._failure_family.labels(reason) for reason in FAILURE_REASONS
        }

    def __repr__(self) -> str:
        return f"<PrometheusRecorder registry={self.registry!r}>"

    def record_attempt(self) -> None:
        self._attempts.inc()

    def record_success(self) -> None:
        self._successes.inc()
        self._claims_held.inc()

    def record_failure(self, reason: FailureReason) -> None:
        child = self._failures.get(reason)
        if child is None:
            child = self._failure_family.labels(reason)
        child.inc()

    def record_release(self) -> None:
        self._releases.inc()
        self._claims_held.dec()

    def record_claim_duration(self, seconds: float) -> None:
        self._claim_duration.observe(seconds)

    def record_lock_wait(self, seconds: float) -> None:
        self._lock_wait.observe(seconds)
