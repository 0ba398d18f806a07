"""The pytest plugin: fixtures in sync, asyncio and trio tests, options, xdist, Redis."""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import defaultdict
from typing import TYPE_CHECKING, NamedTuple

import anyio
import pytest
from anyio.abc import SocketListener

from aioportclaim import (
    ClaimKey,
    ClaimTimeoutError,
    FileLockRegistry,
    HolderRecord,
    RedisRegistry,
    claim_port,
)
from aioportclaim.registries import REGISTRY_ENV

from .conftest import HELPERS, find_free_ports

# Importing the fixture registers it for this module's tests.
from .redis_server import redis_server_fixture  # noqa: F401

if TYPE_CHECKING:
    from pathlib import Path

    from aioportclaim.pytest_plugin import ClaimedPortFactory

    from .redis_server import RedisServer

# Test module run by the Redis tests below, in one process and in file order.
# Another holder has claimed in Redis every port that --aioportclaim-ports
# allows except FREE_PORT. FACTORY_PORTS are free ports outside that range.
REDIS_SUITE = """
import os
import socket
from contextlib import ExitStack

from aioportclaim import RedisRegistry
from aioportclaim.pytest_plugin import reserve_in_portal


def held_in_redis(portal, registry):
    claims = portal.call(registry.list_claims)
    return {(info.key.kind, info.key.port) for info in claims}


def count_open_fds():
    return len(os.listdir("/proc/self/fd"))


def test_port_skips_claims_in_redis(
    claimed_tcp_port, aioportclaim_portal, aioportclaim_registry
):
    assert isinstance(aioportclaim_registry, RedisRegistry)
    assert claimed_tcp_port == int(os.environ["FREE_PORT"])
    assert ("tcp", claimed_tcp_port) in held_in_redis(
        aioportclaim_portal, aioportclaim_registry
    )
    with socket.socket() as server:
        server.bind(("127.0.0.1", claimed_tcp_port))
        server.listen()


def test_other_fixtures_claim_in_redis(
    claimed_tcp_socket,
    claimed_udp_port,
    claimed_tcp_port_factory,
    aioportclaim_portal,
    aioportclaim_registry,
):
    factory_port = claimed_tcp_port_factory(os.environ["FACTORY_PORTS"])
    held = held_in_redis(aioportclaim_portal, aioportclaim_registry)

    assert ("tcp", claimed_tcp_socket.getsockname()[1]) in held
    assert ("udp", claimed_udp_port) in held
    assert ("tcp", factory_port) in held


def test_reservations_leak_no_descriptor(aioportclaim_portal, aioportclaim_registry):
    def reserve_once():
        with ExitStack() as stack:
            reserve_in_portal(
                aioportclaim_portal,
                stack,
                os.environ["FACTORY_PORTS"],
                kind="tcp",
                registry=aioportclaim_registry,
            )

    reserve_once()
    fds_before = count_open_fds()
    held_before = held_in_redis(aioportclaim_portal, aioportclaim_registry)
    for _ in range(5):
        reserve_once()

    assert count_open_fds() == fds_before
    assert held_in_redis(aioportclaim_portal, aioportclaim_registry) == held_before
"""


# Test module run with --aioportclaim-ports naming one port, PORT. Each of
# the first three tests requests that TCP port twice. The last two show that
# the failed tests released it, and that TCP and UDP claims of one port
# coexist.
EXHAUSTED_SUITE = """
import os


def test_factory_after_port(claimed_tcp_port, claimed_tcp_port_factory):
    claimed_tcp_port_factory()


def test_socket_after_port(claimed_tcp_port, claimed_tcp_socket):
    pass


def test_factory_spec_twice(claimed_tcp_port_factory):
    claimed_tcp_port_factory(os.environ["PORT"])
    claimed_tcp_port_factory(os.environ["PORT"])


def test_udp_beside_tcp(claimed_tcp_port, claimed_udp_port):
    assert claimed_tcp_port == claimed_udp_port


def test_factory_after_release(claimed_tcp_port_factory):
    assert claimed_tcp_port_factory() == int(os.environ["PORT"])
"""


def held_ports() -> set[tuple[str, int]]:
    """Return the (protocol, port) pairs held in the default lock directory."""
    claims = FileLockRegistry().list_claims_now()
    return {(info.key.kind, info.key.port) for info in claims if info.held}


async def expect_claim_timeout(port: int, kind: str = "tcp") -> ClaimTimeoutError:
    with pytest.raises(ClaimTimeoutError) as caught:
        async with claim_port(port, kind=kind, timeout=0.2):
            pass
    return caught.value


class TestSyncTests:
    def test_tcp_port_bindable_and_locked(self, claimed_tcp_port: int) -> None:
        with socket.socket() as server:
            server.bind(("127.0.0.1", claimed_tcp_port))
            server.listen()

            assert ("tcp", claimed_tcp_port) in held_ports()

    def test_udp_port_bindable_and_locked(self, claimed_udp_port: int) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
            server.bind(("127.0.0.1", claimed_udp_port))

            assert ("udp", claimed_udp_port) in held_ports()

    def test_tcp_socket_accepts_connection(
        self, claimed_tcp_socket: socket.socket
    ) -> None:
        address = claimed_tcp_socket.getsockname()
        with socket.create_connection(address, timeout=5):
            connection, _ = claimed_tcp_socket.accept()
            connection.close()

        assert address[0] == "127.0.0.1"
        assert ("tcp", address[1]) in held_ports()

    def test_factory_gives_distinct_ports(
        self, claimed_tcp_port_factory: ClaimedPortFactory
    ) -> None:
        ports = [claimed_tcp_port_factory() for _ in range(3)]

        assert len(set(ports)) == 3
        assert claimed_tcp_port_factory.ports == tuple(ports)
        assert {("tcp", port) for port in ports} <= held_ports()

    def test_factory_takes_port_spec(
        self, claimed_tcp_port_factory: ClaimedPortFactory
    ) -> None:
        ports = find_free_ports(2)

        first = claimed_tcp_port_factory(ports)
        second = claimed_tcp_port_factory(ports)

        assert sorted([first, second]) == ports

    def test_tcp_port_excludes_claim_port(self, claimed_tcp_port: int) -> None:
        error = anyio.run(expect_claim_timeout, claimed_tcp_port)

        assert error.rejections["locked"] == 1


class TestAsyncTests:
    async def test_tcp_port_serves_listener(self, claimed_tcp_port: int) -> None:
        listener = await anyio.create_tcp_listener(
            local_host="127.0.0.1", local_port=claimed_tcp_port
        )
        async with listener, await anyio.connect_tcp("127.0.0.1", claimed_tcp_port):
            assert ("tcp", claimed_tcp_port) in held_ports()

    async def test_udp_port_serves_socket(self, claimed_udp_port: int) -> None:
        async with await anyio.create_udp_socket(
            local_host="127.0.0.1", local_port=claimed_udp_port
        ) as server:
            assert (
                server.extra(anyio.abc.SocketAttribute.local_port) == claimed_udp_port
            )

    async def test_tcp_socket_wraps_as_listener(
        self, claimed_tcp_socket: socket.socket
    ) -> None:
        port = claimed_tcp_socket.getsockname()[1]
        listener = await SocketListener.from_socket(claimed_tcp_socket)
        async with listener, await anyio.connect_tcp("127.0.0.1", port):
            stream = await listener.accept()
            await stream.aclose()

    async def test_factory_gives_distinct_ports(
        self, claimed_tcp_port_factory: ClaimedPortFactory
    ) -> None:
        first, second = claimed_tcp_port_factory(), claimed_tcp_port_factory()

        assert first != second

    async def test_tcp_port_excludes_claim_port(self, claimed_tcp_port: int) -> None:
        error = await expect_claim_timeout(claimed_tcp_port)

        assert error.rejections["locked"] == 1

    async def test_udp_port_excludes_claim_port(self, claimed_udp_port: int) -> None:
        error = await expect_claim_timeout(claimed_udp_port, "udp")

        assert error.rejections["locked"] == 1

    async def test_tcp_socket_excludes_claim_port(
        self, claimed_tcp_socket: socket.socket
    ) -> None:
        error = await expect_claim_timeout(claimed_tcp_socket.getsockname()[1])

        assert error.rejections["locked"] == 1


class Span(NamedTuple):
    port: int
    start: float
    end: float
    pid: int


def run_pytest(
    directory: Path, *arguments: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run pytest on `directory` in a child process, with only that directory's config."""
    (directory / "pytest.ini").write_text("[pytest]\n")
    child_env = {
        key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")
    }
    child_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *arguments],
        cwd=directory,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def read_spans(path: Path) -> list[Span]:
    spans = []
    for line in path.read_text().splitlines():
        port, start, end, pid = line.split()
        spans.append(Span(int(port), float(start), float(end), int(pid)))
    return spans


def overlapping_spans(spans: list[Span]) -> list[tuple[Span, Span]]:
    """Pairs of spans of one port, from different processes, that overlap in time."""
    by_port: dict[int, list[Span]] = defaultdict(list)
    for span in spans:
        by_port[span.port].append(span)
    return [
        (first, second)
        for same_port in by_port.values()
        for first, second in itertools.combinations(same_port, 2)
        if first.pid != second.pid
        and first.start < second.end
        and second.start < first.end
    ]


class TestSubprocessRuns:
    @pytest.mark.slow
    def test_xdist_workers_never_share_port(self, tmp_path: Path) -> None:
        ports = find_free_ports(6)
        records = tmp_path / "records.txt"
        shutil.copy(HELPERS / "plugin_xdist_suite.py", tmp_path / "test_suite.py")

        result = run_pytest(
            tmp_path,
            "-n",
            "4",
            f"--aioportclaim-ports={ports[0]}-{ports[-1]}",
            f"--aioportclaim-lock-dir={tmp_path / 'locks'}",
            env={"PLUGIN_RECORDS": str(records)},
        )
        spans = read_spans(records)
        shared = [
            port
            for port in ports
            if len({span.pid for span in spans if span.port == port}) > 1
        ]

        assert result.returncode == 0, result.stdout + result.stderr
        assert len(spans) == 24 + 2 * 16
        assert len({span.pid for span in spans}) == 4
        assert {span.port for span in spans} <= set(ports)
        assert shared, "no port was used by two workers, so nothing was tested"
        assert overlapping_spans(spans) == []

    def test_overlap_check_finds_overlap(self) -> None:
        spans = [Span(8000, 1.0, 2.0, 10), Span(8000, 1.5, 2.5, 11)]

        assert overlapping_spans(spans) == [(spans[0], spans[1])]
        assert overlapping_spans([spans[0], spans[1]._replace(pid=10)]) == []
        assert overlapping_spans([spans[0], spans[1]._replace(port=8001)]) == []
        assert overlapping_spans([spans[0], Span(8000, 2.0, 3.0, 11)]) == []

    def test_claims_released_and_options_applied(self, tmp_path: Path) -> None:
        ports = find_free_ports(8)
        spec = f"{ports[0]}-{ports[-1]}"
        lock_dir = tmp_path / "locks"
        shutil.copy(HELPERS / "plugin_release_suite.py", tmp_path / "test_suite.py")

        result = run_pytest(
            tmp_path,
            "-o",
            f"aioportclaim_ports={spec}",
            f"--aioportclaim-lock-dir={lock_dir}",
            env={"PLUGIN_PORTS": spec, "PLUGIN_LOCK_DIR": str(lock_dir)},
        )

        assert result.returncode == 0, result.stdout + result.stderr
        assert "5 passed" in result.stdout

    def test_exhausted_ports_fail_fast(self, tmp_path: Path) -> None:
        [port] = find_free_ports(1)
        (tmp_path / "test_suite.py").write_text(EXHAUSTED_SUITE)
        started = time.monotonic()

        # -rN drops the short summary, which repeats each message untruncated
        # when CI is set, so the counts below see each failure once.
        result = run_pytest(
            tmp_path,
            "-rN",
            f"--aioportclaim-ports={port}",
            f"--aioportclaim-lock-dir={tmp_path / 'locks'}",
            env={"PORT": str(port)},
        )
        elapsed = time.monotonic() - started
        session_message = (
            f"all ports of --aioportclaim-ports={port} are held by this "
            f"session's own fixtures (tcp {port}) until the test ends"
        )
        spec_message = (
            f"all ports of the spec '{port}' passed to claimed_tcp_port_factory "
            f"are held by this session's own fixtures (tcp {port})"
        )

        assert "2 failed, 2 passed, 1 error" in result.stdout, result.stdout
        assert result.stdout.count(session_message) == 2
        assert spec_message in result.stdout
        assert "widen --aioportclaim-ports" in result.stdout
        assert elapsed < 20

    def test_invalid_ports_option_is_usage_error(self, tmp_path: Path) -> None:
        result = run_pytest(tmp_path, "--aioportclaim-ports=9000-80")

        assert result.returncode == pytest.ExitCode.USAGE_ERROR
        assert "--aioportclaim-ports: invalid port spec '9000-80'" in result.stderr
        assert "Traceback" not in result.stderr


def plant_redis_claims(server: RedisServer, ports: list[int]) -> list[bytes]:
    """Claim TCP `ports` in Redis as another holder would; return the keys, sorted."""
    registry = RedisRegistry(server.url)
    keys = []
    for port in ports:
        key = registry.redis_key(ClaimKey(registry.scope(), "tcp", port))
        record = HolderRecord.for_this_process("tcp", port, "other").to_bytes()
        server.command("SET", key, b"v1 planted 1 " + record, "PX", 60_000)
        keys.append(key.encode())
    return sorted(keys)


class TestRedisRegistry:
    @pytest.mark.parametrize("setting", ["option", "ini", "environment"])
    def test_fixtures_claim_through_redis(
        self, tmp_path: Path, redis_server: RedisServer, setting: str
    ) -> None:
        ports = find_free_ports(7)
        planted = plant_redis_claims(redis_server, ports[:4])
        (tmp_path / "test_suite.py").write_text(REDIS_SUITE)
        env = {
            "FREE_PORT": str(ports[4]),
            "FACTORY_PORTS": f"{ports[5]}-{ports[6]}",
        }
        arguments = [f"--aioportclaim-ports={ports[0]}-{ports[4]}"]
        if setting == "option":
            arguments.append(f"--aioportclaim-registry={redis_server.url}")
        elif setting == "ini":
            arguments += ["-o", f"aioportclaim_registry={redis_server.url}"]
        else:
            env[REGISTRY_ENV] = redis_server.url

        result = run_pytest(tmp_path, *arguments, env=env)

        assert result.returncode == 0, result.stdout + result.stderr
        assert "3 passed" in result.stdout
        assert redis_server.keys("aioportclaim:claim:*") == planted
        assert redis_server.get("aioportclaim:fence") is not None

    def test_unreachable_redis_errors_tests(self, tmp_path: Path) -> None:
        [port] = find_free_ports(1)
        (tmp_path / "test_suite.py").write_text(
            "def test_first(claimed_tcp_port): pass\n"
            "def test_second(claimed_udp_port): pass\n"
        )

        result = run_pytest(
            tmp_path, f"--aioportclaim-registry=redis://127.0.0.1:{port}"
        )

        assert result.returncode == pytest.ExitCode.TESTS_FAILED
        assert "2 errors" in result.stdout
        assert f"connecting failed at Redis redis://127.0.0.1:{port}" in result.stdout

    @pytest.mark.parametrize(
        ("url", "message"),
        [
            ("ftp://127.0.0.1", "invalid --aioportclaim-registry 'ftp://127.0.0.1'"),
            ("redis://127.0.0.1?lease=soon", "invalid lease 'soon'"),
        ],
    )
    def test_invalid_registry_is_usage_error(
        self, tmp_path: Path, url: str, message: str
    ) -> None:
        result = run_pytest(tmp_path, f"--aioportclaim-registry={url}")

        assert result.returncode == pytest.ExitCode.USAGE_ERROR
        assert message in result.stderr
        assert "Traceback" not in result.stderr
