"""Shared fixtures: both backends, a private lock directory, process helpers."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from aioportclaim import FileLockRegistry
from aioportclaim.registries import LOCK_DIR_ENV

if TYPE_CHECKING:
    from collections.abc import Iterator

HELPERS = Path(__file__).parent / "helpers"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every async test on asyncio and on trio."""
    return str(request.param)


@pytest.fixture(autouse=True, scope="session")
def _session_lock_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    # Claims made through the default registry, here and in child processes,
    # land in a directory of this run instead of the user's real one.
    path = tmp_path_factory.mktemp("locks")
    previous = os.environ.get(LOCK_DIR_ENV)
    os.environ[LOCK_DIR_ENV] = str(path)
    yield path
    if previous is None:
        del os.environ[LOCK_DIR_ENV]
    else:
        os.environ[LOCK_DIR_ENV] = previous


@pytest.fixture
def lock_dir(tmp_path: Path) -> Path:
    """Return a fresh lock directory for one test."""
    path = tmp_path / "locks"
    path.mkdir(mode=0o700)
    return path


@pytest.fixture
def registry(lock_dir: Path) -> FileLockRegistry:
    """Return a file lock registry on the test's own directory."""
    return FileLockRegistry(lock_dir)


def count_open_fds() -> int:
    """Count this process's open file descriptors."""
    return len(os.listdir("/proc/self/fd"))


def ipv6_available() -> bool:
    """Tell whether ::1 can be bound here."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def require_ipv6() -> None:
    """Skip the calling test where IPv6 is missing, except in CI, where it fails."""
    if ipv6_available():
        return
    if IN_CI:
        pytest.fail(
            "IPv6 loopback (::1) is unavailable, and CI must run the IPv6 tests"
        )
    pytest.skip("IPv6 loopback (::1) is unavailable on this host")


def require_root_tools(*commands: str) -> None:
    """Skip unless running as root with the given commands, except in CI, where it fails."""
    missing = [command for command in commands if not _which(command)]
    if os.geteuid() == 0 and not missing:
        return
    reason = f"needs root and {', '.join(commands)}"
    if IN_CI:
        pytest.fail(f"CI must run this test, but it {reason}")
    pytest.skip(reason)


def _which(command: str) -> bool:
    return any(
        os.access(os.path.join(directory, command), os.X_OK)
        for directory in os.environ.get("PATH", "").split(os.pathsep)
    )


def find_free_ports(count: int) -> list[int]:
    """Return `count` consecutive ports that are free for TCP and UDP on both loopbacks.

    They come from the ephemeral range, which default claims never use, so
    tests that name ports explicitly do not meet claims of other tests.
    """
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(42000, 60000 - count)
        ports = list(range(base, base + count))
        if all(_is_free(port) for port in ports):
            return ports
    pytest.fail(f"found no {count} consecutive free ports in 42000-60000")


def _is_free(port: int) -> bool:
    hosts = [("127.0.0.1", socket.AF_INET)]
    if ipv6_available():
        hosts.append(("::1", socket.AF_INET6))
    for host, family in hosts:
        for sock_type in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            with socket.socket(family, sock_type) as probe:
                try:
                    probe.bind((host, port))
                except OSError:
                    return False
    return True


def run_python(
    code: str, *args: str, timeout: float = 60, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    """Run a Python snippet in a child process and capture its output."""
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kwargs,
    )
