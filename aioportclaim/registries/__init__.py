"""Registries: where claims live."""

from __future__ import annotations

from ._base import ClaimInfo, ClaimKey, HolderRecord, Lease, Registry
from ._file import LOCK_DIR_ENV, FileLease, FileLockRegistry, default_lock_dir
from ._memory import MemoryRegistry

__all__ = [
    "LOCK_DIR_ENV",
    "ClaimInfo",
    "ClaimKey",
    "FileLease",
    "FileLockRegistry",
    "HolderRecord",
    "Lease",
    "MemoryRegistry",
    "Registry",
    "default_lock_dir",
]
