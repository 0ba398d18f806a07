"""Kill ``aioportclaim run`` with SIGKILL and report what happens to its command.

Usage: cli_orphan_check.py WAIT_SECONDS RUN_ARGUMENT ...

This process becomes a child subreaper (Linux), so the command that run
started is re-parented to it when run dies, and it can collect the command's
exit status. It starts ``python -m aioportclaim RUN_ARGUMENT ...``, reads
run's notice "... (pid N) listens on ...", sends SIGKILL to run, and waits
up to WAIT_SECONDS for pid N to exit. It prints "EXITED <code>", with the
code that `os.waitstatus_to_exitcode` returns. If pid N is still running,
it prints "RUNNING", then kills pid N with SIGKILL and collects it.
"""

from __future__ import annotations

import ctypes
import os
import re
import selectors
import signal
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
NOTICE = re.compile(r"\(pid (\d+)\) listens on ")


def become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, ctypes.c_ulong(1), 0, 0, 0) != 0:
        sys.exit(f"prctl(PR_SET_CHILD_SUBREAPER) failed: errno {ctypes.get_errno()}")


def read_notice(run: subprocess.Popen[str], timeout: float) -> int:
    with selectors.DefaultSelector() as selector:
        selector.register(run.stderr, selectors.EVENT_READ)  # type: ignore[arg-type]
        if not selector.select(timeout):
            sys.exit(f"run printed no notice within {timeout} s")
    line = run.stderr.readline()  # type: ignore[union-attr]
    match = NOTICE.search(line)
    if match is None:
        sys.exit(f"unexpected line from run: {line!r}")
    return int(match.group(1))


def wait_for_exit(pid: int, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waited, status = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    return None


def main() -> None:
    wait_seconds = float(sys.argv[1])
    become_subreaper()
    run = subprocess.Popen(
        [sys.executable, "-m", "aioportclaim", *sys.argv[2:]],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        command_pid = read_notice(run, 30)
    finally:
        run.kill()
        run.wait()
        run.stderr.close()  # type: ignore[union-attr]

    code = wait_for_exit(command_pid, wait_seconds)
    if code is None:
        print("RUNNING", flush=True)
        os.kill(command_pid, signal.SIGKILL)
        os.waitpid(command_pid, 0)
    else:
        print("EXITED", code, flush=True)


if __name__ == "__main__":
    main()
