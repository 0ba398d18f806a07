"""What each benchmark candidate does to get one port, and the port server it may use.

Two floors bound what any claim can cost: binding port 0 (no lock, no
choice) and locking a file then binding (no inode check, no probe, no
record). The minimal correct claim does every step that a correct claim
needs, written plainly in synchronous Python. The peers are called as their
documentation shows.
"""

from __future__ import annotations

import errno
import fcntl
import math
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import ephemeral_port_reserve
import port_for
import portpicker

from aioportclaim import FileLockRegistry

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
_BUSY = (errno.EADDRINUSE, errno.EACCES)


def is_free(port: int) -> bool:
    """Tell whether TCP `port` can be bound on 127.0.0.1 and, where it exists, ::1."""
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        try:
            with socket.socket(family) as probe:
                probe.bind((host, port))
        except OSError as error:
            if error.errno in _BUSY:
                return False
    return True


def find_free_window(count: int, low: int = 61000, high: int = 65535) -> list[int]:
    """Return the first `count` ports from `low` up that are free now.

    The default region lies above Linux's default ephemeral range
    (32768-60999), so outgoing connections rarely take these ports.
    """
    ports = [port for port in range(low, high + 1) if is_free(port)][:count]
    if len(ports) < count:
        msg = f"only {len(ports)} of the {count} ports needed are free in {low}-{high}; stop the servers there or pass a smaller count"
        raise RuntimeError(msg)
    return ports


@dataclass
class Held:
    """A claim held by a synchronous candidate: its socket and lock file."""

    port: int
    sock: socket.socket
    fd: int

    def release(self) -> None:
        self.sock.close()
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


class WindowClaims:
    """Synchronous claims over a window of ports, in aioportclaim's lock file layout.

    Lock files live where `FileLockRegistry` keeps them, so claim_port and
    these claims meet the same, already existing files.
    """

    def __init__(self, lock_dir: Path, ports: list[int]) -> None:
        self.lock_dir = lock_dir
        self.scope_dir = FileLockRegistry(lock_dir).scope_dir()
        self.ports = ports
        self.rng = random.Random()
        self.record_prefix = f'{{"pid":{os.getpid()},"port":'

    def create_lock_files(self) -> None:
        for port in self.ports:
            os.close(os.open(self.lock_path(port), _OPEN_FLAGS, 0o644))

    def lock_path(self, port: int) -> str:
        return f"{self.scope_dir}/tcp-{port}.lock"

    def candidates(self) -> Iterator[int]:
        """Yield every port once in a random order: a random start and a coprime stride."""
        count = len(self.ports)
        index = self.rng.randrange(count)
        stride = 1
        if count > 2:
            stride = self.rng.randrange(1, count)
            while math.gcd(stride, count) != 1:
                stride = self.rng.randrange(1, count)
        for _ in range(count):
            yield self.ports[index]
            index = (index + stride) % count

    def take_lock_file_bind(self) -> Held:
        """Lock a port's file without waiting, then bind and listen: the floor of a locked claim."""
        for port in self.candidates():
            fd = os.open(self.lock_path(port), _OPEN_FLAGS, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            sock = bind_listening(port)
            if sock is None:
                os.close(fd)
                continue
            return Held(port, sock, fd)
        msg = "every port of the window is locked or in use"
        raise RuntimeError(msg)

    def take_minimal(self) -> Held:
        """Claim a port with every step a correct claim needs, and nothing else."""
        for port in self.candidates():
            path = self.lock_path(port)
            fd = os.open(path, _OPEN_FLAGS, 0o644)
            held = self._claim_locked_file(port, path, fd)
            if held is not None:
                return held
            os.close(fd)
        msg = "every port of the window is locked or in use"
        raise RuntimeError(msg)

    def _claim_locked_file(self, port: int, path: str, fd: int) -> Held | None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        opened = os.fstat(fd)
        current = os.stat(path, follow_symlinks=False)
        if (opened.st_dev, opened.st_ino) != (current.st_dev, current.st_ino):
            return None  # a cleaner replaced the file: this lock guards nothing
        sock = bind_listening(port)
        if sock is None:
            return None
        if other_family_taken(port):
            sock.close()
            return None
        record = f"{self.record_prefix}{port}}}".encode()
        os.pwrite(fd, record, 0)
        os.ftruncate(fd, len(record))
        return Held(port, sock, fd)

    def lock_file_bind(self) -> int:
        held = self.take_lock_file_bind()
        held.release()
        return held.port

    def minimal(self) -> int:
        held = self.take_minimal()
        held.release()
        return held.port


def bind_listening(port: int) -> socket.socket | None:
    """Bind TCP `port` on 127.0.0.1 with SO_REUSEADDR and listen; None if it is busy."""
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(128)
    except OSError as error:
        sock.close()
        if error.errno in _BUSY:
            return None
        raise
    return sock


def other_family_taken(port: int) -> bool:
    """Probe TCP `port` on ::1, as a client of "localhost" may reach it there."""
    try:
        probe = socket.socket(socket.AF_INET6)
    except OSError:
        return False
    with probe:
        probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("::1", port))
        except OSError as error:
            return error.errno in _BUSY
    return False


def bind_zero() -> int:
    """Let the kernel choose a port by binding port 0, then close the socket."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def portpicker_without_server() -> int:
    port: int = portpicker.pick_unused_port()
    return port


def port_for_random() -> int:
    port: int = port_for.select_random()
    return port


def ephemeral_reserve() -> int:
    port: int = ephemeral_port_reserve.reserve()
    return port


class PortServer:
    """portpicker's port server, run as its documentation shows, on an abstract unix socket."""

    def __init__(self, log_path: Path) -> None:
        self.address = f"@aioportclaim-bench-{os.getpid()}"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.problem: str | None = None

    def start(self) -> bool:
        """Start the server and wait until it hands out a port; record why it cannot."""
        script = find_portserver_script()
        if script is None:
            self.problem = "portserver.py, which the portpicker package installs as a script, was not found next to the Python interpreter or on PATH"
            return False
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, script, "--portserver_address", self.address],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.process.poll() is None:
            if self._accepts_connections() and portpicker.get_port_from_port_server(
                self.address
            ):
                return True
            time.sleep(0.05)
        self.stop()
        tail = self.log_path.read_text(errors="replace")[-300:].strip()
        self.problem = f"the port server did not hand out a port within 10 s: {tail or 'no output'}"
        return False

    def _accepts_connections(self) -> bool:
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect("\0" + self.address[1:])
            except OSError:
                return False
        return True

    def pick(self) -> int:
        port: int = portpicker.pick_unused_port(portserver_address=self.address)
        return port

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def find_portserver_script() -> str | None:
    beside = Path(sys.executable).parent / "portserver.py"
    if beside.exists():
        return str(beside)
    return shutil.which("portserver.py")


def sync_pickers(
    window: WindowClaims, server: PortServer | None
) -> dict[str, Callable[[], int]]:
    """Return the synchronous candidates by name; each call gets a port and gives it back."""
    pickers: dict[str, Callable[[], int]] = {
        "bind-to-0 floor": bind_zero,
        "lock file + bind floor": window.lock_file_bind,
        "minimal correct claim": window.minimal,
        "portpicker, no server": portpicker_without_server,
    }
    if server is not None and server.problem is None:
        pickers["portpicker, port server"] = server.pick
    pickers["port-for select_random"] = port_for_random
    pickers["ephemeral-port-reserve"] = ephemeral_reserve
    return pickers
