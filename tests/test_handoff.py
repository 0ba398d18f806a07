"""Reservations handed to child processes: locks kept, listeners checked."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import urllib.request
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING

import anyio
import pytest

from aioportclaim import (
    ClaimLostError,
    ClaimTimeoutError,
    FileLockRegistry,
    HandoffError,
    ListenTimeoutError,
    PortReservation,
    claim_port,
    reserve_port,
)
from aioportclaim._handoff import stop_process
from aioportclaim._procfs import descendants

from .conftest import HELPERS, count_open_fds, require_ipv6, require_root_tools

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

    from anyio.abc import Process

LISTENER = str(HELPERS / "handoff_listener.py")


def listener_command(port: int, *options: str) -> list[str]:
    return [sys.executable, LISTENER, str(port), *options]


@contextmanager
def intruder(port: int, *options: str) -> Iterator[subprocess.Popen[str]]:
    """Run a process that ignores the registry and listens on `port`."""
    process = subprocess.Popen(
        listener_command(port, *options), stdout=subprocess.PIPE, text=True
    )
    try:
        line = process.stdout.readline()  # type: ignore[union-attr]
        assert line.split() == ["LISTENING", str(process.pid)]
        yield process
    finally:
        process.terminate()
        process.communicate(timeout=30)


@asynccontextmanager
async def child(command: list[str]) -> AsyncIterator[Process]:
    """Start `command` with its output discarded, and stop it at the end."""
    process = await anyio.open_process(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield process
    finally:
        with anyio.CancelScope(shield=True):
            await stop_process(process)


class TestReservePort:
    async def test_reservation_socket_bound_until_released(
        self, registry: FileLockRegistry
    ) -> None:
        async with reserve_port(registry=registry) as reservation:
            [sock] = reservation.claimer.sockets
            assert sock.getsockname() == ("127.0.0.1", reservation.port)
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 0
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 0

            reservation.release_socket()

            assert sock.fileno() == -1
            with socket.socket() as server:
                server.bind(("127.0.0.1", reservation.port))

    async def test_reservation_excludes_same_process_claim(
        self, registry: FileLockRegistry
    ) -> None:
        async with reserve_port(registry=registry) as reservation:
            reservation.release_socket()
            with pytest.raises(ClaimTimeoutError) as caught:
                async with claim_port(reservation.port, registry=registry, timeout=0.2):
                    pass

        assert caught.value.rejections["locked"] == 1

    async def test_reservation_excludes_other_process_claim(self) -> None:
        async with reserve_port() as reservation:
            reservation.release_socket()
            result = subprocess.run(
                [
                    sys.executable,
                    str(HELPERS / "hold_claim.py"),
                    str(reservation.port),
                    "--timeout",
                    "0.3",
                ],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )

        assert result.returncode == 3, result.stderr
        assert "locked by another holder" in result.stdout

    async def test_reservation_released_after_block(
        self, registry: FileLockRegistry
    ) -> None:
        async with reserve_port(registry=registry) as reservation:
            reservation.release_socket()

        async with claim_port(reservation.port, registry=registry, timeout=1) as sock:
            assert sock.getsockname()[1] == reservation.port

    async def test_reservation_leaks_no_descriptor(
        self, registry: FileLockRegistry
    ) -> None:
        async with reserve_port(registry=registry):
            pass
        before = count_open_fds()

        for _ in range(10):
            async with reserve_port(registry=registry, kind=("tcp", "udp")) as held:
                held.release_socket()
                held.release_socket()

        assert count_open_fds() == before

    async def test_reservation_repr_shows_socket_state(
        self, registry: FileLockRegistry
    ) -> None:
        async with reserve_port(registry=registry) as reservation:
            assert "socket open" in repr(reservation)
            reservation.release_socket()
            assert "socket released" in repr(reservation)
            assert reservation.host == "127.0.0.1"
            assert reservation.kinds == ("tcp",)

    async def test_reservation_repr_after_block(
        self, registry: FileLockRegistry
    ) -> None:
        async with reserve_port(registry=registry) as reservation:
            pass

        assert repr(reservation) == (
            f"<PortReservation tcp 127.0.0.1 port {reservation.port} ended>"
        )


class TestWaitListening:
    async def test_wait_listening_accepts_child_listener(
        self, registry: FileLockRegistry
    ) -> None:
        async with reserve_port(registry=registry) as reservation:
            reservation.release_socket()
            async with child(
                listener_command(reservation.port, "--delay", "0.2")
            ) as process:
                with anyio.fail_after(10):
                    await reservation.wait_listening(process, timeout=5)

                assert is_listening(reservation.port)

    async def test_wait_listening_accepts_grandchild_listener(
        self, registry: FileLockRegistry
    ) -> None:
        async with reserve_port(registry=registry) as reservation:
            reservation.release_socket()
            command = listener_command(reservation.port, "--fork")
            async with child(command) as process:
                await reservation.wait_listening(process, timeout=5)

                assert len(descendants(process.pid)) == 2

    async def test_wait_listening_accepts_bare_pid(
        self, registry: FileLockRegistry
    ) -> None:
        async with reserve_port(registry=registry) as reservation:
            reservation.release_socket()
            async with child(listener_command(reservation.port)) as process:
                await reservation.wait_listening(process.pid, timeout=5)

    async def test_wait_listening_accepts_wildcard_listener(
        self, registry: FileLockRegistry
    ) -> None:
        async with reserve_port(registry=registry) as reservation:
            reservation.release_socket()
            command = listener_command(reservation.port, "--host", "0.0.0.0")
            async with child(command) as process:
                await reservation.wait_listening(process, timeout=5)

    async def test_wait_listening_accepts_dual_stack_listener(
        self, registry: FileLockRegistry
    ) -> None:
        require_ipv6()
        async with reserve_port(registry=registry) as reservation:
            reservation.release_socket()
            command = listener_command(reservation.port, "--host", "::")
            async with child(command) as process:
                await reservation.wait_listening(process, timeout=5)

    async def test_wait_listening_accepts_udp_child(
        self, registry: FileLockRegistry
    ) -> None:
        async with reserve_port(registry=registry, kind="udp") as reservation:
            reservation.release_socket()
            command = listener_command(reservation.port, "--kind", "udp")
            async with child(command) as process:
                await reservation.wait_listening(process, timeout=5)

    async def test_wait_listening_names_intruder_pid(
        self, registry: FileLockRegistry
    ) -> None:
        async with reserve_port(registry=registry) as reservation:
            reservation.release_socket()
            with intruder(reservation.port) as other:
                command = listener_command(reservation.port, "--never")
                async with child(command) as process:
                    with pytest.raises(ClaimLostError) as caught:
                        await reservation.wait_listening(process, timeout=5)

        message = str(caught.value)
        assert f"pid {other.pid} (python" in message
        assert f"not process {process.pid}" in message
        assert f"port {reservation.port}" in message

    async def test_wait_listening_names_udp_intruder(
        self, registry: FileLockRegistry
    ) -> None:
        async with reserve_port(registry=registry, kind="udp") as reservation:
            reservation.release_socket()
            with intruder(reservation.port, "--kind", "udp") as other:
                command = listener_command(reservation.port, "--never")
                async with child(command) as process:
                    with pytest.raises(ClaimLostError, match=f"pid {other.pid} "):
                        await reservation.wait_listening(process, timeout=5)

    async def test_wait_listening_names_other_family_intruder(
        self, registry: FileLockRegistry
    ) -> None:
        require_ipv6()
        async with reserve_port(registry=registry) as reservation:
            reservation.release_socket()
            with intruder(reservation.port, "--host", "::1") as other:
                async with child(listener_command(reservation.port)) as process:
                    with pytest.raises(ClaimLostError, match=f"pid {other.pid} "):
                        await reservation.wait_listening(process, timeout=5)

    async def test_wait_listening_times_out(self, registry: FileLockRegistry) -> None:
        async with reserve_port(registry=registry) as reservation:
            reservation.release_socket()
            command = listener_command(reservation.port, "--never")
            async with child(command) as process:
                start = anyio.current_time()
                with pytest.raises(ListenTimeoutError) as caught:
                    await reservation.wait_listening(process, timeout=0.3)
                elapsed = anyio.current_time() - start

        assert isinstance(caught.value, TimeoutError)
        assert "did not listen on tcp 127.0.0.1 port" in str(caught.value)
        assert 0.3 <= elapsed < 3

    async def test_wait_listening_reports_early_exit(
        self, registry: FileLockRegistry
    ) -> None:
        async with reserve_port(registry=registry) as reservation:
            reservation.release_socket()
            async with child([sys.executable, "-c", "raise SystemExit(3)"]) as process:
                with pytest.raises(HandoffError) as caught:
                    await reservation.wait_listening(process, timeout=10)

        assert caught.value.returncode == 3
        assert "exited with status 3 before it listened" in str(caught.value)
        assert not isinstance(caught.value, TimeoutError)

    @pytest.mark.parametrize("pid", [-5, 0, True])
    async def test_wait_listening_rejects_invalid_pid(
        self, registry: FileLockRegistry, pid: int
    ) -> None:
        async with reserve_port(registry=registry) as reservation:
            reservation.release_socket()
            with pytest.raises(ValueError, match=f"invalid pid {pid!r}: expected"):
                await reservation.wait_listening(pid, timeout=5)

    async def test_wait_listening_after_reservation_ended(
        self, registry: FileLockRegistry
    ) -> None:
        async with reserve_port(registry=registry) as reservation:
            reservation.release_socket()

        with pytest.raises(RuntimeError, match="has ended; reserve the port again"):
            await reservation.wait_listening(os.getpid(), timeout=5)

    async def test_wait_listening_requires_released_socket(
        self, registry: FileLockRegistry
    ) -> None:
        async with reserve_port(registry=registry) as reservation:
            with pytest.raises(RuntimeError, match="call release_socket"):
                await reservation.wait_listening(os.getpid(), timeout=5)

    def test_wait_listening_reports_unidentified_owner(self) -> None:
        # Inside a new PID namespace the intruder's process is invisible, so
        # its socket shows in /proc/net/tcp with no owner to name.
        require_root_tools("unshare")
        command = ["unshare", "--pid", "--fork", "--mount-proc"]
        command += [sys.executable, str(HELPERS / "handoff_unknown_owner.py")]
        checker = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        try:
            word, port = checker.stdout.readline().split()  # type: ignore[union-attr]
            assert word == "RESERVED"
            with intruder(int(port)):
                output, _ = checker.communicate("go\n", timeout=30)
        finally:
            if checker.poll() is None:
                checker.kill()
                checker.wait(timeout=30)

        assert output.startswith("LOST "), output
        assert "its owner cannot be identified" in output

    async def test_wait_listening_detects_lost_lock(
        self, registry: FileLockRegistry
    ) -> None:
        async with reserve_port(registry=registry) as reservation:
            reservation.release_socket()
            os.unlink(registry.lock_path(reservation.claimer.leases[0].key))

            with pytest.raises(ClaimLostError, match="registry lock is no longer ours"):
                await reservation.wait_listening(os.getpid(), timeout=5)


class TestStartProcess:
    async def test_start_process_serves_http(self, registry: FileLockRegistry) -> None:
        async with reserve_port(registry=registry) as reservation:
            command = http_server_command(reservation.port)
            process = await reservation.start_process(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            try:
                status = await anyio.to_thread.run_sync(fetch_status, reservation.port)
            finally:
                await stop_process(process)

        assert status == 200

    async def test_start_process_stops_silent_child(
        self, registry: FileLockRegistry
    ) -> None:
        async with reserve_port(registry=registry) as reservation:
            command = listener_command(reservation.port, "--never")
            with pytest.raises(ListenTimeoutError):
                await reservation.start_process(command, timeout=0.3)

            assert child_count() == 0

    async def test_start_process_stops_child_on_intruder(
        self, registry: FileLockRegistry
    ) -> None:
        async with reserve_port(registry=registry) as reservation:
            reservation.release_socket()
            with intruder(reservation.port) as other:
                with pytest.raises(ClaimLostError, match=f"pid {other.pid} "):
                    await reservation.start_process(
                        http_server_command(reservation.port),
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )

                assert child_count() == 1  # only the intruder

    async def test_start_process_names_missing_command(
        self, registry: FileLockRegistry
    ) -> None:
        async with reserve_port(registry=registry) as reservation:
            pass  # the first reservation opens the registry's lasting descriptors
        fds_before = count_open_fds()

        async with reserve_port(registry=registry) as reservation:
            with pytest.raises(FileNotFoundError) as caught:
                await reservation.start_process(["aioportclaim-no-such-command"])
            lease_held = await reservation.claimer.leases[0].is_held()
            other_claim = await expect_locked(reservation.port, registry)

            process = await reservation.start_process(
                http_server_command(reservation.port),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            await stop_process(process)
        released = await claim_succeeds(reservation.port, registry)

        assert str(caught.value) == (
            "[Errno 2] command not found: 'aioportclaim-no-such-command'; "
            "check the name and PATH"
        )
        assert caught.value.errno == errno.ENOENT
        assert lease_held
        assert other_claim.rejections["locked"] == 1
        assert released
        assert count_open_fds() == fds_before

    async def test_start_process_reports_missing_cwd(
        self, registry: FileLockRegistry, tmp_path: Path
    ) -> None:
        missing = tmp_path / "missing"
        async with reserve_port(registry=registry) as reservation:
            with pytest.raises(FileNotFoundError) as caught:
                await reservation.start_process(["true"], cwd=missing)

        assert os.fspath(caught.value.filename) == str(missing)
        assert "command not found" not in str(caught.value)

    async def test_start_process_reservation_type(
        self, registry: FileLockRegistry
    ) -> None:
        async with reserve_port(registry=registry) as reservation:
            assert isinstance(reservation, PortReservation)


async def expect_locked(port: int, registry: FileLockRegistry) -> ClaimTimeoutError:
    with pytest.raises(ClaimTimeoutError) as caught:
        async with claim_port(port, registry=registry, timeout=0.2):
            pass
    return caught.value


async def claim_succeeds(port: int, registry: FileLockRegistry) -> bool:
    async with claim_port(port, registry=registry, timeout=1) as sock:
        return bool(sock.getsockname()[1] == port)


def http_server_command(port: int) -> list[str]:
    return [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]


def fetch_status(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
        return int(response.status)


def is_listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as error:
            return error.errno == errno.EADDRINUSE
    return False


def child_count() -> int:
    """Count this process's children that have not been waited for."""
    return len(descendants(os.getpid())) - 1
