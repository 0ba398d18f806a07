"""Test module run by test_plugin.py under pytest-xdist: record each claim's span.

Every test holds claimed ports while it binds and listens on them, and
appends "<port> <start> <end> <pid>" to the file in PLUGIN_RECORDS. Start
and end are CLOCK_MONOTONIC readings, which all processes of a host share.
"""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from aioportclaim.pytest_plugin import ClaimedPortFactory

HOLD_SECONDS = 0.02


def record(port: int, start: float, end: float) -> None:
    line = f"{port} {start!r} {end!r} {os.getpid()}\n"
    fd = os.open(os.environ["PLUGIN_RECORDS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line.encode())  # one write on an O_APPEND file is not interleaved
    finally:
        os.close(fd)


def serve_briefly(ports: list[int]) -> None:
    start = time.monotonic()
    servers = []
    try:
        for port in ports:
            server = socket.socket()
            servers.append(server)
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind(("127.0.0.1", port))
            server.listen()
        time.sleep(HOLD_SECONDS)
    finally:
        for server in servers:
            server.close()
    end = time.monotonic()
    for port in ports:
        record(port, start, end)


@pytest.mark.parametrize("index", range(24))
def test_port_fixture(claimed_tcp_port: int, index: int) -> None:
    serve_briefly([claimed_tcp_port])


@pytest.mark.parametrize("index", range(16))
def test_port_factory(claimed_tcp_port_factory: ClaimedPortFactory, index: int) -> None:
    serve_briefly([claimed_tcp_port_factory(), claimed_tcp_port_factory()])
