"""The default registry, and the registry that AIOPORTCLAIM_REGISTRY names."""

from __future__ import annotations

import os
import threading
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from .._exceptions import PortClaimError
from ._base import Registry
from ._file import LOCK_DIR_ENV, FileLockRegistry

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator


#: Environment variable that names the registry: a redis://, rediss:// or
#: unix:// URL for Redis, or a file:// URL for a lock directory.
REGISTRY_ENV = "AIOPORTCLAIM_REGISTRY"
_REDIS_SCHEMES = ("redis", "rediss", "unix")

# The registry made for the values of AIOPORTCLAIM_REGISTRY and AIOPORTCLAIM_LOCK_DIR.
_default: tuple[tuple[str | None, str | None], Registry] | None = None
_default_lock = threading.Lock()
# The registry that the innermost `open_registry` block opened.
_opened: ContextVar[Registry | None] = ContextVar("aioportclaim_registry", default=None)


def default_registry() -> Registry:
    """Return the registry used when a claim names none.

    Inside an `open_registry` block it is the registry opened there.
    Otherwise it is the lock directory that `AIOPORTCLAIM_REGISTRY` names
    with a file:// URL, or a `FileLockRegistry` on `AIOPORTCLAIM_LOCK_DIR`
    or the per-user default directory. A Redis URL there raises
    `PortClaimError` outside `open_registry`, because a Redis registry
    needs a block that owns its connections and renewal task.
    """
    opened = _opened.get()
    if opened is not None:
        return opened
    global _default
    configured = (os.environ.get(REGISTRY_ENV) or None, os.environ.get(LOCK_DIR_ENV))
    current = _default
    if current is not None and current[0] == configured:
        return current[1]
    with _default_lock:
        if _default is None or _default[0] != configured:
            _default = (configured, _registry_from_environment(configured[0]))
        return _default[1]


def _registry_from_environment(url: str | None) -> Registry:
    if url is None:
        return FileLockRegistry()
    if is_redis_url(url):
        msg = (
            f"{REGISTRY_ENV} selects Redis, which needs an owner for its connections: "
            "claim inside 'async with open_registry():', or pass registry= a "
            "RedisRegistry opened with 'async with'"
        )
        raise PortClaimError(msg)
    return file_registry_from_url(url, source=REGISTRY_ENV)


def is_redis_url(url: str) -> bool:
    """Tell whether `url` names a Redis server (redis://, rediss:// or unix://)."""
    # Only the scheme matters here; urlsplit would raise on a malformed host
    # before the Redis registry could report it with the URL's name.
    scheme, separator, _ = url.strip().partition("://")
    return bool(separator) and scheme.lower() in _REDIS_SCHEMES


def file_registry_from_url(
    url: str, *, source: str = "registry URL"
) -> FileLockRegistry:
    """Return a `FileLockRegistry` on the directory of a file:// URL."""
    parts = urlsplit(url.strip())
    if (
        parts.scheme != "file"
        or not parts.path
        or parts.netloc not in ("", "localhost")
    ):
        msg = (
            f"invalid {source} {url!r}: expected a redis://, rediss:// or unix:// URL "
            "for Redis, or file:///path/to/lock-directory"
        )
        raise ValueError(msg)
    return FileLockRegistry(unquote(parts.path))


@asynccontextmanager
async def open_registry(url: str | None = None) -> AsyncIterator[Registry]:
    """Open the registry that `url` names and make it the default inside the block.

    `url` defaults to `AIOPORTCLAIM_REGISTRY`; when both are empty, the
    default file lock registry is used. A redis://, rediss:// or unix://
    URL opens a `RedisRegistry` (its ``lease``, ``scope``, ``prefix`` and
    ``host_id`` query parameters apply) that this block owns: leaving the
    block releases its leases and closes its connections. A file:// URL
    selects that lock directory. Claims that name no registry, in this task
    and in tasks started inside the block, use the opened one.

    .. versionadded:: 0.1
    """
    selected = (os.environ.get(REGISTRY_ENV, "") if url is None else url).strip()
    if is_redis_url(selected):
        from ._redis import RedisRegistry

        async with RedisRegistry(selected) as redis_registry:
            with _as_default(redis_registry):
                yield redis_registry
        return

    if selected:
        source = REGISTRY_ENV if url is None else "registry URL"
        registry: Registry = file_registry_from_url(selected, source=source)
    else:
        registry = default_registry()
    with _as_default(registry):
        yield registry


@contextmanager
def _as_default(registry: Registry) -> Iterator[Registry]:
    token = _opened.set(registry)
    try:
        yield registry
    finally:
        _opened.reset(token)


def resolve_registry(registry: object) -> Registry:
    """Return `registry`, or the default one when it is None; reject anything else.

    .. versionadded:: 0.1
    """
    if registry is None:
        return default_registry()
    if not isinstance(registry, Registry):
        msg = f"invalid registry {registry!r}: expected a Registry such as FileLockRegistry(path) or RedisRegistry(url), or None for the default"
        raise TypeError(msg)
    return registry
