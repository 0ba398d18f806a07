"""A private redis-server for one test: start, pause, restart, inspect, stop.

The server listens on a unix socket in a short temporary directory and,
when asked, on a free loopback TCP port. It keeps no data on disk
(``--save "" --appendonly no``), so a restart starts empty.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import pytest

from .conftest import IN_CI, find_free_ports

if TYPE_CHECKING:
    from collections.abc import Iterator

RespValue = bytes | int | str | list["RespValue"] | None

_START_TIMEOUT = 10.0


def require_redis_server() -> str:
    """Return the path of redis-server; skip without it, except in CI, where it fails."""
    path = shutil.which("redis-server")
    if path is not None:
        return path
    if IN_CI:
        pytest.fail("redis-server is not installed, and CI must run the Redis tests")
    pytest.skip("redis-server is not installed")


class RedisServer:
    """One redis-server process that this test started and stops by its pid."""

    def __init__(self, executable: str, directory: Path, *, tcp: bool) -> None:
        self.executable = executable
        self.directory = directory
        self.socket_path = str(directory / "redis.sock")
        self.port = find_free_ports(1)[0] if tcp else 0
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def url(self) -> str:
        """URL of the unix socket."""
        return f"unix://{self.socket_path}"

    @property
    def tcp_url(self) -> str:
        """URL of the loopback TCP port."""
        if not self.port:
            msg = "this server has no TCP port; request it with tcp=True"
            raise RuntimeError(msg)
        return f"redis://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """Process id of the running server."""
        if self.process is None:
            msg = "redis-server is not running"
            raise RuntimeError(msg)
        return self.process.pid

    def start(self) -> None:
        """Start the server and wait until it replies to PING."""
        arguments = [
            self.executable,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--unixsocket",
            self.socket_path,
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
            "--logfile",
            str(self.directory / "redis.log"),
        ]
        self.process = subprocess.Popen(arguments, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.directory / "redis.log").read_text(errors="replace")
                pytest.fail(
                    f"redis-server exited with {self.process.returncode}: {log[-2000:]}"
                )
            try:
                if self.command("PING") == "PONG":
                    return
            except OSError:
                pass
            time.sleep(0.01)
        self.stop()
        pytest.fail(f"redis-server did not answer within {_START_TIMEOUT} s")

    def stop(self) -> None:
        """Stop the server by its pid (resuming it first if paused) and wait for it."""
        process, self.process = self.process, None
        if process is None:
            return
        if self.paused:
            process.send_signal(signal.SIGCONT)
            self.paused = False
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def restart(self) -> None:
        """Stop the server and start an empty one at the same addresses."""
        self.stop()
        self.start()

    def pause(self) -> None:
        """Freeze the server with SIGSTOP, so connections stay open but get no replies."""
        os.kill(self.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """Let a paused server run again with SIGCONT."""
        os.kill(self.pid, signal.SIGCONT)
        self.paused = False

    def command(self, *arguments: str | bytes | int) -> RespValue:
        """Send one command over the unix socket and return the parsed reply."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(2.0)
            connection.connect(self.socket_path)
            connection.sendall(_encode(arguments))
            reader = connection.makefile("rb")
            try:
                return _read_reply(reader)
            finally:
                reader.close()

    def get(self, key: str) -> bytes | None:
        """Return the value of `key`, or None if it is missing."""
        value = self.command("GET", key)
        if value is not None and not isinstance(value, bytes):
            msg = f"GET {key} returned {value!r}"
            raise TypeError(msg)
        return value

    def keys(self, pattern: str = "*") -> list[bytes]:
        """Return the keys that match `pattern`, sorted."""
        reply = self.command("KEYS", pattern)
        if not isinstance(reply, list):
            msg = f"KEYS returned {reply!r}"
            raise TypeError(msg)
        return sorted(item for item in reply if isinstance(item, bytes))


def _encode(arguments: tuple[str | bytes | int, ...]) -> bytes:
    parts = [b"*%d\r\n" % len(arguments)]
    for argument in arguments:
        data = argument if isinstance(argument, bytes) else str(argument).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _read_reply(reader: BinaryIO) -> RespValue:
    line = reader.readline()
    if not line.endswith(b"\r\n"):
        msg = f"connection closed in a reply: {line!r}"
        raise OSError(msg)
    kind, body = line[:1], line[1:-2]
    if kind == b"+":
        return str(body.decode())
    if kind == b"-":
        msg = f"redis-server returned an error: {body.decode()}"
        raise RuntimeError(msg)
    if kind == b":":
        return int(body)
    if kind == b"$":
        size = int(body)
        if size < 0:
            return None
        data = reader.read(size + 2)
        return data[:-2]
    if kind == b"*":
        count = int(body)
        return None if count < 0 else [_read_reply(reader) for _ in range(count)]
    msg = f"unexpected reply line {line!r}"
    raise OSError(msg)


@contextmanager
def start_redis_server(*, tcp: bool = False) -> Iterator[RedisServer]:
    """Run a private redis-server until the block ends."""
    executable = require_redis_server()
    # Unix socket paths are limited to about 100 bytes, so the directory
    # lives directly under the system temporary directory.
    directory = Path(tempfile.mkdtemp(prefix="apc-redis-"))
    server = RedisServer(executable, directory, tcp=tcp)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(name="redis_server")
def redis_server_fixture() -> Iterator[RedisServer]:
    """A redis-server on a unix socket, stopped by its pid after the test."""
    with start_redis_server() as server:
        yield server


@pytest.fixture(name="redis_tcp_server")
def redis_tcp_server_fixture() -> Iterator[RedisServer]:
    """A redis-server on a unix socket and a loopback TCP port."""
    with start_redis_server(tcp=True) as server:
        yield server
