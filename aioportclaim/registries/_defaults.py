"""The process-wide default registry."""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from ._file import LOCK_DIR_ENV, FileLockRegistry

if TYPE_CHECKING:
    from ._base import Registry

_default: tuple[str | None, Registry] | None = None
_default_lock = threading.Lock()


def default_registry() -> Registry:
    """Return the registry used when a claim names none.

    It is a `FileLockRegistry` on `AIOPORTCLAIM_LOCK_DIR` or the per-user
    default directory, made anew when that variable changes.
    """
    global _default
    configured = os.environ.get(LOCK_DIR_ENV)
    current = _default
    if current is not None and current[0] == configured:
        return current[1]
    with _default_lock:
        if _default is None or _default[0] != configured:
            _default = (configured, FileLockRegistry())
        return _default[1]
