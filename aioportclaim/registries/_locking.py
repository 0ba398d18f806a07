"""Non-blocking whole-file locks: flock on POSIX, msvcrt on Windows."""

from __future__ import annotations

import sys

if sys.platform == "win32":
    import msvcrt

    # NOTE: untested until CI covers Windows. msvcrt locks a byte range of
    # the file through one handle, and the lock ends when the handle closes.

    def lock_nowait(fd: int) -> bool:
        """Lock the first byte of the file; False if another handle holds it."""
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def unlock(fd: int) -> None:
        """Unlock the byte that `lock_nowait` locked."""
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    # flock locks belong to the open file description, not to the process,
    # so two opens of one lock file in one process conflict as they should.

    def lock_nowait(fd: int) -> bool:
        """Take an exclusive lock on the file; False if someone else holds one."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def unlock(fd: int) -> None:
        """Drop the lock that `lock_nowait` took."""
        fcntl.flock(fd, fcntl.LOCK_UN)
