"""OpenTelemetryRecorder: the claim metrics as OpenTelemetry instruments."""

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

    from opentelemetry.metrics import Meter, MeterProvider


def import_opentelemetry_metrics() -> object:
    """Import the OpenTelemetry metrics API, or raise an ImportError that names the extra."""
    try:
        import opentelemetry.metrics
    except ImportError as error:
        msg = "OpenTelemetryRecorder needs the opentelemetry-api package; install it with 'pip install aioportclaim[opentelemetry]'"
        raise ImportError(msg, name="opentelemetry") from error
    return opentelemetry.metrics


class OpenTelemetryRecorder(MetricsRecorder):
    """Record the claim metrics with OpenTelemetry instruments.

    The instruments have the names of the Prometheus metrics:

    - counters ``aioportclaim_claim_attempts_total``,
      ``aioportclaim_claims_total``, ``aioportclaim_claim_failures_total``
      (attribute ``reason``) and ``aioportclaim_releases_total``,
    - the up-down counter ``aioportclaim_claims_held``,
    - histograms ``aioportclaim_claim_duration_seconds`` and
      ``aioportclaim_lock_wait_seconds`` in seconds (unit ``s``), with
      `buckets` as the advised bucket bounds.

    Pass a `meter`, or a `meter_provider` that gives a meter named
    ``aioportclaim``. With neither, the meter comes from the global
    provider, which records nothing until an OpenTelemetry SDK is set up.

    Raises:
        ImportError: opentelemetry-api is not installed.
        ValueError: Both `meter` and `meter_provider` were passed.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        meter: Meter | None = None,
        *,
        meter_provider: MeterProvider | None = None,
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> None:
        import_opentelemetry_metrics()
        from opentelemetry.metrics import get_meter

        from . import __version__

        if meter is not None and meter_provider is not None:
            msg = (
                "pass either meter or meter_provider to OpenTelemetryRecorder, not both"
            )
            raise ValueError(msg)
        if meter is None:
            meter = get_meter(
                "aioportclaim", __version__, meter_provider=meter_provider
            )
        self.meter = meter
        self._attempts = meter.create_counter(
            "aioportclaim_claim_attempts_total",
            unit="{attempt}",
            description="Tries of one candidate port or block: checked, or locked and bound.",
        )
        self._successes = meter.create_counter(
            "aioportclaim_claims_total",
            unit="{claim}",
            description="Attempts that took their locks and bound their sockets.",
        )
        self._failures = meter.create_counter(
            "aioportclaim_claim_failures_total",
            unit="{failure}",
            description="Failed attempts, claims and verifications, by reason.",
        )
        self._releases = meter.create_counter(
            "aioportclaim_releases_total",
            unit="{release}",
            description="Releases of held claims.",
        )
        self._claims_held = meter.create_up_down_counter(
            "aioportclaim_claims_held",
            unit="{claim}",
            description="Claims held now: successes minus releases.",
        )
        self._claim_duration = meter.create_histogram(
            "aioportclaim_claim_duration_seconds",
            unit="s",
            description="Seconds from the start of a claim call until it held its ports.",
            explicit_bucket_boundaries_advisory=list(buckets),
        )
        self._lock_wait = meter.create_histogram(
            "aioportclaim_lock_wait_seconds",
            unit="s",
            description="Seconds an exact-port claim waited for a lock that another holder had.",
            explicit_bucket_boundaries_advisory=list(buckets),
        )
        self._reason_attributes = {
            reason: {"reason": reason} for reason in FAILURE_REASONS
        }

    def __repr__(self) -> str:
        return f"<OpenTelemetryRecorder meter={self.meter!r}>"

    def record_attempt(self) -> None:
        self._attempts.add(1)

    def record_success(self) -> None:
        self._successes.add(1)
        self._claims_held.add(1)

    def record_failure(self, reason: FailureReason) -> None:
        attributes = self._reason_attributes.get(reason) or {"reason": reason}
        self._failures.add(1, attributes)

    def record_release(self) -> None:
        self._releases.add(1)
        self._claims_held.add(-1)

    def record_claim_duration(self, seconds: float) -> None:
        self._claim_duration.record(seconds)

    def record_lock_wait(self, seconds: float) -> None:
        self._lock_wait.record(seconds)
