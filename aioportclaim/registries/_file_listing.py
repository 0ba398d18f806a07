"""Listing and pruning the lock files of a FileLockRegistry directory."""

from __future__ import annotations

import logging
import os
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

from ._base import MAX_RECORD_BYTES, ClaimInfo, ClaimKey, HolderRecord
from ._locking import lock_nowait, unlock

logger = logging.getLogger(__name__)

LOCK_NAME = re.compile(r"^(tcp|udp)-([0-9]{1,5})\.lock$")


def list_scope_dirs(base: Path) -> list[str]:
    try:
        entries = os.scandir(base)
    except FileNotFoundError:
        return []
    with entries:
        return [entry.path for entry in entries if entry.is_dir(follow_symlinks=False)]


def list_directory(scope_dir: str) -> list[ClaimInfo]:
    scope = os.path.basename(scope_dir)
    claims = []
    with os.scandir(scope_dir) as entries:
        for entry in entries:
            match = LOCK_NAME.match(entry.name)
            if match is None or not entry.is_file(follow_symlinks=False):
                continue
            key = ClaimKey(scope, match.group(1), int(match.group(2)))  # type: ignore[arg-type]
            held, record = inspect_lock_file(entry.path)
            claims.append(ClaimInfo(key, held, record, entry.path))
    return claims


def inspect_lock_file(path: str) -> tuple[bool, HolderRecord | None]:
    # Testing the lock takes it for a moment: a claimer racing for this port
    # then sees it busy and moves on to its next candidate.
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC)
    except OSError:
        return False, None
    try:
        data = os.pread(fd, MAX_RECORD_BYTES + 1, 0)
        if lock_nowait(fd):
            unlock(fd)
            held = False
        else:
            held = True
    finally:
        os.close(fd)
    return held, HolderRecord.from_bytes(data)


def remove_odd_entries(scope_dir: str) -> list[str]:
    """Remove links, FIFOs, sockets and empty directories named like lock files.

    No claim can lock them, since lock files are opened without following
    links and must be regular files; unlinking them never follows a link.
    """
    removed = []
    with os.scandir(scope_dir) as entries:
        for entry in entries:
            if not LOCK_NAME.match(entry.name):
                continue
            if entry.is_file(follow_symlinks=False):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    os.rmdir(entry.path)  # only when empty; otherwise logged below
                else:
                    os.unlink(entry.path)
            except OSError as error:
                logger.warning("failed to remove %s: %s", entry.path, error)
                continue
            removed.append(entry.path)
    return removed


def remove_if_unheld(path: str) -> bool:
    try:
        fd = os.open(path, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if not lock_nowait(fd):
            return False
        opened = os.fstat(fd)
        current = os.stat(path, follow_symlinks=False)
        if (opened.st_dev, opened.st_ino) != (current.st_dev, current.st_ino):
            return False
        os.unlink(path)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
