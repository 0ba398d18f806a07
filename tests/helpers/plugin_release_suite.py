"""Test module run by test_plugin.py: claims end with their test.

The tests run in file order in one process. The first one stores the
ports its fixtures held; the next ones check that those ports were
released and that the plugin's options took effect.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from aioportclaim import FileLockRegistry, claim_port, parse_port_spec
from aioportclaim.registries import LOCK_DIR_ENV

if TYPE_CHECKING:
    import socket

ports_held: dict[str, int] = {}
open_fds: list[int] = []


def count_open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_fixtures_hold_ports(
    claimed_tcp_port: int, claimed_udp_port: int, claimed_tcp_socket: socket.socket
) -> None:
    ports_held["tcp"] = claimed_tcp_port
    ports_held["udp"] = claimed_udp_port
    ports_held["socket"] = claimed_tcp_socket.getsockname()[1]
    open_fds.append(count_open_fds())
    claims = FileLockRegistry().list_claims_now()
    holding = {(info.key.kind, info.key.port) for info in claims if info.held}

    assert ("tcp", claimed_tcp_port) in holding
    assert ("udp", claimed_udp_port) in holding
    assert ("tcp", ports_held["socket"]) in holding


def test_fixtures_released_after_test() -> None:
    async def claim_again() -> None:
        for kind, port in [
            ("tcp", ports_held["tcp"]),
            ("udp", ports_held["udp"]),
            ("tcp", ports_held["socket"]),
        ]:
            async with claim_port(port, kind=kind, timeout=1):
                pass

    anyio.run(claim_again)


def test_fixtures_close_descriptors() -> None:
    # Four descriptors were held: three lock files and the listening socket.
    assert count_open_fds() == open_fds[0] - 4


def test_fixtures_use_configured_ports() -> None:
    allowed = parse_port_spec(os.environ["PLUGIN_PORTS"]).ports

    assert set(ports_held.values()) <= allowed


def test_lock_dir_option_exported() -> None:
    lock_dir = Path(os.environ[LOCK_DIR_ENV])

    assert lock_dir == Path(os.environ["PLUGIN_LOCK_DIR"])
    assert any(lock_dir.glob(f"*/tcp-{ports_held['tcp']}.lock"))
