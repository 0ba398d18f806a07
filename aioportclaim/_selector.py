"""RobustPortSelector: passes over the candidates, backoff and one deadline."""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import time
from collections import Counter
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

from ._claimer import PortClaimer
from ._exceptions import ClaimLostError, PortExhaustedError
from ._metrics_base import MetricsRecorder, resolve_recorder
from ._metrics_logging import RepeatLimiter, log_fields
from ._sockets import Kind, check_port, normalize_hosts, normalize_kinds
from ._strategy import PortSelectionStrategy, check_app_id
from .registries._defaults import resolve_registry

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from ._metrics_base import FailureReason
    from .registries import Registry

logger = logging.getLogger(__name__)
# Pass summaries and failed claims repeat while a service keeps retrying.
repeat_log = RepeatLimiter(logger)

#: Seconds: the first backoff cap between passes, and the largest one.
BACKOFF_BASE = 0.005
BACKOFF_MAX = 0.5
# A pass yields to the event loop after this many candidates, so a long
# pass over busy ports neither starves other tasks nor ignores cancellation.
_CANDIDATES_PER_CHECKPOINT = 64
# Verdicts that hold for the whole claim, so later passes skip the port.
_REMEMBERED_REJECTIONS = ("excluded", "validator")


def backoff_delay(attempt: int, rng: random.Random | None = None) -> float:
    """Return a full-jitter backoff: uniform between 0 and the capped exponential."""
    cap = min(BACKOFF_MAX, BACKOFF_BASE * 2 ** min(attempt, 32))
    return (rng or random).uniform(0, cap)


class ClaimOptions:
    """The checked, normalized arguments shared by every claimer of one selection."""

    __slots__ = ("backlog", "count", "hosts", "kinds", "listen", "metrics", "registry")

    def __init__(
        self,
        *,
        hosts: tuple[str, ...],
        kinds: tuple[Kind, ...],
        count: int,
        registry: Registry,
        listen: bool,
        backlog: int,
        metrics: MetricsRecorder | None = None,
    ) -> None:
        self.hosts = hosts
        self.kinds = kinds
        self.count = count
        self.registry = registry
        self.listen = listen
        self.backlog = backlog
        self.metrics = metrics

    @classmethod
    def checked(
        cls,
        first_port: int,
        host: str | Sequence[str],
        kind: str | Sequence[str],
        count: int,
        registry: Registry | None,
        listen: bool,
        backlog: int,
        metrics: MetricsRecorder | None,
    ) -> ClaimOptions:
        """Check and normalize claim arguments; `first_port` bounds the block's end."""
        check_port(first_port, count)
        check_socket_options(listen, backlog, metrics)
        resolved = resolve_registry(registry)
        return cls(
            hosts=normalize_hosts(host),
            kinds=normalize_kinds(kind),
            count=count,
            registry=resolved,
            listen=listen,
            backlog=backlog,
            metrics=resolve_recorder(metrics, resolved),
        )

    def claimer(self, port: int, app_id: str | None) -> PortClaimer:
        """Return an unclaimed claimer of `port` (or the block from it) with these options."""
        return PortClaimer._prepared(
            port,
            tuple(range(port, port + self.count)) if self.count > 1 else (port,),
            self.hosts,
            self.kinds,
            self.registry,
            app_id,
            self.listen,
            self.backlog,
            self.metrics,
        )


class RobustPortSelector:
    """Select a port by a strategy and claim it, with retries under one deadline.

    Each pass tries every candidate of the strategy once. Between passes the
    selector sleeps a random time up to an exponentially growing cap (full
    jitter), so a herd of workers does not retry in lockstep. When the
    deadline passes, `PortExhaustedError` counts why each port was rejected.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        strategy: PortSelectionStrategy | object = None,
        registry: Registry | None = None,
        *,
        host: str | Sequence[str] = "127.0.0.1",
        kind: str | Sequence[str] = "tcp",
        count: int = 1,
        listen: bool = True,
        backlog: int = 128,
        metrics: MetricsRecorder | None = None,
    ) -> None:
        self.strategy = strategy_for(strategy)
        # Start ports of blocks whose every port is allowed, built on first use.
        self._block_bases: frozenset[int] | None = None
        self._options = ClaimOptions.checked(
            1, host, kind, count, registry, listen, backlog, metrics
        )

    def __repr__(self) -> str:
        return f"RobustPortSelector({self.strategy!r}, {self._options.registry!r})"

    async def select_and_claim(
        self,
        app_id: str | None = None,
        *,
        max_attempts: int | None = None,
        verify_delay: float = 0.0,
        timeout: float | None = 10.0,
    ) -> tuple[int, PortClaimer]:
        """Claim the first candidate that can be claimed, and return it with its claimer.

        `max_attempts` limits the passes over the candidates, `timeout` the
        seconds in all; None lifts a limit. With `verify_delay` above zero,
        each claim is verified after that many seconds and a lost claim
        moves on to the next candidate. The caller releases the claimer.
        """
        check_limits(max_attempts, verify_delay, timeout)
        check_app_id(app_id)
        rejections: dict[int, str] = {}
        passes = [0]  # passes finished so far, kept when the deadline cancels
        waits = self.strategy.has_validators or verify_delay > 0
        with deadline_scope(timeout, waits):
            return await self._select(
                app_id, max_attempts, verify_delay, timeout, rejections, passes
            )
        raise self._exhausted(rejections, passes[0], timeout, app_id, interrupted=True)

    async def _select(
        self,
        app_id: str | None,
        max_attempts: int | None,
        verify_delay: float,
        timeout: float | None,
        rejections: dict[int, str],
        passes: list[int],
    ) -> tuple[int, PortClaimer]:
        metrics = self._options.metrics
        started = time.perf_counter() if metrics is not None else 0.0
        deadline = None if timeout is None else time.monotonic() + timeout
        attempt = 0
        while True:
            claimer = await self._run_pass(app_id, verify_delay, deadline, rejections)
            if claimer is not None:
                if metrics is not None:
                    metrics.record_claim_duration(time.perf_counter() - started)
                return claimer.port, claimer
            attempt += 1
            passes[0] = attempt
            if self._nothing_left(rejections):
                break
            if max_attempts is not None and attempt >= max_attempts:
                break
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            delay = backoff_delay(attempt - 1)
            await anyio.sleep(delay if remaining is None else min(delay, remaining))
        raise self._exhausted(rejections, attempt, timeout, app_id)

    async def _run_pass(
        self,
        app_id: str | None,
        verify_delay: float,
        deadline: float | None,
        rejections: dict[int, str],
    ) -> PortClaimer | None:
        strategy, options = self.strategy, self._options
        metrics = options.metrics
        seen = 0
        for port in strategy.candidates(app_id):
            # Yield now and then, even while every candidate is skipped without
            # a claim, so cancellation and the deadline can act.
            seen += 1
            if seen % _CANDIDATES_PER_CHECKPOINT == 0:
                await anyio.lowlevel.checkpoint()
                if deadline is not None and time.monotonic() >= deadline:
                    break
            if rejections.get(port) in _REMEMBERED_REJECTIONS:
                continue
            reason: FailureReason | None = None
            if options.count > 1 and not self._block_allowed(port):
                reason = "excluded"
            elif self._held_here(port):
                reason = "locked"
            elif strategy.has_validators and not await self._block_valid(port):
                reason = "validator"
            if reason is not None:
                # Rejected without a claim attempt; metrics count it as one.
                rejections[port] = reason
                if metrics is not None:
                    metrics.record_attempt()
                    metrics.record_failure(reason)
                continue

            claimer = options.claimer(port, app_id)
            if await claimer.try_claim():
                if verify_delay <= 0 or await verified(claimer, verify_delay):
                    return claimer
            rejections[port] = claimer.rejection or "in_use"
        if logger.isEnabledFor(logging.DEBUG):
            strategy_text = repr(strategy)
            repeat_log.log(
                logging.DEBUG,
                "pass over %s found no free port: %s",
                strategy_text,
                dict(Counter(rejections.values())),
                key=strategy_text,
                extra=log_fields(None, options.kinds, app_id, options.registry),
            )
        return None

    def _nothing_left(self, rejections: dict[int, str]) -> bool:
        # Validator and exclusion verdicts stand for the whole selection, so
        # when they cover every allowed port, waiting cannot help.
        allowed = self.strategy.allowed_count
        if allowed == 0:
            return True
        final = sum(
            1 for reason in rejections.values() if reason in _REMEMBERED_REJECTIONS
        )
        return final >= allowed

    def _held_here(self, port: int) -> bool:
        registry = self._options.registry
        for kind in self._options.kinds:
            if registry.is_held_here(kind, port):
                return True
        return False

    def _block_allowed(self, port: int) -> bool:
        bases = self._block_bases
        if bases is None:
            bases = self._block_bases = block_bases(
                self.strategy.allowed_ports(), self._options.count
            )
        return port in bases

    async def _block_valid(self, port: int) -> bool:
        for member in range(port, port + self._options.count):
            if not await self.strategy.validate(member):
                return False
        return True

    def _exhausted(
        self,
        rejections: dict[int, str],
        attempts: int,
        timeout: float | None,
        app_id: str | None,
        *,
        interrupted: bool = False,
    ) -> PortExhaustedError:
        counts = Counter(rejections.values())
        # Blocks that reach an excluded port add to the strategy's own exclusions.
        counts["excluded"] += self.strategy.excluded_count

        options = self._options
        if options.metrics is not None:
            options.metrics.record_failure("exhausted")
        where = f"{'+'.join(options.kinds)} on {', '.join(options.hosts)}"
        if options.count > 1:
            where = f"a block of {options.count} ports, {where}"

        strategy_text = repr(self.strategy)
        passes = "1 pass" if attempts == 1 else f"{attempts} passes"
        if interrupted:
            msg = (
                f"no port could be claimed for {where} from {strategy_text}: the timeout "
                f"of {timeout} s ran out while validators or the verification delay "
                f"were running ({passes} done); raise the timeout or shorten verify_delay"
            )
        elif self._nothing_left(rejections):
            msg = (
                f"no port could be claimed for {where} from {strategy_text}: every "
                "allowed port is excluded or rejected by a validator; widen the strategy"
            )
        else:
            limit = (
                f"within {timeout} s"
                if timeout is not None
                else "in the allowed passes"
            )
            msg = (
                f"no port could be claimed for {where} from {strategy_text} {limit} "
                f"({passes}); widen the strategy, release claims or raise the timeout"
            )

        repeat_log.log(
            logging.INFO,
            "%s",
            msg,
            key=(where, strategy_text),
            extra=log_fields(None, options.kinds, app_id, options.registry),
        )
        return PortExhaustedError(msg, counts)

    @asynccontextmanager
    async def claim(
        self,
        app_id: str | None = None,
        *,
        max_attempts: int | None = None,
        verify_delay: float = 0.0,
        timeout: float | None = 10.0,
    ) -> AsyncIterator[PortClaimer]:
        """Claim a port as `select_and_claim` does, and release it when the block ends."""
        _, claimer = await self.select_and_claim(
            app_id,
            max_attempts=max_attempts,
            verify_delay=verify_delay,
            timeout=timeout,
        )
        async with claimer:
            with claimer.cancel_on_loss():
                yield claimer


def deadline_scope(
    timeout: float | None, needed: bool
) -> anyio.CancelScope | contextlib.nullcontext[None]:
    """Return a scope that cancels its block after `timeout` seconds, if `needed`.

    Claims bound most waits by their own deadline checks; a scope is needed
    only around waits that they cannot interrupt, such as a validator or a
    verification delay. Otherwise a no-op context keeps the claim path cheap.
    """
    if timeout is None or not needed:
        return contextlib.nullcontext()
    return anyio.move_on_after(timeout)


async def verified(claimer: PortClaimer, delay: float) -> bool:
    try:
        await claimer.verify_claim(delay)
    except ClaimLostError:
        await claimer.release()
        claimer.rejection = "in_use"
        return False
    except BaseException:
        await claimer.release()
        raise
    return True


def check_limits(
    max_attempts: int | None, verify_delay: float, timeout: float | None
) -> None:
    delay: object = verify_delay
    if delay is None:
        msg = "invalid verify_delay None: expected a number of seconds, 0 for no delay"
        raise TypeError(msg)
    for name, value in (
        ("verify_delay", verify_delay),
        ("timeout", timeout),
    ):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float)
        ):
            msg = f"invalid {name} {value!r}: expected a number of seconds"
            raise TypeError(msg)
    if max_attempts is not None and (
        isinstance(max_attempts, bool) or not isinstance(max_attempts, int)
    ):
        msg = f"invalid max_attempts {max_attempts!r}: expected a whole number, or None for no limit"
        raise TypeError(msg)
    if max_attempts is not None and max_attempts < 1:
        msg = f"invalid max_attempts {max_attempts!r}: expected 1 or more, or None for no limit"
        raise ValueError(msg)
    if not verify_delay >= 0:
        msg = f"invalid verify_delay {verify_delay!r}: expected seconds, 0 or more"
        raise ValueError(msg)
    if timeout is not None and not timeout >= 0:
        msg = f"invalid timeout {timeout!r}: expected seconds, 0 or more, or None for no limit"
        raise ValueError(msg)


def strategy_for(spec: object) -> PortSelectionStrategy:
    """Return `spec` as a strategy, reusing one built earlier for the same plain spec.

    A strategy computes its allowed ports once, so sharing it across
    `claim_port` calls with the same spec saves that work. Only None, str
    and int specs are shared: containers could compare equal while holding
    values of other types, such as True and 1.
    """
    if isinstance(spec, PortSelectionStrategy):
        return spec
    if spec is None or type(spec) is str or type(spec) is int:
        return _shared_strategy(spec)
    return PortSelectionStrategy(spec)


@functools.lru_cache(maxsize=64)
def _shared_strategy(spec: str | int | None) -> PortSelectionStrategy:
    return PortSelectionStrategy(spec)


def block_bases(allowed: tuple[int, ...], count: int) -> frozenset[int]:
    """Return the ports that start `count` consecutive allowed ports.

    One walk over the sorted ports measures each run of consecutive ports,
    so the cost does not grow with `count`.
    """
    bases: list[int] = []
    run_start = 0
    for index, port in enumerate(allowed):
        if index and port != allowed[index - 1] + 1:
            run_start = index
        # allowed[run_start:index + 1] is consecutive; a block ending at
        # `port` starts count - 1 ports earlier, if the run reaches back that far.
        if index - run_start + 1 >= count:
            bases.append(allowed[index - count + 1])
    return frozenset(bases)


def check_socket_options(listen: object, backlog: object, metrics: object) -> None:
    """Raise TypeError or ValueError for a wrong `listen`, `backlog` or `metrics`."""
    if not isinstance(listen, bool):
        msg = f"invalid listen {listen!r}: expected True or False"
        raise TypeError(msg)
    if isinstance(backlog, bool) or not isinstance(backlog, int):
        msg = f"invalid backlog {backlog!r}: expected a whole number of pending connections"
        raise TypeError(msg)
    if backlog < 0:
        msg = f"invalid backlog {backlog!r}: expected 0 or more"
        raise ValueError(msg)
    if metrics is not None and not isinstance(metrics, MetricsRecorder):
        msg = f"invalid metrics {metrics!r}: expected a MetricsRecorder, such as aioportclaim.metrics.MemoryRecorder(), or None"
        raise TypeError(msg)
