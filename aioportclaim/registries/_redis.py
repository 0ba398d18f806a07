"""Claims in Redis, shared across hosts: leased keys, renewal and fencing tokens."""

from __future__ import annotations

import logging
import math
import os
import re
import secrets
import socket
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Self, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio

try:
    import coredis
    from coredis.connection import TCPLocation, UnixDomainSocketLocation
    from coredis.exceptions import RedisError
except ImportError as error:
    _message = "RedisRegistry needs the coredis client; install it with: pip install 'aioportclaim[redis]'"
    raise ImportError(_message) from error

from .._exceptions import PortClaimError
from .._system import network_scope
from ._base import MAX_RECORD_BYTES, ClaimInfo, ClaimKey, HolderRecord, Lease, Registry

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    from anyio.abc import ByteStream, TaskGroup

logger = logging.getLogger(__name__)

Scope = Literal["host", "cluster"]

#: Lease length in seconds when neither the caller nor the URL sets one.
DEFAULT_LEASE = 10.0
#: A lease is renewed after this fraction of its length has passed.
RENEW_FRACTION = 1 / 3
# The local end of a lease comes this fraction early, so a host whose clock
# runs slightly faster than the Redis server's still stops first.
_CLOCK_DRIFT = 0.01
_MIN_LEASE = 0.05
_URL_SCHEMES = ("redis", "rediss", "unix")
_URL_OPTIONS = ("lease", "scope", "prefix", "host_id")
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")
# A value is "v1 <claim id> <fencing token> <holder record JSON>".
_VERSION = "v1"
_MAX_VALUE_BYTES = MAX_RECORD_BYTES + 128
_MAX_LISTED_KEYS = 100_000
_READ_BATCH = 200
_LIST_TIMEOUT = 30.0
_REDIS_ERRORS = (RedisError, OSError, TimeoutError)

# KEYS: claim key, fencing counter. ARGV: "v1 <claim id> ", holder record,
# lease in ms. Returns the fencing token as a string, or nil when taken.
# A retried request whose first reply was lost finds its own claim id and
# succeeds again, so the client's retries never turn a claim into "taken".
_ACQUIRE = """
local current = redis.call('GET', KEYS[1])
if current then
  if string.sub(current, 1, #ARGV[1]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    return string.match(current, '^%S+ %S+ (%d+) ')
  end
  return false
end
local token = redis.call('INCR', KEYS[2])
if token == 1 then
  -- A new or emptied server: start from its clock in microseconds, so
  -- tokens keep growing across a restart that lost the counter.
  local now = redis.call('TIME')
  token = tonumber(now[1]) * 1000000 + tonumber(now[2])
  redis.call('SET', KEYS[2], string.format('%d', token))
end
local text = string.format('%d', token)
redis.call('SET', KEYS[1], ARGV[1] .. text .. ' ' .. ARGV[2], 'PX', ARGV[3])
return text
"""

# KEYS: claim key. ARGV: "v1 <claim id> ", lease in ms. Returns 1 if extended.
_RENEW = """
local current = redis.call('GET', KEYS[1])
if current and string.sub(current, 1, #ARGV[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS: claim key. ARGV: "v1 <claim id> ". Returns 1 if deleted.
_RELEASE = """
local current = redis.call('GET', KEYS[1])
if current and string.sub(current, 1, #ARGV[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: claim keys found by SCAN. ARGV: largest value to return, in bytes.
# Returns value, PTTL for each key. Anyone who can write to Redis can write
# these keys, so a value is nil unless it is a string within the limit.
_READ = """
local result = {}
for _, key in ipairs(KEYS) do
  local value = false
  if redis.call('TYPE', key).ok == 'string'
      and redis.call('STRLEN', key) <= tonumber(ARGV[1]) then
    value = redis.call('GET', key)
  end
  result[#result + 1] = value
  result[#result + 1] = redis.call('PTTL', key)
end
return result
"""


@dataclass(frozen=True, slots=True)
class RedisClaimInfo(ClaimInfo):
    """One claim found in Redis, with its fencing token and remaining lease.

    `fencing_token` is None and `record` is None when the value was malformed.
    `expires_in` is in seconds, None for a key without an expiry.

    .. versionadded:: 0.1
    """

    fencing_token: int | None = None
    expires_in: float | None = None


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
    which is /etc/machine-id where it exists.

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
    ) -> None:
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


def host_identity() -> str:
    """Name this host for the ``"host"`` scope: its machine id, else its host name.

    Separate hosts have separate machine ids, while network namespace
    numbers repeat across hosts. Containers often share the machine id of
    their host or have none; pass ``host_id=`` to choose another name.
    """
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            with open(path, encoding="ascii") as file:
                text = file.read(256).strip()
        except (OSError, UnicodeDecodeError):
            continue
        if _NAME.match(text):
            return text
    name = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname())[:128]
    return name or "unknown-host"


def _parse_key(name: str, head: str) -> ClaimKey | None:
    if not name.startswith(head):
        return None
    parts = name[len(head) :].rsplit(":", 2)
    if len(parts) != 3:
        return None
    scope, kind, port_text = parts
    if not scope or kind not in ("tcp", "udp"):
        return None
    if not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5):
        return None
    port = int(port_text)
    if not 0 < port <= 65535:
        return None
    return ClaimKey(scope, "tcp" if kind == "tcp" else "udp", port)


def _parse_value(value: object) -> tuple[int | None, HolderRecord | None]:
    if not isinstance(value, bytes | str):
        return None, None
    data = _as_bytes(value)
    if len(data) > _MAX_VALUE_BYTES:
        return None, None
    parts = data.split(b" ", 3)
    if len(parts) != 4 or parts[0] != _VERSION.encode():
        return None, None
    token_text = parts[2]
    if not (token_text.isdigit() and len(token_text) <= 19):
        return None, None
    return int(token_text), HolderRecord.from_bytes(parts[3])


def _split_url_options(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    if parts.scheme not in _URL_SCHEMES:
        msg = f"invalid Redis URL {_describe_url(url)!r}: expected a redis://, rediss:// or unix:// URL"
        raise ValueError(msg)
    ours: dict[str, str] = {}
    rest: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in _URL_OPTIONS:
            ours[name] = value
        else:
            rest.append((name, value))
    return urlunsplit(parts._replace(query=urlencode(rest))), ours


def _describe_url(url: str) -> str:
    """Render a URL without credentials or query, for messages and logs."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    try:
        host = parts.hostname or "localhost"
        port = parts.port or 6379
    except ValueError:
        return f"{parts.scheme}://(invalid address)"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}:{port}{parts.path}"


def _pick(
    name: str,
    keyword_value: Any,
    options: dict[str, str],
    convert: Callable[[str], Any],
    default: Any,
) -> Any:
    if name not in options:
        return default if keyword_value is None else keyword_value
    text = options[name]
    try:
        from_url = convert(text)
    except ValueError:
        msg = f"invalid {name} {text!r} in the Redis URL"
        raise ValueError(msg) from None
    if keyword_value is not None and keyword_value != from_url:
        msg = f"{name} is {keyword_value!r} but the Redis URL sets {text!r}; set it in one place"
        raise ValueError(msg)
    return from_url


def _check_lease(lease: object) -> float:
    if isinstance(lease, bool) or not isinstance(lease, int | float):
        msg = f"invalid lease {lease!r}: expected seconds as a number"
        raise TypeError(msg)
    if not (math.isfinite(lease) and lease >= _MIN_LEASE):
        msg = f"invalid lease {lease!r}: expected seconds, {_MIN_LEASE} or more"
        raise ValueError(msg)
    return float(lease)


def _check_scope(scope: object) -> Scope:
    if scope == "host":
        return "host"
    if scope == "cluster":
        return "cluster"
    msg = f"invalid scope {scope!r}: expected 'host' (one network namespace of one host) or 'cluster'"
    raise ValueError(msg)


def _check_name(option: str, value: object) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        msg = f"invalid {option} {value!r}: expected 1 to 128 letters, digits, '.', '_' or '-'"
        raise ValueError(msg)
    return value


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return b""


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


def _do_nothing() -> None:
    pass
