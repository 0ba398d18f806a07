"""Metrics of the claim path: a recorder interface, an in-memory recorder, and adapters.

Pass a recorder to a claim, to a selector or to a registry as ``metrics=``,
or set one for the whole process::

    from aioportclaim.metrics import MemoryRecorder, set_default_recorder

    recorder = MemoryRecorder()
    set_default_recorder(recorder)
    ...
    print(recorder.snapshot()["failures"])

A claim reports to its own ``metrics=`` recorder, else to its registry's,
else to the process-wide default. `MetricsRecorder` defines what each
counter and histogram means. `PrometheusRecorder` needs the extra
``aioportclaim[prometheus]`` and `OpenTelemetryRecorder` the extra
``aioportclaim[opentelemetry]``. Each imports its client library only when
it is created.

.. versionadded:: 0.1
"""

from __future__ import annotations

from ._metrics_base import (
    FAILURE_REASONS,
    LATENCY_BUCKETS,
    FailureReason,
    MetricsRecorder,
    get_default_recorder,
    set_default_recorder,
)
from ._metrics_logging import RepeatLimiter
from ._metrics_memory import (
    LatencySummary,
    MemoryRecorder,
    MetricsSnapshot,
    format_snapshot,
)
from ._metrics_otel import OpenTelemetryRecorder
from ._metrics_prometheus import PrometheusRecorder

__all__ = [
    "FAILURE_REASONS",
    "LATENCY_BUCKETS",
    "FailureReason",
    "LatencySummary",
    "MemoryRecorder",
    "MetricsRecorder",
    "MetricsSnapshot",
    "OpenTelemetryRecorder",
    "PrometheusRecorder",
    "RepeatLimiter",
    "format_snapshot",
    "get_default_recorder",
    "set_default_recorder",
]

# Tracebacks and reprs show this public module, not the private ones.
for _name in __all__:
    _object = globals()[_name]
    if getattr(_object, "__module__", "").startswith("aioportclaim._metrics"):
        try:
            _object.__module__ = __name__
        except (AttributeError, TypeError):
            pass
del _name, _object
