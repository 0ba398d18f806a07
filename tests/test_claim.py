"""Claims on real loopback sockets: options, exclusivity, families, blocks."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from typing import TYPE_CHECKING

import anyio
import pytest

from aioportclaim import (
    ClaimTimeoutError,
    FileLockRegistry,
    MemoryRegistry,
    PortClaimer,
    PortClaimError,
    PortExhaustedError,
    claim_port,
    default_candidate_ports,
    open_claim,
)

from .conftest import HELPERS, count_open_fds, find_free_ports, require_ipv6, run_python

if TYPE_CHECKING:
    from pathlib import Path

BIND_WITH_REUSEADDR = """
import socket, sys
kind = socket.SOCK_STREAM if sys.argv[2] == "tcp" else socket.SOCK_DGRAM
sock = socket.socket(socket.AF_INET, kind)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    sock.bind(("127.0.0.1", int(sys.argv[1])))
except OSError as error:
    print("FAILED", error.errno)
else:
    print("BOUND")
"""


def option(sock: socket.socket, name: int) -> int:
    return sock.getsockopt(socket.SOL_SOCKET, name)


class TestClaimPort:
    async def test_claim_port_yields_listening_socket(
        self, registry: FileLockRegistry
    ) -> None:
        async with claim_port(registry=registry) as sock:
            host, port = sock.getsockname()

            assert type(sock) is socket.socket
            assert host == "127.0.0.1"
            assert port in default_candidate_ports()
            assert option(sock, socket.SO_ACCEPTCONN) == 1

        assert sock.fileno() == -1

    async def test_claim_port_releases_for_next_claim(
        self, registry: FileLockRegistry
    ) -> None:
        async with claim_port(registry=registry) as sock:
            port = sock.getsockname()[1]
        async with claim_port(port, registry=registry, timeout=1) as again:
            assert again.getsockname()[1] == port

    async def test_claim_port_leaks_no_descriptor(
        self, registry: FileLockRegistry
    ) -> None:
        async with claim_port(registry=registry):
            pass
        before = count_open_fds()

        for _ in range(20):
            async with claim_port(registry=registry, kind=("tcp", "udp")):
                pass

        assert count_open_fds() == before

    async def test_exact_port_conflicts_in_same_process(
        self, registry: FileLockRegistry
    ) -> None:
        [port] = find_free_ports(1)
        async with claim_port(port, registry=registry):
            with pytest.raises(ClaimTimeoutError) as caught:
                async with claim_port(str(port), registry=registry, timeout=0.2):
                    pass

        assert caught.value.rejections["locked"] == 1
        assert str(port) in str(caught.value)

    async def test_exact_port_waits_for_release(
        self, registry: FileLockRegistry
    ) -> None:
        [port] = find_free_ports(1)
        first = PortClaimer(port, registry=registry)
        assert await first.try_claim()

        async with anyio.create_task_group() as group:

            async def release_soon() -> None:
                await anyio.sleep(0.2)
                await first.release()

            group.start_soon(release_soon)
            with anyio.fail_after(5):
                async with claim_port(port, registry=registry, timeout=5) as sock:
                    assert sock.getsockname()[1] == port

    async def test_exact_port_busy_socket_times_out(
        self, registry: FileLockRegistry
    ) -> None:
        [port] = find_free_ports(1)
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", port))
            holder.listen()
            with pytest.raises(ClaimTimeoutError) as caught:
                async with claim_port(port, registry=registry, timeout=0.1):
                    pass

        assert caught.value.rejections["in_use"] == 1
        assert isinstance(caught.value, TimeoutError)

    async def test_range_claim_skips_busy_ports(
        self, registry: FileLockRegistry
    ) -> None:
        ports = find_free_ports(3)
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", ports[0]))
            holder.listen()
            async with claim_port(ports[:2], registry=registry) as sock:
                assert sock.getsockname()[1] == ports[1]

    async def test_minus_one_spec_rejected(self) -> None:
        with pytest.raises(ValueError, match="no port"):
            async with claim_port(-1):
                pass


class TestSocketOptions:
    async def test_tcp_listening_claim_sets_reuseaddr(
        self, registry: FileLockRegistry
    ) -> None:
        async with claim_port(registry=registry) as sock:
            assert option(sock, socket.SO_REUSEADDR) == 1
            assert option(sock, socket.SO_REUSEPORT) == 0
            assert option(sock, socket.SO_ACCEPTCONN) == 1

    async def test_tcp_without_listen_skips_reuseaddr(
        self, registry: FileLockRegistry
    ) -> None:
        async with claim_port(registry=registry, listen=False) as sock:
            assert option(sock, socket.SO_REUSEADDR) == 0
            assert option(sock, socket.SO_ACCEPTCONN) == 0

    async def test_udp_claim_never_sets_reuseaddr(
        self, registry: FileLockRegistry
    ) -> None:
        async with claim_port(registry=registry, kind="udp") as sock:
            assert sock.type == socket.SOCK_DGRAM
            assert option(sock, socket.SO_REUSEADDR) == 0
            assert option(sock, socket.SO_REUSEPORT) == 0


def bind_from_child(port: int, kind: str) -> str:
    result = run_python(BIND_WITH_REUSEADDR, str(port), kind)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


class TestExclusivity:
    @pytest.mark.parametrize(
        ("kind", "listen"), [("tcp", True), ("tcp", False), ("udp", True)]
    )
    async def test_other_process_reuseaddr_bind_fails(
        self, registry: FileLockRegistry, kind: str, listen: bool
    ) -> None:
        async with claim_port(registry=registry, kind=kind, listen=listen) as sock:
            port = sock.getsockname()[1]
            output = bind_from_child(port, kind)

        assert output == f"FAILED {errno.EADDRINUSE}"

    async def test_other_process_binds_after_release(
        self, registry: FileLockRegistry
    ) -> None:
        async with claim_port(registry=registry) as sock:
            port = sock.getsockname()[1]

        assert bind_from_child(port, "tcp") == "BOUND"

    async def test_port_in_time_wait_can_be_claimed(
        self, registry: FileLockRegistry
    ) -> None:
        [port] = find_free_ports(1)
        async with claim_port(port, registry=registry) as server:
            with socket.create_connection(("127.0.0.1", port)) as client:
                connection, _ = server.accept()
                connection.close()  # the server closes first, so its side enters TIME_WAIT
                client.recv(1)

        async with claim_port(port, registry=registry, timeout=1) as again:
            assert again.getsockname()[1] == port
            assert bind_from_child(port, "tcp") == f"FAILED {errno.EADDRINUSE}"


class TestOtherFamily:
    async def test_port_taken_on_ipv6_not_handed_out(
        self, registry: FileLockRegistry
    ) -> None:
        require_ipv6()
        ports = find_free_ports(2)
        with socket.socket(socket.AF_INET6) as holder:
            holder.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            holder.bind(("::1", ports[0]))
            holder.listen()

            async with claim_port(ports, registry=registry) as sock:
                assert sock.getsockname()[1] == ports[1]
            with pytest.raises(ClaimTimeoutError):
                async with claim_port(ports[0], registry=registry, timeout=0.1):
                    pass

    async def test_port_taken_on_ipv4_not_handed_out(
        self, registry: FileLockRegistry
    ) -> None:
        require_ipv6()
        ports = find_free_ports(2)
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", ports[0]))
            holder.listen()

            async with claim_port(ports, host="::1", registry=registry) as sock:
                assert sock.getsockname()[1] == ports[1]
                assert sock.family == socket.AF_INET6

    async def test_localhost_claims_both_families(
        self, registry: FileLockRegistry
    ) -> None:
        require_ipv6()
        async with open_claim(host="localhost", registry=registry) as claim:
            hosts = [sock.getsockname()[0] for sock in claim.sockets]
            ports = {sock.getsockname()[1] for sock in claim.sockets}

        assert hosts == ["127.0.0.1", "::1"]
        assert ports == {claim.port}

    async def test_verify_detects_late_ipv6_listener(
        self, registry: FileLockRegistry
    ) -> None:
        require_ipv6()
        async with open_claim(registry=registry) as claim:
            assert await claim.still_own_claim()
            with socket.socket(socket.AF_INET6) as intruder:
                intruder.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                intruder.bind(("::1", claim.port))
                intruder.listen()

                assert not await claim.still_own_claim()


class TestGroups:
    async def test_tcp_and_udp_claimed_together(
        self, registry: FileLockRegistry
    ) -> None:
        async with open_claim(kind=("tcp", "udp"), registry=registry) as claim:
            types = [sock.type for sock in claim.sockets]
            ports = {sock.getsockname()[1] for sock in claim.sockets}

        assert types == [socket.SOCK_STREAM, socket.SOCK_DGRAM]
        assert ports == {claim.port}

    async def test_busy_udp_rolls_back_tcp(self, registry: FileLockRegistry) -> None:
        ports = find_free_ports(2)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
            holder.bind(("127.0.0.1", ports[0]))
            claimer = PortClaimer(ports[0], kind=("tcp", "udp"), registry=registry)

            assert not await claimer.try_claim()
            assert claimer.rejection == "in_use"
            assert bind_from_child(ports[0], "tcp") == "BOUND"
            async with claim_port(ports[0], kind="tcp", registry=registry, timeout=1):
                pass

    async def test_block_of_consecutive_ports(self, registry: FileLockRegistry) -> None:
        # Only the block starting at ports[2] avoids the busy ports[1] and
        # stays inside the five allowed ports.
        ports = find_free_ports(5)
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", ports[1]))
            holder.listen()
            async with open_claim(ports, count=3, registry=registry) as claim:
                bound = [sock.getsockname()[1] for sock in claim.sockets]

        assert bound == ports[2:5]
        assert claim.ports == tuple(ports[2:5])


class TestErrors:
    async def test_ipv4_claim_on_missing_address_fails(
        self, registry: FileLockRegistry
    ) -> None:
        with pytest.raises(PortClaimError, match="not available on this host"):
            async with claim_port(host="192.0.2.1", registry=registry):
                pass

    async def test_bind_eacces_counts_as_busy(
        self, registry: FileLockRegistry, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Root may bind any port here, so a refused bind (a privileged port,
        # or a Windows excluded range) is simulated for the first port only.
        ports = find_free_ports(2)
        real_bind = socket.socket.bind

        def refusing_bind(sock: socket.socket, address: tuple[str, int]) -> None:
            if address[1] == ports[0]:
                raise PermissionError(errno.EACCES, "Permission denied")
            real_bind(sock, address)

        monkeypatch.setattr(socket.socket, "bind", refusing_bind)
        async with claim_port(ports, registry=registry) as sock:
            assert sock.getsockname()[1] == ports[1]

    @pytest.mark.parametrize(
        ("arguments", "message"),
        [
            ({"host": "example.com"}, "resolve host names"),
            ({"kind": "sctp"}, "invalid kind 'sctp'"),
            ({"count": 0}, "invalid count 0"),
        ],
    )
    async def test_bad_arguments_name_value(
        self, registry: FileLockRegistry, arguments: dict[str, object], message: str
    ) -> None:
        with pytest.raises(ValueError, match=message):
            async with claim_port(registry=registry, **arguments):  # type: ignore[arg-type]
                pass

    async def test_range_exhausted_after_n_claims(self) -> None:
        registry = MemoryRegistry()
        ports = find_free_ports(3)
        async with (
            open_claim(ports, registry=registry),
            open_claim(ports, registry=registry),
        ):
            async with open_claim(ports, registry=registry):
                with pytest.raises(PortExhaustedError) as caught:
                    async with open_claim(ports, registry=registry, timeout=0.2):
                        pass

        assert caught.value.rejections["locked"] == 3


class TestCrossProcess:
    async def test_processes_get_distinct_ports_then_exhausted(self) -> None:
        ports = find_free_ports(4)
        spec = "[" + ",".join(map(str, ports)) + "]"
        command = [sys.executable, str(HELPERS / "hold_claim.py"), spec]
        children = [
            subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
            for _ in ports
        ]
        try:
            claimed = [int(child.stdout.readline().split()[1]) for child in children]  # type: ignore[union-attr]

            start = anyio.current_time()
            extra = subprocess.run(
                [*command, "--timeout", "0.5"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            elapsed = anyio.current_time() - start
        finally:
            for child in children:
                child.communicate("", timeout=30)

        assert sorted(claimed) == ports
        assert extra.returncode == 3, extra.stderr
        assert extra.stdout.startswith("EXHAUSTED")
        assert "4 locked by another holder" in extra.stdout
        assert elapsed < 10

    async def test_forked_child_leaves_parent_claim(
        self, registry: FileLockRegistry
    ) -> None:
        async with open_claim(registry=registry) as claim:
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)

            assert await claim.still_own_claim()
            assert bind_from_child(claim.port, "tcp") == f"FAILED {errno.EADDRINUSE}"
            other = FileLockRegistry(registry.path)
            assert other.list_claims_now()[0].held

    async def test_claim_works_with_lock_dir_env(self, tmp_path: Path) -> None:
        result = run_python(
            "import anyio, aioportclaim\n"
            "async def main():\n"
            "    async with aioportclaim.claim_port() as sock:\n"
            "        print(sock.getsockname()[1])\n"
            "anyio.run(main)\n",
            env={**os.environ, "AIOPORTCLAIM_LOCK_DIR": str(tmp_path / "env-locks")},
        )

        assert result.returncode == 0, result.stderr
        assert any((tmp_path / "env-locks").iterdir())


class TestWildcards:
    @pytest.mark.parametrize(
        ("host", "expected"), [("0.0.0.0", "0.0.0.0"), ("", "0.0.0.0"), ("::", "::")]
    )
    async def test_wildcard_claim_binds_all(
        self, registry: FileLockRegistry, host: str, expected: str
    ) -> None:
        if ":" in expected:
            require_ipv6()
        async with claim_port(host=host, registry=registry) as sock:
            port = sock.getsockname()[1]

            assert sock.getsockname()[0] == expected
            assert bind_from_child(port, "tcp") == f"FAILED {errno.EADDRINUSE}"

    async def test_wildcard_avoids_port_taken_on_ipv6(
        self, registry: FileLockRegistry
    ) -> None:
        require_ipv6()
        ports = find_free_ports(2)
        with socket.socket(socket.AF_INET6) as holder:
            holder.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            holder.bind(("::", ports[0]))
            holder.listen()

            async with claim_port(ports, host="0.0.0.0", registry=registry) as sock:
                assert sock.getsockname()[1] == ports[1]


class TestExactBlocks:
    @pytest.mark.parametrize(
        ("port", "count", "message"),
        [(40000, 0, "invalid count 0"), (65535, 3, "would end past port 65535")],
    )
    async def test_exact_port_block_checked(
        self, port: int, count: int, message: str
    ) -> None:
        with pytest.raises(ValueError, match=message):
            async with claim_port(port, count=count):
                pass

    async def test_exact_port_block_claims_all(
        self, registry: FileLockRegistry
    ) -> None:
        ports = find_free_ports(3)
        async with open_claim(ports[0], count=3, registry=registry) as claim:
            bound = [sock.getsockname()[1] for sock in claim.sockets]

        assert bound == ports
