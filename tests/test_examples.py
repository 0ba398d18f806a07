"""The example scripts, run as real processes: one request each, and a clean stop."""

from __future__ import annotations

import re
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"
#: Seconds for one example run, imports included.
RUN_TIMEOUT = 60
#: Seconds that a server may take to exit after SIGINT, and the hard limit
#: after which the test kills it.
STOP_SECONDS = 5
STOP_TIMEOUT = 15
# The first line that every example prints.
URL_LINE = re.compile(
    r"^Serving on (?P<scheme>http|tcp)://(?P<host>[0-9.]+):(?P<port>[0-9]+)/?"
)
ECHO_ANSWER = "Sent b'hello\\n', received b'hello\\n'"


def http_answer(server: str) -> str:
    return f"-> 200 'Hello from {server}\\n'"


ONCE_CASES = [
    pytest.param("aiohttp_server.py", [], http_answer("aiohttp"), id="aiohttp"),
    pytest.param("uvicorn_server.py", [], http_answer("uvicorn"), id="uvicorn"),
    pytest.param(
        "hypercorn_server.py",
        ["--backend", "asyncio"],
        http_answer("hypercorn"),
        id="hypercorn-asyncio",
    ),
    pytest.param(
        "hypercorn_server.py",
        ["--backend", "trio"],
        http_answer("hypercorn"),
        id="hypercorn-trio",
    ),
    pytest.param("asyncio_server.py", [], ECHO_ANSWER, id="asyncio"),
    pytest.param("trio_server.py", [], ECHO_ANSWER, id="trio"),
    pytest.param("demo.py", [], http_answer("uvicorn"), id="demo-uvicorn"),
    pytest.param(
        "demo.py", ["--server", "aiohttp"], http_answer("aiohttp"), id="demo-aiohttp"
    ),
]

SERVE_CASES = [
    pytest.param("aiohttp_server.py", [], b"Hello from aiohttp\n", id="aiohttp"),
    pytest.param("uvicorn_server.py", [], b"Hello from uvicorn\n", id="uvicorn"),
    pytest.param(
        "hypercorn_server.py",
        ["--backend", "asyncio"],
        b"Hello from hypercorn\n",
        id="hypercorn-asyncio",
    ),
    pytest.param(
        "hypercorn_server.py",
        ["--backend", "trio"],
        b"Hello from hypercorn\n",
        id="hypercorn-trio",
    ),
    pytest.param("asyncio_server.py", [], b"ping\n", id="asyncio"),
    pytest.param("trio_server.py", [], b"ping\n", id="trio"),
]


def example_command(script: str, *args: str) -> list[str]:
    return [sys.executable, str(EXAMPLES / script), *args]


def parse_url_line(line: str) -> tuple[str, str, int]:
    """Return the scheme, host and port of the "Serving on" line."""
    match = URL_LINE.match(line)
    assert match is not None, f"no 'Serving on' URL in {line!r}"
    return match["scheme"], match["host"], int(match["port"])


def read_first_line(process: subprocess.Popen[str], timeout: float) -> str:
    """Read the first output line of `process`, failing after `timeout` seconds."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    if not ready:
        pytest.fail(f"the example printed no line within {timeout} s")
    return process.stdout.readline()


def receive_all(conn: socket.socket) -> bytes:
    chunks = []
    while chunk := conn.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks)


def request(scheme: str, host: str, port: int) -> bytes:
    """Send an HTTP/1.0 GET, or one line to an echo server, and return the reply body."""
    with socket.create_connection((host, port), timeout=10) as conn:
        if scheme == "http":
            conn.sendall(f"GET / HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n".encode())
            head, _, body = receive_all(conn).partition(b"\r\n\r\n")
            assert head.startswith((b"HTTP/1.0 200 ", b"HTTP/1.1 200 ")), head
            return body
        conn.sendall(b"ping\n")
        conn.shutdown(socket.SHUT_WR)
        return receive_all(conn)


def port_is_free(host: str, port: int) -> bool:
    # SO_REUSEADDR, as servers set it: old connections in TIME_WAIT do not count.
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


@pytest.mark.parametrize(("script", "args", "answer"), ONCE_CASES)
def test_example_once_prints_answer(script: str, args: list[str], answer: str) -> None:
    result = subprocess.run(
        example_command(script, *args, *([] if script == "demo.py" else ["--once"])),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    lines = result.stdout.splitlines()
    scheme, host, port = parse_url_line(lines[0])
    answer_lines = [line for line in lines if line.endswith(answer)]

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert host == "127.0.0.1"
    assert 8000 <= port <= 8099, "the examples prefer ports 8000-8099"
    assert len(answer_lines) == 1, result.stdout
    if scheme == "http":
        assert answer_lines[0].startswith(f"GET http://{host}:{port}/ ->")


def test_demo_shows_rival_bind_failing() -> None:
    result = subprocess.run(
        example_command("demo.py"),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    _, host, port = parse_url_line(result.stdout)

    assert result.returncode == 0, result.stderr
    assert f"A second bind of {host}:{port} fails: " in result.stdout


@pytest.mark.parametrize(("script", "args", "reply"), SERVE_CASES)
def test_example_serves_until_sigint(
    script: str, args: list[str], reply: bytes
) -> None:
    process = subprocess.Popen(
        example_command(script, *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        scheme, host, port = parse_url_line(read_first_line(process, RUN_TIMEOUT))
        body = request(scheme, host, port)
        held_while_serving = not port_is_free(host, port)

        # A client that stays connected must not keep the server from stopping.
        with socket.create_connection((host, port), timeout=10):
            process.send_signal(signal.SIGINT)
            start = time.monotonic()
            _, stderr = process.communicate(timeout=STOP_TIMEOUT)
            stop_seconds = time.monotonic() - start
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert body == reply
    assert held_while_serving
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert stop_seconds < STOP_SECONDS
    assert port_is_free(host, port)
