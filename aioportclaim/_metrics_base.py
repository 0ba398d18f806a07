"""The recorder interface that the claim path reports into, and the process-wide default."""

from __future__ import annotations

import threading
from typing import Final, Literal

FailureReason = Literal[
    "in_use", "locked", "excluded", "validator", "exhausted", "timeout", "lost"
]

#: Every failure reason, in the order snapshots and exporters list them.
FAILURE_REASONS: Final[tuple[FailureReason, ...]] = (
    "in_use",
    "locked",
    "excluded",
    "validator",
    "exhausted",
    "timeout",
    "lost",
)


#: Histogram bucket bounds in seconds. Claims of one free port took 35 to 55 us
#: in tests/benchmarks/bench_metrics.py on a 2-core Linux host, and an
#: exact-port wait can last up to its timeout (10 s by default).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class MetricsRecorder:
    """Receives the events of the claim path and turns them into metrics.

    Subclasses override the methods they need, because each method of this
    base class does nothing. The claim path calls a recorder only when one is
    set, so with no recorder a claim pays one ``None`` check per event and
    makes no call. Methods may be called from several threads and event
    loops at once, and must not block or raise.

    What each event means:

    - ``record_attempt``: one try of one candidate. The claim path took one
      candidate port (or block of ``count`` ports) and checked it against
      the strategy and its validators, or tried to lock and bind it. An
      exact-port claim makes one attempt per poll. This is not the
      ``max_attempts`` of `RobustPortSelector.select_and_claim`, which
      counts passes over all candidates.
    - ``record_success``: an attempt that took its locks and bound its
      sockets (`PortClaimer.try_claim` returned True). The claim is now held.
    - ``record_failure(reason)``, with one of these reasons:

      - ``in_use``: an attempt whose bind found the port in use, in this
        family or the other family of the same address.
      - ``locked``: an attempt whose registry lock has another holder, in
        this process or another one.
      - ``excluded``: an attempt of a block claim (``count`` above 1) whose
        block reaches a port that the strategy excludes, or goes past
        port 65535. Ports that the strategy excludes are never candidates
        and are not counted.
      - ``validator``: an attempt that a validator rejected.
      - ``exhausted``: a claim over a strategy or range (`claim_port`,
        `open_claim`, `RobustPortSelector`) that raised
        `PortExhaustedError`, counted once per claim, whatever its
        attempts were.
      - ``timeout``: an exact-port claim whose wait ran out
        (`ClaimTimeoutError`), counted once per claim.
      - ``lost``: a held claim found gone. Either a verification found it
        (`PortClaimer.verify_claim` raised `ClaimLostError`, including the
        verification that ``verify_delay`` runs before a claim is
        returned), or a registry reported a lease lost while the block of
        `claim_port` or `open_claim` ran. Each detection counts, so one
        loss that both notice counts twice.

      The selector records ``excluded`` and ``validator`` once per claim
      for each candidate, because it remembers both verdicts across passes.
      Every attempt that ends without an exception is recorded once as a
      success or as one of ``in_use``, ``locked``, ``excluded`` and
      ``validator``. An attempt that raises (cancellation, a lock directory
      that cannot be used) is counted as an attempt only.
    - ``record_release``: a held claim was released, including a claim
      released after a lost verification. Claims held equals successes
      minus releases.
    - ``record_claim_duration(seconds)``: the time from the start of one
      claim call (`claim_port`, `open_claim`,
      `RobustPortSelector.select_and_claim`) until it held its ports,
      including failed candidates, backoff sleeps and verification.
      Recorded once per claim call that succeeds. Failed claim calls are
      counted as ``exhausted`` or ``timeout`` instead. A `PortClaimer`
      used on its own records no duration, because its `try_claim` never
      waits.
    - ``record_lock_wait(seconds)``: the time that an exact-port claim spent
      polling a lock that another holder had, from the first attempt that
      found it ``locked`` until the claim succeeded or timed out. Recorded
      once per exact-port claim that met a busy lock. Range claims never
      wait for a lock: they move on to the next candidate.

    .. versionadded:: 0.1
    """

    def record_attempt(self) -> None:
        """Count one try of one candidate."""

    def record_success(self) -> None:
        """Count one attempt that took its ports, so one more claim is held."""

    def record_failure(self, reason: FailureReason) -> None:
        """Count one failure with `reason`, one of `FAILURE_REASONS`."""

    def record_release(self) -> None:
        """Count one release of a held claim, so one claim fewer is held."""

    def record_claim_duration(self, seconds: float) -> None:
        """Observe the seconds that one successful claim call took."""

    def record_lock_wait(self, seconds: float) -> None:
        """Observe the seconds that one exact-port claim waited for a busy lock."""


_default: MetricsRecorder | None = None
_default_lock = threading.Lock()


def set_default_recorder(
    recorder: MetricsRecorder | None, *, replace: bool = False
) -> MetricsRecorder | None:
    """Set the recorder of claims that name none, for the whole process.

    A claim reports to the recorder passed as its ``metrics=`` argument,
    else to its registry's recorder, else to this default. Claims that
    already started keep the recorder they found. Setting the recorder that
    is already the default does nothing, and None removes the default.

    Args:
        recorder: The new default, or None for no default.
        replace: Allow replacing a different recorder that is already set.

    Returns:
        The previous default, or None.

    Raises:
        RuntimeError: Another recorder is already the default and `replace`
            is False. Two parts of one program that each set a default would
            otherwise take each other's metrics without notice.

    .. versionadded:: 0.1
    """
    global _default
    with _default_lock:
        previous = _default
        if previous is not None and recorder is not None and recorder is not previous:
            if not replace:
                msg = f"a default metrics recorder is already set ({previous!r}); pass replace=True to replace it with {recorder!r}, or pass metrics= to each claim instead"
                raise RuntimeError(msg)
        _default = recorder
        return previous


def get_default_recorder() -> MetricsRecorder | None:
    """Return the process-wide default recorder, or None when none is set.

    .. versionadded:: 0.1
    """
    return _default


def resolve_recorder(
    metrics: MetricsRecorder | None, registry: object
) -> MetricsRecorder | None:
    """Pick the recorder of one claim: its own, else its registry's, else the default."""
    if metrics is not None:
        return metrics
    own: MetricsRecorder | None = getattr(registry, "metrics", None)
    return own if own is not None else _default
