"""claim_port and open_claim: the public claim entry points, and exact-port polling."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio

from ._claimer import PortClaimer
from ._exceptions import ClaimTimeoutError
from ._metrics_base import resolve_recorder
from ._metrics_logging import log_fields
from ._selector import (
    ClaimOptions,
    RobustPortSelector,
    backoff_delay,
    check_limits,
    deadline_scope,
    repeat_log,
    verified,
)
from ._spec import parse_port_spec
from ._strategy import PortSelectionStrategy, check_app_id
from .registries._defaults import resolve_registry

_Entered = TypeVar("_Entered")

if TYPE_CHECKING:
    import socket
    from collections.abc import Sequence
    from contextlib import AbstractAsyncContextManager, AbstractContextManager
    from types import TracebackType

    from ._metrics_base import MetricsRecorder
    from .registries import Registry


async def claim_exact_port(
    port: int,
    *,
    options: ClaimOptions,
    app_id: str | None,
    timeout: float | None,
    verify_delay: float,
) -> PortClaimer:
    """Poll one port until it can be claimed, with jittered backoff, or time out."""
    check_limits(None, verify_delay, timeout)
    metrics = options.metrics
    started = time.perf_counter() if metrics is not None else 0.0
    # When the first attempt that found the lock held by another holder began.
    lock_busy_since: float | None = None
    deadline = None if timeout is None else time.monotonic() + timeout
    attempt = 0
    while True:
        claimer = options.claimer(port, app_id)
        if metrics is not None and lock_busy_since is None:
            attempt_started = time.perf_counter()
        if await claimer.try_claim():
            if verify_delay <= 0 or await verified(claimer, verify_delay):
                if metrics is not None:
                    _record_exact_claim(metrics, started, lock_busy_since)
                return claimer
        if metrics is not None and lock_busy_since is None:
            if claimer.rejection == "locked":
                lock_busy_since = attempt_started
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            reason = claimer.rejection or "in_use"
            msg = f"{claimer.describe()} stayed busy for {timeout} s; stop its holder or raise the timeout"
            if metrics is not None:
                metrics.record_failure("timeout")
                if lock_busy_since is not None:
                    metrics.record_lock_wait(time.perf_counter() - lock_busy_since)
            repeat_log.log(
                logging.INFO,
                "%s",
                msg,
                key=port,
                extra=log_fields(port, options.kinds, app_id, options.registry),
            )
            raise ClaimTimeoutError(msg, {reason: 1})
        delay = backoff_delay(attempt)
        await anyio.sleep(delay if remaining is None else min(delay, remaining))
        attempt += 1


def _record_exact_claim(
    metrics: MetricsRecorder, started: float, lock_busy_since: float | None
) -> None:
    now = time.perf_counter()
    metrics.record_claim_duration(now - started)
    if lock_busy_since is not None:
        metrics.record_lock_wait(now - lock_busy_since)


def open_claim(
    strategy: PortSelectionStrategy | object = None,
    *,
    host: str | Sequence[str] = "127.0.0.1",
    kind: str | Sequence[str] = "tcp",
    app_id: str | None = None,
    registry: Registry | None = None,
    timeout: float | None = 10.0,
    count: int = 1,
    listen: bool = True,
    backlog: int = 128,
    verify_delay: float = 0.0,
    metrics: MetricsRecorder | None = None,
) -> AbstractAsyncContextManager[PortClaimer]:
    """Claim a port as `claim_port` does, and yield the claim object with every socket.

    .. versionadded:: 0.1
    """
    arguments = (
        strategy,
        host,
        kind,
        app_id,
        registry,
        timeout,
        count,
        listen,
        backlog,
        verify_delay,
        metrics,
    )
    return _OpenClaimContext(arguments)


def claim_port(
    strategy: PortSelectionStrategy | object = None,
    *,
    host: str | Sequence[str] = "127.0.0.1",
    kind: str | Sequence[str] = "tcp",
    app_id: str | None = None,
    registry: Registry | None = None,
    timeout: float | None = 10.0,
    count: int = 1,
    listen: bool = True,
    backlog: int = 128,
    verify_delay: float = 0.0,
    metrics: MetricsRecorder | None = None,
) -> AbstractAsyncContextManager[socket.socket]:
    """Claim a port and yield its bound socket; release everything when the block ends.

    `strategy` is a `PortSelectionStrategy` or any spec that `get_port`
    accepts. A single port (``8080`` or ``"8080"``) means exactly that port:
    its lock is polled with jittered backoff until it is free or `timeout`
    seconds pass (`ClaimTimeoutError`). Other specs are searched until the
    timeout (`PortExhaustedError`). TCP sockets listen unless `listen` is
    False. With several hosts, kinds or a `count` above 1, the first socket
    is yielded; `open_claim` yields the claim with all of them. `metrics`
    is the recorder that the claim reports to (see `aioportclaim.metrics`);
    None means the registry's recorder, else the process-wide default.
    When the registry reports the claim lost (a Redis lease that could not
    be renewed in time), the block is cancelled and `ClaimLostError` is
    raised as it ends.

    .. versionadded:: 0.1
    """
    arguments = (
        strategy,
        host,
        kind,
        app_id,
        registry,
        timeout,
        count,
        listen,
        backlog,
        verify_delay,
        metrics,
    )
    return _SocketClaimContext(arguments)


class _ClaimContext(Generic[_Entered]):
    """Claim on entry and release on exit, for `claim_port` and `open_claim`.

    A class rather than a generator-based context manager, because this
    sits on every claim's path and a generator costs several microseconds.
    """

    __slots__ = ("_arguments", "_claimer", "_loss_watch")

    def __init__(self, arguments: tuple[Any, ...]) -> None:
        self._arguments = arguments
        self._claimer: PortClaimer | None = None
        self._loss_watch: AbstractContextManager[None] | None = None

    async def _enter(self) -> PortClaimer:
        if self._claimer is not None:
            msg = "this claim context is already in use; call claim_port() again for another claim"
            raise RuntimeError(msg)
        claimer = await _claim(*self._arguments)
        self._claimer = claimer
        if claimer.can_be_lost:
            watch = claimer.cancel_on_loss()
            try:
                watch.__enter__()
            except BaseException:
                await claimer.release()
                raise
            self._loss_watch = watch
        return claimer

    async def __aenter__(self) -> _Entered:
        return self._entered(await self._enter())

    def _entered(self, claimer: PortClaimer) -> _Entered:
        raise NotImplementedError

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        claimer, self._claimer = self._claimer, None
        watch, self._loss_watch = self._loss_watch, None
        if claimer is None:
            return None
        try:
            if watch is not None:
                return watch.__exit__(exc_type, exc, traceback)
            return None
        finally:
            await claimer.__aexit__(exc_type, exc, traceback)


class _OpenClaimContext(_ClaimContext[PortClaimer]):
    """The context manager behind `open_claim`: yields the claim object."""

    __slots__ = ()

    def _entered(self, claimer: PortClaimer) -> PortClaimer:
        return claimer


class _SocketClaimContext(_ClaimContext["socket.socket"]):
    """The context manager behind `claim_port`: yields the claim's first socket."""

    __slots__ = ()

    def _entered(self, claimer: PortClaimer) -> socket.socket:
        return claimer.socket


async def _claim(
    strategy: object,
    host: str | Sequence[str],
    kind: str | Sequence[str],
    app_id: str | None,
    registry: Registry | None,
    timeout: float | None,
    count: int,
    listen: bool,
    backlog: int,
    verify_delay: float,
    metrics: MetricsRecorder | None,
) -> PortClaimer:
    if not isinstance(strategy, PortSelectionStrategy):
        spec = parse_port_spec(strategy)
        if spec.kind == "none":
            msg = f"port spec {strategy!r} means 'no port'; pass a port, a range or None for any port"
            raise ValueError(msg)
        if spec.kind == "exact" and spec.port is not None:
            check_app_id(app_id)
            options = ClaimOptions.checked(
                spec.port, host, kind, count, registry, listen, backlog, metrics
            )
            # The deadline covers the verification delay too.
            with deadline_scope(timeout, verify_delay > 0):
                return await claim_exact_port(
                    spec.port,
                    options=options,
                    app_id=app_id,
                    timeout=timeout,
                    verify_delay=verify_delay,
                )
            raise _verification_timeout(spec.port, options, timeout)
    selector = _shared_selector(
        strategy, registry, host, kind, count, listen, backlog, metrics
    )
    _, claimer = await selector.select_and_claim(
        app_id, verify_delay=verify_delay, timeout=timeout
    )
    return claimer


def _verification_timeout(
    port: int, options: ClaimOptions, timeout: float | None
) -> ClaimTimeoutError:
    if options.metrics is not None:
        options.metrics.record_failure("timeout")
    msg = f"port {port} could not be claimed and verified within {timeout} s; raise the timeout or shorten verify_delay"
    return ClaimTimeoutError(msg, {"in_use": 1})


# Selectors keep no state between calls, so claims with equal arguments
# share one and skip checking and normalizing those arguments again.
_selectors: dict[tuple[object, ...], RobustPortSelector] = {}
_MAX_SHARED_SELECTORS = 64
_SHAREABLE_SPECS = (PortSelectionStrategy, str, int, type(None))
_PLAIN_TYPES = (str, str, int, bool, int)


def _shared_selector(
    strategy: object,
    registry: Registry | None,
    host: str | Sequence[str],
    kind: str | Sequence[str],
    count: int,
    listen: bool,
    backlog: int,
    metrics: MetricsRecorder | None,
) -> RobustPortSelector:
    resolved = resolve_registry(registry)
    recorder = resolve_recorder(metrics, resolved)
    key = (
        type(strategy),
        strategy,
        resolved,
        host,
        kind,
        count,
        listen,
        backlog,
        recorder,
    )
    # Exact types, so that True never shares an entry with 1, nor 1.0 with 1.
    argument_types = tuple(map(type, (host, kind, count, listen, backlog)))
    shareable = type(strategy) in _SHAREABLE_SPECS and argument_types == _PLAIN_TYPES
    selector = _selectors.get(key) if shareable else None
    if selector is not None:
        return selector

    selector = RobustPortSelector(
        strategy,
        resolved,
        host=host,
        kind=kind,
        count=count,
        listen=listen,
        backlog=backlog,
        metrics=metrics,
    )
    if shareable:
        if len(_selectors) >= _MAX_SHARED_SELECTORS:
            _selectors.clear()
        _selectors[key] = selector
    return selector
