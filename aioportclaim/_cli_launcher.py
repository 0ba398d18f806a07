"""Start ``run``'s command so that it gets SIGTERM when ``run`` dies (Linux).

Usage: python -I -S _cli_launcher.py PARENT_PID ERROR_FD COMMAND [ARGUMENT ...]

``run`` starts this script by its path, so it imports nothing but the
standard library. The script sets SIGTERM as its parent-death signal
(``prctl(PR_SET_PDEATHSIG)``), then replaces itself with COMMAND
through ``os.execvp``. COMMAND therefore keeps the pid that ``run`` started,
and the hand-off's check of the listener's owner still applies. If PARENT_PID
is no longer the parent, ``run`` died before the death signal was set, and
the script exits without starting COMMAND.

ERROR_FD is the write end of a pipe that closes when exec succeeds. When
exec fails, the script writes the errno in decimal to it and exits with 127,
so ``run`` can tell "command not found" from a command that exited.

The kernel sends the death signal when the thread that started this process
ends, not only the whole parent process, so the parent must start it from a
thread that lives as long as it does: ``run`` starts it from the asyncio
event loop on its main thread. The kernel clears the setting when COMMAND is
a set-user-ID or set-group-ID program, or has file capabilities, and it
covers only COMMAND, not the processes that COMMAND starts.

NOTE: the kernel sends the signal each time COMMAND is re-parented. When
``run`` dies while another of its threads (asyncio's child watcher) still
runs, COMMAND is first re-parented to that thread, so it can get SIGTERM
twice in quick succession.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
EXIT_EXEC_FAILED = 127


def set_death_signal(signum: int) -> None:
    """Set `signum` as the signal that this process gets when its parent dies.

    Where prctl is missing or fails, the command still starts, without the
    death signal.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(
            PR_SET_PDEATHSIG,
            ctypes.c_ulong(signum),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
        )
    except (OSError, AttributeError):
        pass


def main(arguments: list[str]) -> None:
    parent, error_fd, command = int(arguments[0]), int(arguments[1]), arguments[2:]
    os.set_inheritable(error_fd, False)
    set_death_signal(signal.SIGTERM)
    if os.getppid() != parent:
        # The parent died before the death signal was set, so it will never come.
        os._exit(128 + signal.SIGTERM)
    try:
        os.execvp(command[0], command)
    except OSError as error:
        os.write(error_fd, str(error.errno or 0).encode("ascii"))
    os._exit(EXIT_EXEC_FAILED)


if __name__ == "__main__":
    main(sys.argv[1:])
