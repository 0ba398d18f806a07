"""Claims in Redis, shared across hosts: leased keys, renewal and fencing tokens.

The registry lives here; its leases are in `_redis_lease`, its Lua scripts
and value format in `_redis_scripts`, and its URL options in `_redis_url`.
"""

from __future__ import annotations

import logging
import re
import secrets
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self, cast

import anyio

try:
    import coredis
    from coredis.connection import TCPLocation, UnixDomainSocketLocation
except ImportError as error:
    _message = "RedisRegistry needs the coredis client; install it with: pip install 'aioportclaim[redis]'"
    raise ImportError(_message) from error

from .._exceptions import PortClaimError
from .._system import network_scope
from ._base import ClaimInfo, ClaimKey, HolderRecord, Lease, Registry
from ._redis_lease import (
    _CLOCK_DRIFT,
    _REDIS_ERRORS,
    RedisLease,
    _describe_error,
)
from ._redis_scripts import (
    _ACQUIRE,
    _MAX_VALUE_BYTES,
    _READ,
    _RELEASE,
    _RENEW,
    _VERSION,
    _as_bytes,
    _parse_key,
    _parse_value,
)
from ._redis_url import (
    Scope,
    _check_lease,
    _check_name,
    _check_scope,
    _describe_url,
    _pick,
    _split_url_options,
    host_identity,
)

if TYPE_CHECKING:
    from types import TracebackType

    from anyio.abc import ByteStream, TaskGroup

    from .._metrics_base import MetricsRecorder

logger = logging.getLogger(__name__)

#: Lease length in seconds when neither the caller nor the URL sets one.
DEFAULT_LEASE = 10.0
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")
_MAX_LISTED_KEYS = 100_000
_READ_BATCH = 200
_LIST_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class RedisClaimInfo(ClaimInfo):
    """One claim found in Redis, with its fencing token and remaining lease.

    `fencing_token` is None and `record` is None when the value was malformed.
    `expires_in` is in seconds, None for a key without an expiry.

    .. versionadded:: 0.1
    """

    fencing_token: int | None = None
    expires_in: float | None = None


class RedisRegistry(Registry):
    """Claims as leased keys in Redis, so that hosts sharing one server coordinate.

    A claim is one key per (scope, protocol, port), set only if absent and
    with a lease in milliseconds. Its value names the holder (host, pid,
    application id, a random claim id) and a fencing token from a counter
    that only grows. A task renews each lease after a third of its length;
    when renewal fails for a whole lease the claim is lost (see
    `RedisLease`). Release and renewal are Lua scripts that compare the
    claim id first.

    `url_or_client` is a ``redis://``, ``rediss://`` or ``unix://`` URL, or
    a `coredis.Redis` client. The URL may carry ``lease``, ``scope``,
    ``prefix`` and ``host_id`` query parameters; a keyword argument that
    names a different value raises `ValueError`. `lease` is in seconds
    (default 10). `scope` is ``"host"`` (default: one network namespace on
    one host, named by the host id and the namespace) or ``"cluster"``
    (every host sharing the server). `host_id` replaces the host identity,
    which is /etc/machine-id where it exists. Claims through this registry
    that name no recorder report to `metrics`.

    Use it as an async context manager: it owns the connection pool and the
    task group that renews leases, and leases still held when it closes are
    released and reported lost. Standalone Redis only; Redis Cluster is
    not supported.

    .. versionadded:: 0.1
    """

    name = "redis"

    def __init__(
        self,
        url_or_client: str | coredis.Redis[Any],
        *,
        prefix: str | None = None,
        lease: float | None = None,
        scope: Scope | None = None,
        host_id: str | None = None,
        metrics: MetricsRecorder | None = None,
    ) -> None:
        self.metrics = metrics
        options: dict[str, str] = {}
        target: object = url_or_client
        if isinstance(target, str):
            url, options = _split_url_options(target)
            self.address = _describe_url(url)
        elif isinstance(target, coredis.Redis):
            url = None
            self.address = str(target.connection_pool.location)
        else:
            msg = f"invalid Redis target {url_or_client!r}: expected a redis://, rediss:// or unix:// URL or a coredis.Redis client"
            raise TypeError(msg)

        self.lease = _check_lease(_pick("lease", lease, options, float, DEFAULT_LEASE))
        self.lease_ms = max(1, round(self.lease * 1000))
        self.request_timeout = self.lease / 2
        self.prefix = _check_name(
            "prefix", _pick("prefix", prefix, options, str, "aioportclaim")
        )
        self.scope_kind: Scope = _check_scope(
            _pick("scope", scope, options, str, "host")
        )
        chosen_host = _pick("host_id", host_id, options, str, None)
        self.host_id = _check_name("host_id", chosen_host or host_identity())
        if self.scope_kind == "cluster":
            self._scope = "cluster"
        else:
            self._scope = f"{self.host_id}:{network_scope()}"

        if url is None:
            self.client = cast("coredis.Redis[Any]", url_or_client)
        else:
            self.client = coredis.Redis.from_url(
                url,
                stream_timeout=self.request_timeout,
                connect_timeout=max(self.request_timeout, 1.0),
            )
        self.acquire_script = self.client.register_script(_ACQUIRE)
        self.renew_script = self.client.register_script(_RENEW)
        self.release_script = self.client.register_script(_RELEASE)
        self._read_script = self.client.register_script(_READ)
        self._scripts = (
            self.acquire_script,
            self.renew_script,
            self.release_script,
            self._read_script,
        )
        self._counter_key = f"{self.prefix}:fence"
        self._leases: set[RedisLease] = set()
        self._task_group: TaskGroup | None = None
        self._stack: AsyncExitStack | None = None

    def __repr__(self) -> str:
        return f"RedisRegistry({self.address!r}, scope={self._scope!r}, lease={self.lease})"

    def scope(self) -> str:
        return self._scope

    def redis_key(self, key: ClaimKey) -> str:
        """Return the Redis key that stores the claim of `key`."""
        return f"{self.prefix}:claim:{key.scope}:{key.kind}:{key.port}"

    async def __aenter__(self) -> Self:
        if self._stack is not None:
            msg = f"{self!r} is already open; open it once with 'async with'"
            raise RuntimeError(msg)
        # Errors are raised outside the client's task group, which would
        # otherwise wrap them in an exception group.
        await self._probe()
        stack = AsyncExitStack()
        await stack.enter_async_context(self.client)
        try:
            await self._load_scripts()
            self._task_group = await stack.enter_async_context(
                anyio.create_task_group()
            )
        except BaseException:
            with anyio.CancelScope(shield=True):
                await stack.aclose()
            raise
        self._stack = stack
        logger.debug("opened %r", self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        group, self._task_group = self._task_group, None
        if stack is None or group is None:
            return
        leases = list(self._leases)
        if leases:
            logger.warning(
                "%r closed while %d claims were still held; releasing them",
                self,
                len(leases),
            )
        with anyio.CancelScope(shield=True):
            for lease in leases:
                lease.mark_lost("the Redis registry was closed")
                await lease.release()
        group.cancel_scope.cancel()
        try:
            await stack.__aexit__(exc_type, exc, traceback)
        except BaseExceptionGroup as errors:
            # The task groups wrap the block's own exception; let it leave
            # unwrapped when it is the only one.
            if exc is None or not _only_contains(errors, exc):
                raise
        logger.debug("closed %r", self)

    async def _probe(self) -> None:
        """Connect once without the client, so that a wrong address fails cleanly."""
        location = self.client.connection_pool.location
        try:
            with anyio.fail_after(max(self.request_timeout, 1.0)):
                if isinstance(location, UnixDomainSocketLocation):
                    stream: ByteStream = await anyio.connect_unix(location.path)
                elif isinstance(location, TCPLocation):
                    stream = await anyio.connect_tcp(location.host, location.port)
                else:
                    return
                await stream.aclose()
        except (OSError, TimeoutError) as error:
            action = "connecting"
            raise self.request_error(action, error) from error

    async def _load_scripts(self) -> None:
        # Loading the scripts up front also proves that Redis responds.
        try:
            with anyio.fail_after(max(self.request_timeout, 1.0)):
                for script in self._scripts:
                    await self.client.script_load(script.script)
        except _REDIS_ERRORS as error:
            action = "connecting"
            raise self.request_error(action, error) from error

    def describe_failure(self, error: BaseException) -> str:
        """Say why a request failed: a timeout, or the innermost cause's message."""
        if isinstance(error, TimeoutError):
            return f"no reply within {self.request_timeout:g} s"
        return _describe_error(error)

    def request_error(self, action: str, error: BaseException) -> PortClaimError:
        """Describe a failed Redis request as a `PortClaimError` naming the server."""
        cause = self.describe_failure(error)
        msg = f"{action} failed at Redis {self.address}: {cause}; check that redis-server runs there and that the URL names it"
        return PortClaimError(msg)

    async def try_acquire(self, key: ClaimKey, holder: HolderRecord) -> Lease | None:
        group = self._task_group
        if group is None:
            msg = f"{self!r} is not open; claim inside 'async with RedisRegistry(...)'"
            raise RuntimeError(msg)
        redis_key = self.redis_key(key)
        claim_id = secrets.token_hex(16)
        prefix = f"{_VERSION} {claim_id} "
        sent = anyio.current_time()
        try:
            with anyio.fail_after(self.request_timeout):
                reply: Any = await self.acquire_script(
                    keys=[redis_key, self._counter_key],
                    args=[prefix, holder.to_bytes(), self.lease_ms],
                )
        except BaseException as error:
            # The request may have reached Redis: remove a key that carries
            # this claim id instead of leaving it to expire.
            await self._delete_quietly(redis_key, prefix)
            if isinstance(error, _REDIS_ERRORS):
                action = f"claiming {redis_key}"
                raise self.request_error(action, error) from error
            raise
        if reply is None:
            logger.debug("%s is held by another claim", redis_key)
            return None

        expires_at = sent + self.lease * (1 - _CLOCK_DRIFT)
        lease = RedisLease(self, key, claim_id, int(_as_bytes(reply)), expires_at)
        self._leases.add(lease)
        group.start_soon(lease.keep_alive, name=f"renew {redis_key}")
        logger.debug("claimed %s with token %d", redis_key, lease.fencing_token)
        return lease

    async def _delete_quietly(self, redis_key: str, prefix: str) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.request_timeout):
            try:
                await self.release_script(keys=[redis_key], args=[prefix])
            except _REDIS_ERRORS as error:
                logger.debug("cleaning up %s failed: %s", redis_key, error)

    def forget(self, lease: RedisLease) -> None:
        """Stop tracking a released lease."""
        self._leases.discard(lease)

    def is_held_here(self, kind: str, port: int) -> bool:
        return any(
            lease.key.port == port and lease.key.kind == kind for lease in self._leases
        )

    async def list_claims(self, *, all_scopes: bool = False) -> list[ClaimInfo]:
        """List the claims in this registry's scope, or in every scope under the prefix.

        Values are untrusted: a key whose value is not a string of at most a
        few kilobytes in the expected form is listed without a record.
        """
        scope = "*" if all_scopes else _GLOB_SPECIAL.sub(r"\\\1", self._scope) + ":*"
        pattern = _GLOB_SPECIAL.sub(r"\\\1", self.prefix) + ":claim:" + scope
        try:
            with anyio.fail_after(_LIST_TIMEOUT):
                names = await self._scan(pattern)
                claims: list[ClaimInfo] = []
                for start in range(0, len(names), _READ_BATCH):
                    claims.extend(await self._read(names[start : start + _READ_BATCH]))
        except _REDIS_ERRORS as error:
            action = "listing claims"
            raise self.request_error(action, error) from error
        claims.sort(key=lambda info: (info.key.scope, info.key.port, info.key.kind))
        return claims

    async def _scan(self, pattern: str) -> list[str]:
        names: list[str] = []
        async for name in self.client.scan_iter(match=pattern, count=500):
            names.append(_as_bytes(name).decode("utf-8", "replace"))
            if len(names) >= _MAX_LISTED_KEYS:
                logger.warning(
                    "listing stopped after %d keys matching %s", len(names), pattern
                )
                break
        return names

    async def _read(self, names: list[str]) -> list[RedisClaimInfo]:
        reply: Any = await self._read_script(keys=names, args=[_MAX_VALUE_BYTES])
        values = list(cast("list[Any]", reply))
        claims = []
        for index, name in enumerate(names):
            value, ttl = values[2 * index], values[2 * index + 1]
            info = self._parse_entry(name, value, ttl)
            if info is not None:
                claims.append(info)
        return claims

    def _parse_entry(
        self, name: str, value: object, ttl: object
    ) -> RedisClaimInfo | None:
        key = _parse_key(name, f"{self.prefix}:claim:")
        if key is None or ttl == -2:
            return None  # not a claim key, or it expired since the scan
        token, record = _parse_value(value)
        expires_in = ttl / 1000 if isinstance(ttl, int) and ttl >= 0 else None
        return RedisClaimInfo(key, True, record, name, token, expires_in)


def _only_contains(
    errors: BaseExceptionGroup[BaseException], error: BaseException
) -> bool:
    """Tell whether every leaf of nested exception groups is `error` itself."""
    for inner in errors.exceptions:
        if isinstance(inner, BaseExceptionGroup):
            if not _only_contains(inner, error):
                return False
        elif inner is not error:
            return False
    return True
