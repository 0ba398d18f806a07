"""A Redis claim that this process holds: renewal, loss and release."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import anyio
from coredis.exceptions import RedisError

from .._exceptions import PortClaimError
from ._base import Lease
from ._redis_scripts import _VERSION, _as_bytes

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._base import ClaimKey
    from ._redis import RedisRegistry

logger = logging.getLogger(__name__)

#: A lease is renewed after this fraction of its length has passed.
RENEW_FRACTION = 1 / 3
# The local end of a lease comes this fraction early, so a host whose clock
# runs slightly faster than the Redis server's still stops first.
_CLOCK_DRIFT = 0.01
_REDIS_ERRORS = (RedisError, OSError, TimeoutError)


class RedisLease(Lease):
    """A claim key in Redis that this process holds, renewed by a background task.

    When renewal fails for longer than the lease (Redis down, a network
    partition, this process frozen) the lease is lost: `lost_reason` is set,
    callbacks registered with `on_lost` run, and a warning names the port
    and scope. Release and renewal only touch the key while it carries this
    lease's claim id, so a lost lease never deletes or extends the claim of
    the next holder.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        registry: RedisRegistry,
        key: ClaimKey,
        claim_id: str,
        token: int,
        expires_at: float,
    ) -> None:
        self.key = key
        self.claim_id = claim_id
        self.redis_key = registry.redis_key(key)
        self._registry = registry
        self._prefix = f"{_VERSION} {claim_id} "
        self._token = token
        self._expires_at = expires_at
        self._lost_reason: str | None = None
        self._callbacks: list[Callable[[str], object]] = []
        self._renewal = anyio.CancelScope()
        self._released = False
        # Set when the lease ran out or the key was found taken. `release`
        # then sends nothing, because the renewal task cleans up after it.
        self._expired = False

    def __repr__(self) -> str:
        if self._lost_reason is not None:
            state = "lost"
        elif self._released:
            state = "released"
        else:
            state = "held"
        return f"<RedisLease {self.redis_key} token={self._token} {state}>"

    @property
    def fencing_token(self) -> int:
        return self._token

    @property
    def lost_reason(self) -> str | None:
        return self._lost_reason

    @property
    def expires_at(self) -> float:
        """Event loop time (`anyio.current_time`) at which the lease ends unless renewed."""
        return self._expires_at

    def on_lost(self, callback: Callable[[str], object]) -> Callable[[], None]:
        if self._lost_reason is not None:
            self._run_callback(callback, self._lost_reason)
            return _do_nothing
        self._callbacks.append(callback)

        def unregister() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return unregister

    async def is_held(self) -> bool:
        """Check that the key in Redis still carries this lease's claim id.

        When Redis cannot be reached the local lease decides: it holds until
        its end, and the renewal task reports the loss after that.
        """
        if self._released or self._lost_reason is not None:
            return False
        if anyio.current_time() >= self._expires_at:
            return False
        try:
            with anyio.fail_after(self._registry.request_timeout):
                value = await self._registry.client.get(self.redis_key)
        except _REDIS_ERRORS as error:
            logger.debug("checking %s failed: %s", self.redis_key, error)
            return True
        return _as_bytes(value).startswith(self._prefix.encode())

    async def renew(self) -> bool:
        """Extend the key in Redis by one lease now; False if it is no longer ours.

        The background task calls this; a call on a lost or released lease
        still goes to Redis and changes nothing there. Raises
        `PortClaimError` when Redis cannot be reached.
        """
        registry = self._registry
        sent = anyio.current_time()
        try:
            with anyio.fail_after(registry.request_timeout):
                reply: Any = await registry.renew_script(
                    keys=[self.redis_key], args=[self._prefix, registry.lease_ms]
                )
        except _REDIS_ERRORS as error:
            action = f"renewing {self.redis_key}"
            raise registry.request_error(action, error) from error
        if not reply:
            return False
        if not self._released and self._lost_reason is None:
            self._expires_at = sent + registry.lease * (1 - _CLOCK_DRIFT)
        return True

    async def release(self) -> None:
        """Stop renewing and delete the key if it still carries our claim id.

        A lost lease is not sent to Redis again: its key has expired or
        belongs to another holder, and the renewal task has already cleaned
        up. Failures are logged, not raised: the key then expires by itself
        within one lease. Calling it again does nothing.
        """
        if self._released:
            return
        self._released = True
        self._renewal.cancel()
        registry = self._registry
        registry.forget(self)
        if self._expired:
            return
        try:
            with anyio.fail_after(registry.request_timeout):
                deleted: Any = await registry.release_script(
                    keys=[self.redis_key], args=[self._prefix]
                )
        except _REDIS_ERRORS as error:
            logger.warning(
                "failed to release %s in Redis at %s: %s; the key expires within %s s",
                self.redis_key,
                registry.address,
                _describe_error(error),
                registry.lease,
            )
            return
        if not deleted:
            logger.debug("%s was no longer ours at release", self.redis_key)

    async def keep_alive(self) -> None:
        """Renew the lease every `RENEW_FRACTION` of its length until released or lost.

        After a lease runs out, one compare-and-delete follows. Renewals
        that reached Redis but whose replies came too late may have
        extended the key, and no other holder can claim it until it goes.
        """
        timed_out = False
        with self._renewal:
            timed_out = await self._renew_until_lost()
        if timed_out:
            await self._delete_quietly()

    async def _renew_until_lost(self) -> bool:
        """Renew until the lease is lost; return whether it ran out unrenewed."""
        registry = self._registry
        interval = registry.lease * RENEW_FRACTION
        next_renewal = anyio.current_time() + interval
        last_error = "no reply"
        while True:
            await anyio.sleep(max(0.0, next_renewal - anyio.current_time()))
            now = anyio.current_time()
            if now >= self._expires_at:
                self._expired = True
                self.mark_lost(
                    f"no renewal succeeded within its {registry.lease} s lease "
                    f"(Redis at {registry.address}: {last_error})"
                )
                return True
            with anyio.move_on_after(self._expires_at - now):
                try:
                    renewed = await self.renew()
                except PortClaimError as error:
                    last_error = registry.describe_failure(error.__cause__ or error)
                    logger.debug("%s", error)
                else:
                    if not renewed:
                        self._expired = True
                        self.mark_lost(
                            "its key in Redis was deleted or taken over "
                            "(Redis restarted without its data, or the lease expired)"
                        )
                        return False
                    next_renewal = now + interval
                    continue
            next_renewal = min(anyio.current_time() + interval / 3, self._expires_at)

    async def _delete_quietly(self) -> None:
        registry = self._registry
        with anyio.move_on_after(registry.lease):
            try:
                await registry.release_script(
                    keys=[self.redis_key], args=[self._prefix]
                )
            except _REDIS_ERRORS as error:
                logger.debug("deleting lost %s failed: %s", self.redis_key, error)

    def mark_lost(self, reason: str) -> None:
        """Record the loss, stop renewing, log a warning and run the callbacks."""
        if self._lost_reason is not None or self._released:
            return
        self._lost_reason = reason
        self._renewal.cancel()
        registry = self._registry
        logger.warning(
            "lost the claim of %s port %d in scope %s: %s",
            self.key.kind,
            self.key.port,
            self.key.scope,
            reason,
            extra={
                "port": self.key.port,
                "protocol": self.key.kind,
                "scope": self.key.scope,
                "registry": registry.name,
                "fencing_token": self._token,
            },
        )
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            self._run_callback(callback, reason)

    def _run_callback(self, callback: Callable[[str], object], reason: str) -> None:
        try:
            callback(reason)
        except Exception:
            logger.warning(
                "loss callback %r of %s raised", callback, self.redis_key, exc_info=True
            )


def _describe_error(error: BaseException) -> str:
    """Return the innermost cause's message, such as "Connection refused"."""
    seen = {id(error)}
    while True:
        if isinstance(error, BaseExceptionGroup) and error.exceptions:
            inner: BaseException | None = error.exceptions[0]
        else:
            inner = error.__cause__
        if inner is None or id(inner) in seen:
            break
        error = inner
        seen.add(id(error))
    if isinstance(error, OSError) and error.errno:
        return os.strerror(error.errno)
    if isinstance(error, TimeoutError) and not str(error):
        return "timed out"
    return str(error) or type(error).__name__


def _do_nothing() -> None:
    pass
