"""The default registry: one lock file per port, locked with flock."""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import stat
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from .._exceptions import LockDirectoryError
from .._system import is_windows, network_scope
from ._base import ClaimInfo, ClaimKey, HolderRecord, Lease, Registry
from ._file_listing import (
    list_directory,
    list_scope_dirs,
    remove_if_unheld,
    remove_odd_entries,
)
from ._locking import lock_nowait as lock_nowait
from ._locking import unlock

if TYPE_CHECKING:
    from .._metrics_base import MetricsRecorder

logger = logging.getLogger(__name__)

#: Environment variable that sets the lock directory when no path is given.
LOCK_DIR_ENV = "AIOPORTCLAIM_LOCK_DIR"

_OPEN_FLAGS = (
    os.O_RDWR
    | os.O_CREAT
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)
# A cleaner can unlink and recreate a lock file between our open and our lock.
# Each retry starts from a fresh open; past this many the key counts as busy.
_INODE_RETRIES = 3
# Mode of the per-namespace directory inside a shared lock directory.
_SHARED_MODE = 0o1777
# Holder records are padded to this many bytes; longer ones are written whole.
_RECORD_SIZE = 256

# Keys held through any FileLockRegistry of this process, by lock file path.
# flock already makes two open files of one process conflict, but on NFS
# Linux emulates flock with POSIX locks, which belong to the whole process.
# This table keeps same-process claims exclusive there too, and lets the
# claim path skip our own ports without a system call.
_held_here: dict[str, FileLease] = {}
_held_here_lock = threading.Lock()


def default_lock_dir() -> Path:
    """Return the lock directory to use when none is passed.

    `AIOPORTCLAIM_LOCK_DIR` wins; otherwise a per-user directory under the
    system temporary directory.
    """
    configured = os.environ.get(LOCK_DIR_ENV)
    if configured:
        return Path(configured)
    user = os.geteuid() if hasattr(os, "geteuid") else os.getlogin()
    return Path(tempfile.gettempdir()) / f"aioportclaim-{user}"


class FileLease(Lease):
    """A flock on one open lock file, with the file's identity at lock time."""

    __slots__ = ("_fd", "_identity", "file_size", "key", "path")

    def __init__(
        self, key: ClaimKey, path: str, fd: int, identity: tuple[int, int]
    ) -> None:
        self.key = key
        self.path = path
        self._fd = fd
        self._identity = identity
        self.file_size = 0

    @property
    def fd(self) -> int:
        """Descriptor of the locked file, or -1 once released."""
        return self._fd

    async def is_held(self) -> bool:
        return self.is_held_now()

    def is_held_now(self) -> bool:
        """Check that the file at the path is still the inode we locked."""
        if self._fd < 0:
            return False
        try:
            current = os.stat(self.path, follow_symlinks=False)
        except OSError:
            return False
        return (current.st_dev, current.st_ino) == self._identity

    async def release(self) -> None:
        self.release_now()

    def try_release_now(self) -> bool:
        self.release_now()
        return True

    def release_now(self) -> None:
        """Unlock and close; later calls do nothing.

        The holder record stays in the file, so a listing can show the last
        holder. Testing the lock shows whether that holder still has it.
        """
        fd, self._fd = self._fd, -1
        if fd < 0:
            return
        with _held_here_lock:
            if _held_here.get(self.path) is self:
                del _held_here[self.path]
        try:
            unlock(fd)
        except OSError as error:
            logger.warning("failed to unlock %s: %s", self.path, error)
        finally:
            os.close(fd)

    def forget_after_fork(self) -> None:
        """Close the descriptor that a forked child inherited, keeping the parent's lock."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass


class FileLockRegistry(Registry):
    """Claims as locked files in a directory, one file per protocol and port.

    The kernel drops a file lock when its holder dies, so a crashed process
    leaves no stale claim. Lock files stay after release, because creating a
    file costs more than locking an existing one; `prune` removes unheld ones.
    Locks live in one subdirectory per network namespace. Claims through
    this registry that name no recorder report to `metrics`.

    .. versionadded:: 0.1
    """

    name = "file"

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        metrics: MetricsRecorder | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else default_lock_dir()
        self.metrics = metrics
        self._scope = network_scope()
        self._scope_dir: str | None = None
        # In a sticky directory that several users share, lock files are
        # made readable and writable by all, so each user can lock them.
        self._shared = False

    def __repr__(self) -> str:
        return f"FileLockRegistry({str(self.path)!r})"

    def scope(self) -> str:
        return self._scope

    def scope_dir(self) -> str:
        """Return this namespace's lock directory, created and checked on first use."""
        if self._scope_dir is None:
            shared = _prepare_directory(self.path, parent_mode=0o700)
            scope_dir = self.path / self._scope
            _prepare_directory(scope_dir, parent_mode=0o700, shared_parent=shared)
            self._shared = shared
            self._scope_dir = str(scope_dir)
        return self._scope_dir

    def is_held_here(self, kind: str, port: int) -> bool:
        # Before the first claim no directory is checked, and nothing is held.
        if self._scope_dir is None:
            return False
        return _lock_file_path(self._scope_dir, kind, port) in _held_here

    def lock_path(self, key: ClaimKey) -> str:
        """Return the lock file path for `key`."""
        return _lock_file_path(self.scope_dir(), key.kind, key.port)

    async def try_acquire(self, key: ClaimKey, holder: HolderRecord) -> Lease | None:
        return self.try_acquire_now(key, holder)

    def try_acquire_now(self, key: ClaimKey, holder: HolderRecord) -> FileLease | None:
        """Lock the file for `key` without blocking; None if another holder has it."""
        path = self.lock_path(key)
        with _held_here_lock:
            if path in _held_here:
                return None
        for _ in range(_INODE_RETRIES):
            lease = self._lock_file(key, path)
            if lease is None:
                return None
            if lease.is_held_now():
                return self._record(lease, holder)
            logger.debug("lock file %s was replaced while locking it; retrying", path)
            lease.release_now()
        return None

    def _lock_file(self, key: ClaimKey, path: str) -> FileLease | None:
        try:
            fd = self._open_lock_file(path)
        except OSError as error:
            self._check_open_error(path, error)
            return None
        try:
            if not lock_nowait(fd):
                os.close(fd)
                return None
            status = os.fstat(fd)
            if not stat.S_ISREG(status.st_mode):
                os.close(fd)
                _warn_odd_lock_file(path, "is not a regular file")
                return None
            if self._shared and status.st_uid == os.geteuid():
                _share_lock_file(fd, status)
        except BaseException:
            os.close(fd)
            raise
        lease = FileLease(key, path, fd, (status.st_dev, status.st_ino))
        lease.file_size = status.st_size
        return lease

    def _open_lock_file(self, path: str) -> int:
        # Open an existing file without O_CREAT first: with
        # fs.protected_regular set, Linux refuses O_CREAT on another user's
        # file in a sticky directory even when the file exists.
        try:
            return os.open(path, _OPEN_FLAGS & ~os.O_CREAT)
        except FileNotFoundError:
            return os.open(path, _OPEN_FLAGS, 0o666 if self._shared else 0o644)

    def _check_open_error(self, path: str, error: OSError) -> None:
        # A symbolic link or a directory in place of a lock file, or another
        # user's file, makes this one port unusable, not the whole directory.
        if error.errno == errno.ELOOP:
            _warn_odd_lock_file(path, "is a symbolic link")
            return
        if error.errno == errno.EISDIR:
            _warn_odd_lock_file(path, "is a directory")
            return
        if error.errno == errno.EACCES and os.path.lexists(path):
            _warn_odd_lock_file(path, "cannot be opened for writing by this user")
            return
        raise _directory_error(os.path.dirname(path), error) from error

    def _record(self, lease: FileLease, holder: HolderRecord) -> FileLease:
        try:
            # Padding to a fixed size overwrites any older record without a
            # truncate call; JSON ignores the trailing spaces.
            data = _encode_record(holder).ljust(_RECORD_SIZE)
            os.pwrite(lease.fd, data, 0)
            if lease.file_size > len(data):
                os.ftruncate(lease.fd, len(data))
        except OSError as error:
            lease.release_now()
            raise _directory_error(os.path.dirname(lease.path), error) from error
        with _held_here_lock:
            _held_here[lease.path] = lease
        return lease

    async def list_claims(self) -> list[ClaimInfo]:
        return self.list_claims_now()

    def list_claims_now(self, *, all_scopes: bool = False) -> list[ClaimInfo]:
        """List lock files of this namespace, or of every namespace in the directory."""
        scope_dirs = list_scope_dirs(self.path) if all_scopes else [self.scope_dir()]
        claims: list[ClaimInfo] = []
        for scope_dir in scope_dirs:
            claims.extend(list_directory(scope_dir))
        claims.sort(key=lambda info: (info.key.scope, info.key.port, info.key.kind))
        return claims

    def prune(self) -> list[str]:
        """Remove lock files that no process holds, and return their paths.

        Each file is locked before it is unlinked, so a holder is never
        disturbed; a claimer that opened the file just before sees the inode
        change and retries.
        """
        removed = [
            info.location
            for info in self.list_claims_now()
            if not info.held and remove_if_unheld(info.location)
        ]
        removed.extend(remove_odd_entries(self.scope_dir()))
        return removed


def _lock_file_path(scope_dir: str, kind: str, port: int) -> str:
    return f"{scope_dir}{os.sep}{kind}-{port}.lock"


def _prepare_directory(
    path: Path, *, parent_mode: int, shared_parent: bool = False
) -> bool:
    """Create `path` if missing and check that it is safe; return whether it is shared.

    A directory is safe when it is a real directory (not a symbolic link),
    owned by this user or by root, writable by us, and writable by others
    only with the sticky bit set. A sticky directory counts as shared.
    Inside a shared parent, the directory is made sticky and writable by
    all, and another user may own it, since the first user to claim creates it.
    """
    text = str(path)
    try:
        os.makedirs(text, mode=parent_mode, exist_ok=True)
    except FileExistsError:
        pass  # a symbolic link or a file: reported by the checks below
    except OSError as error:
        raise _directory_error(text, error) from error
    try:
        status = os.lstat(text)
        if shared_parent and stat.S_ISDIR(status.st_mode):
            status = _share_directory(text, status)
    except OSError as error:
        raise _directory_error(text, error) from error

    _check_directory(text, status, shared_parent=shared_parent)
    return bool(status.st_mode & stat.S_ISVTX)


def _share_directory(path: str, status: os.stat_result) -> os.stat_result:
    # The mode given to makedirs passes through the umask, so a directory
    # this user created is set to sticky and world-writable explicitly.
    if status.st_uid == os.geteuid() and stat.S_IMODE(status.st_mode) != _SHARED_MODE:
        os.chmod(path, _SHARED_MODE)
        return os.lstat(path)
    return status


def _check_directory(
    path: str, status: os.stat_result, *, shared_parent: bool = False
) -> None:
    if stat.S_ISLNK(status.st_mode):
        message = f"lock directory {path} is a symbolic link; set {LOCK_DIR_ENV} to the real directory it points to"
        raise LockDirectoryError(message, path)
    if not stat.S_ISDIR(status.st_mode):
        message = f"lock directory {path} exists but is not a directory; remove it or set {LOCK_DIR_ENV} to another path"
        raise LockDirectoryError(message, path)
    if is_windows():
        return

    euid = os.geteuid()
    sticky = bool(status.st_mode & stat.S_ISVTX)
    if status.st_uid not in (euid, 0) and not (shared_parent and sticky):
        message = f"lock directory {path} is owned by uid {status.st_uid}, not by this user (uid {euid}); set {LOCK_DIR_ENV} to a directory you own"
        raise LockDirectoryError(message, path)
    others_write = status.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if others_write and not status.st_mode & stat.S_ISVTX:
        message = f"lock directory {path} is writable by other users without the sticky bit, so they could replace lock files; run 'chmod 700 {path}' or 'chmod +t {path}'"
        raise LockDirectoryError(message, path)
    if not os.access(path, os.W_OK | os.X_OK):
        message = f"lock directory {path} is not writable by this user; fix its permissions or set {LOCK_DIR_ENV} to a writable directory"
        raise LockDirectoryError(message, path)


def _directory_error(path: str, error: OSError) -> LockDirectoryError:
    if error.errno in (errno.EMFILE, errno.ENFILE):
        message = f"cannot open a lock file in {path}: {error.strerror}; raise the descriptor limit (ulimit -n) or hold fewer claims"
        return LockDirectoryError(message, path)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free space or quota on that file system, or set " + LOCK_DIR_ENV
    elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "fix its permissions or set " + LOCK_DIR_ENV + " to a writable directory"
    else:
        fix = "check the directory or set " + LOCK_DIR_ENV + " to another one"
    message = f"cannot use lock directory {path}: {error.strerror or error}; {fix}"
    return LockDirectoryError(message, path)


def _forget_leases_in_child() -> None:
    # The child shares each locked open file with its parent. Closing the
    # child's copies leaves the parent's locks in place, and the child's
    # leases then report themselves released instead of closing reused fds.
    for lease in list(_held_here.values()):
        lease.forget_after_fork()
    _held_here.clear()
    global _held_here_lock
    _held_here_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_leases_in_child)


def _encode_record(holder: HolderRecord) -> bytes:
    """Serialize `holder` as `HolderRecord.to_bytes` does, reusing the fixed fields.

    Most fields are the same for every claim of a process, so their JSON is
    built once per process. That keeps the record cheap on the claim path.
    """
    fixed = _fixed_record_fields(holder.pid, holder.host, holder.container)
    app_id = "null" if holder.app_id is None else json.dumps(holder.app_id)
    return (
        f'{{"pid":{holder.pid},"kind":{json.dumps(holder.kind)},"port":{holder.port},'
        f'"app_id":{app_id},{fixed},"started":{holder.started!r}}}'
    ).encode()


@functools.lru_cache(maxsize=8)
def _fixed_record_fields(pid: int, host: str, container: str | None) -> str:
    return f'"host":{json.dumps(host)},"container":{json.dumps(container)}'


def _share_lock_file(fd: int, status: os.stat_result) -> None:
    # Created through the umask; other users of the shared directory need
    # to open it for writing to lock it and record themselves.
    if stat.S_IMODE(status.st_mode) != 0o666:
        os.fchmod(fd, 0o666)


# Paths already reported as unusable, so each is logged once per process.
_reported_odd_files: set[str] = set()


def _warn_odd_lock_file(path: str, problem: str) -> None:
    if path in _reported_odd_files:
        return
    _reported_odd_files.add(path)
    logger.warning(
        "lock file %s %s, so its port counts as locked; remove it, or run 'aioportclaim gc'",
        path,
        problem,
    )
