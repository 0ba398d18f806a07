"""Registries: where claims live.

`RedisRegistry`, `RedisLease` and `RedisClaimInfo` need the optional coredis
client (``pip install 'aioportclaim[redis]'``). They load on first access,
and they are left out of ``__all__`` so that ``from aioportclaim.registries
import *`` works without coredis; import them by name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._base import ClaimInfo, ClaimKey, HolderRecord, Lease, Registry
from ._defaults import REGISTRY_ENV, open_registry
from ._file import LOCK_DIR_ENV, FileLease, FileLockRegistry, default_lock_dir
from ._memory import MemoryRegistry

if TYPE_CHECKING:
    # The redundant aliases mark the names as exported for type checkers.
    from ._redis import RedisClaimInfo as RedisClaimInfo
    from ._redis import RedisRegistry as RedisRegistry
    from ._redis_lease import RedisLease as RedisLease

__all__ = [
    "LOCK_DIR_ENV",
    "REGISTRY_ENV",
    "ClaimInfo",
    "ClaimKey",
    "FileLease",
    "FileLockRegistry",
    "HolderRecord",
    "Lease",
    "MemoryRegistry",
    "Registry",
    "default_lock_dir",
    "open_registry",
]

# The Redis registry imports coredis, an optional dependency, on first use.
_REDIS_NAMES = ("RedisClaimInfo", "RedisLease", "RedisRegistry")


def __getattr__(name: str) -> Any:
    if name in _REDIS_NAMES:
        from . import _redis

        return getattr(_redis, name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
