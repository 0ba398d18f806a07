"""The Redis registry against a real redis-server: leases, loss, fencing, scopes."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio
import pytest
from anyio.abc import SocketAttribute
from anyio.streams.buffered import BufferedByteReceiveStream

from aioportclaim import (
    ClaimKey,
    ClaimLostError,
    FileLockRegistry,
    HolderRecord,
    PortClaimer,
    PortClaimError,
    RedisRegistry,
    RobustPortSelector,
    claim_port,
    open_claim,
)
from aioportclaim.registries import (
    REGISTRY_ENV,
    RedisClaimInfo,
    RedisLease,
    open_registry,
)
from aioportclaim.registries._defaults import default_registry

from .conftest import (
    HELPERS,
    count_open_fds,
    find_free_ports,
    require_root_tools,
    run_python,
)

# Importing the fixtures registers them for this module's tests.
from .redis_server import redis_server_fixture, redis_tcp_server_fixture  # noqa: F401

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from anyio.abc import ByteStream, Process

    from .redis_server import RedisServer


LEASE = 0.6
INTERVAL = LEASE / 3
# Child processes start Python and coredis, so their leases are a bit longer.
CHILD_LEASE = 1.0
CHILD_INTERVAL = CHILD_LEASE / 3


def holder() -> HolderRecord:
    return HolderRecord.for_this_process("tcp", 1, "tests")


async def acquire(registry: RedisRegistry, port: int) -> RedisLease:
    lease = await registry.try_acquire(
        ClaimKey(registry.scope(), "tcp", port), holder()
    )
    assert isinstance(lease, RedisLease)
    return lease


def claim_id_in(value: bytes | None) -> str:
    assert value is not None
    return value.split(b" ")[1].decode()


class TestRedisClaims:
    async def test_claim_port_sets_and_deletes_key(
        self, redis_server: RedisServer
    ) -> None:
        async with RedisRegistry(redis_server.url, lease=LEASE) as registry:
            async with open_claim(registry=registry) as claimer:
                [lease] = claimer.leases
                value = redis_server.get(registry.redis_key(lease.key))
                ttl = redis_server.command("PTTL", registry.redis_key(lease.key))

                assert claimer.socket.getsockopt(
                    socket.SOL_SOCKET, socket.SO_ACCEPTCONN
                )
                assert value is not None
                assert value.startswith(b"v1 ")
                assert isinstance(ttl, int)
                assert 0 < ttl <= LEASE * 1000
                assert lease.fencing_token is not None

            assert redis_server.keys("aioportclaim:claim:*") == []

    async def test_tcp_url_works_with_selector(
        self, redis_tcp_server: RedisServer
    ) -> None:
        ports = find_free_ports(2)
        async with RedisRegistry(redis_tcp_server.tcp_url, lease=LEASE) as registry:
            selector = RobustPortSelector(ports, registry)
            async with selector.claim() as first, selector.claim() as second:
                claimed = {first.port, second.port}
                held = len(redis_tcp_server.keys("aioportclaim:claim:*"))

        assert claimed == set(ports)
        assert held == 2

    async def test_value_names_holder_and_token(
        self, redis_server: RedisServer
    ) -> None:
        [port] = find_free_ports(1)
        async with RedisRegistry(redis_server.url, lease=LEASE) as registry:
            async with open_claim(port, registry=registry, app_id="web") as claimer:
                [lease] = claimer.leases
                value = redis_server.get(registry.redis_key(lease.key))
                assert value is not None
                version, claim_id, token, record = value.split(b" ", 3)
                parsed = HolderRecord.from_bytes(record)

        assert version == b"v1"
        assert len(claim_id) == 32
        assert int(token) == lease.fencing_token
        assert parsed is not None
        assert parsed.pid == os.getpid()
        assert parsed.port == port
        assert parsed.app_id == "web"

    async def test_renewal_keeps_claim_past_lease(
        self, redis_server: RedisServer
    ) -> None:
        async with RedisRegistry(redis_server.url, lease=LEASE) as registry:
            async with open_claim(registry=registry) as claimer:
                await anyio.sleep(LEASE * 2.5)
                [lease] = claimer.leases

                assert await lease.is_held()
                assert not claimer.lost

    async def test_fencing_tokens_grow_across_holders(
        self, redis_server: RedisServer
    ) -> None:
        [port] = find_free_ports(1)
        tokens = []
        async with (
            RedisRegistry(redis_server.url, lease=LEASE, scope="cluster") as first,
            RedisRegistry(redis_server.url, lease=LEASE, scope="cluster") as second,
        ):
            for registry in (first, second, first, second):
                async with open_claim(port, registry=registry, timeout=2) as claimer:
                    tokens.append(claimer.leases[0].fencing_token)

        numbers = [token for token in tokens if isinstance(token, int)]
        assert len(numbers) == 4
        assert numbers == sorted(numbers)
        assert len(set(numbers)) == 4

    async def test_exact_port_busy_in_redis_times_out(
        self, redis_server: RedisServer
    ) -> None:
        [port] = find_free_ports(1)
        async with (
            RedisRegistry(redis_server.url, lease=LEASE) as first,
            RedisRegistry(redis_server.url, lease=LEASE) as second,
        ):
            await acquire(first, port)
            with pytest.raises(PortClaimError) as caught:
                async with claim_port(port, registry=second, timeout=0.2):
                    pass

        assert str(port) in str(caught.value)

    async def test_registry_exit_leaks_nothing(self, redis_server: RedisServer) -> None:
        # One open and close first, so that lazily created loop resources exist.
        async with RedisRegistry(redis_server.url, lease=LEASE):
            pass
        before = count_open_fds()

        async with RedisRegistry(redis_server.url, lease=LEASE) as registry:
            for _ in range(5):
                async with open_claim(
                    registry=registry, kind=("tcp", "udp"), count=2
                ) as claimer:
                    assert len(claimer.leases) == 4

        assert count_open_fds() == before
        assert redis_server.keys("aioportclaim:claim:*") == []

    async def test_registry_exit_releases_open_leases(
        self, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.WARNING, logger="aioportclaim")
        [port] = find_free_ports(1)
        async with RedisRegistry(redis_server.url, lease=LEASE) as registry:
            lease = await acquire(registry, port)

        assert redis_server.keys("aioportclaim:claim:*") == []
        assert lease.lost_reason == "the Redis registry was closed"
        assert "still held" in caplog.text

    async def test_block_error_leaves_unwrapped(
        self, redis_server: RedisServer
    ) -> None:
        port_key = "tcp:4000"
        with pytest.raises(KeyError) as caught:
            async with RedisRegistry(redis_server.url, lease=LEASE):
                raise KeyError(port_key)

        assert type(caught.value) is KeyError

    async def test_try_acquire_needs_open_registry(
        self, redis_server: RedisServer
    ) -> None:
        registry = RedisRegistry(redis_server.url, lease=LEASE)

        with pytest.raises(RuntimeError, match="async with"):
            await acquire(registry, 4000)

    async def test_lost_reply_retry_still_claims(
        self, redis_tcp_server: RedisServer
    ) -> None:
        # The proxy forwards the first claim request of this port to Redis and
        # then cuts the connection instead of returning the reply. The
        # client retries on a new connection, and that retry must succeed.
        [port] = find_free_ports(1)
        marker = f":tcp:{port}".encode()
        async with reply_dropping_proxy(redis_tcp_server.port, marker) as proxy:
            url = f"redis://127.0.0.1:{proxy.port}"
            async with RedisRegistry(url, lease=LEASE) as registry:
                lease = await acquire(registry, port)
                value = redis_server_value(redis_tcp_server, registry, port)

                assert proxy.dropped
                assert claim_id_in(value) == lease.claim_id
                await lease.release()


class TestRedisScopes:
    async def test_host_scope_separates_host_ids(
        self, redis_server: RedisServer
    ) -> None:
        [port] = find_free_ports(1)
        async with (
            RedisRegistry(redis_server.url, lease=LEASE, host_id="a") as host_a,
            RedisRegistry(redis_server.url, lease=LEASE, host_id="b") as host_b,
            RedisRegistry(redis_server.url, lease=LEASE, host_id="a") as also_a,
        ):
            key_a = ClaimKey(host_a.scope(), "tcp", port)
            key_b = ClaimKey(host_b.scope(), "tcp", port)
            first = await host_a.try_acquire(key_a, holder())
            other_host = await host_b.try_acquire(key_b, holder())
            same_host = await also_a.try_acquire(key_a, holder())

            assert first is not None
            assert other_host is not None
            assert same_host is None

    async def test_cluster_scope_ignores_host_ids(
        self, redis_server: RedisServer
    ) -> None:
        [port] = find_free_ports(1)
        async with (
            RedisRegistry(
                redis_server.url, lease=LEASE, host_id="a", scope="cluster"
            ) as host_a,
            RedisRegistry(
                redis_server.url, lease=LEASE, host_id="b", scope="cluster"
            ) as host_b,
        ):
            first = await host_a.try_acquire(ClaimKey("cluster", "tcp", port), holder())
            second = await host_b.try_acquire(
                ClaimKey("cluster", "tcp", port), holder()
            )

            assert first is not None
            assert second is None

    async def test_host_scope_names_machine_and_namespace(
        self, redis_server: RedisServer
    ) -> None:
        registry = RedisRegistry(redis_server.url)
        namespace = f"net-{os.stat('/proc/self/ns/net').st_ino}"

        assert registry.scope().endswith(":" + namespace)
        assert len(registry.scope()) > len(namespace) + 1

    async def test_url_options_set_scope_and_lease(
        self, redis_server: RedisServer
    ) -> None:
        registry = RedisRegistry(
            f"{redis_server.url}?scope=cluster&lease=2.5&prefix=ports"
        )

        assert registry.scope() == "cluster"
        assert registry.lease == 2.5
        assert registry.prefix == "ports"

    @pytest.mark.parametrize(
        ("url", "options", "message"),
        [
            ("http://127.0.0.1:6379", {}, "redis://"),
            ("redis://127.0.0.1", {"lease": 0}, "lease"),
            ("redis://127.0.0.1", {"scope": "region"}, "scope"),
            ("redis://127.0.0.1", {"host_id": "a:b"}, "host_id"),
            ("redis://127.0.0.1", {"prefix": "a b"}, "prefix"),
            ("redis://127.0.0.1?lease=5", {"lease": 3}, "one place"),
            ("redis://127.0.0.1?lease=soon", {}, "lease"),
            ("redis://127.0.0.1:99999", {}, "Port out of range"),
            ("redis://127.0.0.1:port", {}, "invalid Redis URL"),
            ("redis://[::1", {}, "Invalid IPv6 URL"),
            ("unix://", {}, "missing the socket path"),
        ],
    )
    def test_invalid_options_rejected(
        self, url: str, options: dict[str, object], message: str
    ) -> None:
        with pytest.raises(ValueError, match=message):
            RedisRegistry(url, **options)  # type: ignore[arg-type]

    def test_invalid_url_hides_password(self) -> None:
        with pytest.raises(ValueError) as caught:
            RedisRegistry("redis://user:secret@127.0.0.1:port/0?lease=1")

        assert "'redis://127.0.0.1:port/0'" in str(caught.value)
        assert "secret" not in str(caught.value)

    def test_url_password_hidden_in_address(self) -> None:
        registry = RedisRegistry("redis://user:secret@127.0.0.1:6390/2")

        assert registry.address == "redis://127.0.0.1:6390/2"
        assert "secret" not in repr(registry)


class TestRedisListing:
    async def test_list_claims_shows_holders(self, redis_server: RedisServer) -> None:
        ports = find_free_ports(2)
        async with (
            RedisRegistry(redis_server.url, lease=LEASE) as here,
            RedisRegistry(redis_server.url, lease=LEASE, host_id="elsewhere") as there,
        ):
            mine = await acquire(here, ports[0])
            await acquire(there, ports[1])
            listed = await here.list_claims()
            everywhere = await here.list_claims(all_scopes=True)

        [info] = listed
        assert isinstance(info, RedisClaimInfo)
        assert info.key == mine.key
        assert info.held
        assert info.record is not None
        assert info.record.pid == os.getpid()
        assert info.fencing_token == mine.fencing_token
        assert info.expires_in is not None
        assert 0 < info.expires_in <= LEASE
        assert sorted(entry.key.port for entry in everywhere) == ports

    async def test_list_claims_survives_hostile_values(
        self, redis_server: RedisServer
    ) -> None:
        async with RedisRegistry(redis_server.url, lease=LEASE) as registry:
            head = f"aioportclaim:claim:{registry.scope()}"
            redis_server.command("SET", f"{head}:tcp:1001", b"x" * 100_000)
            redis_server.command("SET", f"{head}:tcp:1002", b"v1 id notanumber {}")
            redis_server.command("SET", f"{head}:tcp:1003", b"v1 id 7 {bad json")
            redis_server.command("HSET", f"{head}:tcp:1004", "field", "value")
            redis_server.command("SET", f"{head}:tcp:99999", b"v1 id 7 {}")
            redis_server.command("SET", f"{head}:sctp:1005", b"v1 id 7 {}")
            redis_server.command("SET", f"{head}:tcp:1006", "v1 id 7 " + '{"pid": 1}')
            listed = await registry.list_claims()

        assert [info.key.port for info in listed] == [1001, 1002, 1003, 1004, 1006]
        assert all(info.record is None for info in listed)
        details = [info for info in listed if isinstance(info, RedisClaimInfo)]
        assert [info.fencing_token for info in details] == [None, None, 7, None, 7]
        assert all(info.expires_in is None for info in details)


class TestRedisConnectionErrors:
    async def test_refused_tcp_names_address(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG)
        [port] = find_free_ports(1)
        registry = RedisRegistry(f"redis://127.0.0.1:{port}", lease=LEASE)

        with pytest.raises(PortClaimError) as caught:
            async with registry:
                pass

        assert type(caught.value) is PortClaimError
        assert f"127.0.0.1:{port}" in str(caught.value)
        assert "refused" in str(caught.value).lower()
        assert not [record for record in caplog.records if record.exc_info]

    async def test_missing_socket_names_path(self) -> None:
        path = f"/tmp/apc-missing-{os.getpid()}.sock"
        registry = RedisRegistry(f"unix://{path}", lease=LEASE)

        with pytest.raises(PortClaimError, match=path):
            async with registry:
                pass

    async def test_paused_server_claim_times_out(
        self, redis_server: RedisServer
    ) -> None:
        async with RedisRegistry(redis_server.url, lease=LEASE) as registry:
            redis_server.pause()
            try:
                with pytest.raises(PortClaimError, match="no reply within"):
                    await acquire(registry, 4000)
            finally:
                redis_server.resume()
            left_behind = await registry.list_claims()

        assert left_behind == []


class TestRedisLeaseLoss:
    async def test_paused_redis_loses_claim_in_time(
        self, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.WARNING, logger="aioportclaim")
        [port] = find_free_ports(1)
        async with (
            RedisRegistry(redis_server.url, lease=LEASE, scope="cluster") as first,
            RedisRegistry(redis_server.url, lease=LEASE, scope="cluster") as second,
        ):
            old = await acquire(first, port)
            paused_at = anyio.current_time()
            redis_server.pause()
            try:
                with anyio.fail_after(LEASE * 3):
                    reason = await old.wait_lost()
                lost_after = anyio.current_time() - paused_at
                # Let Redis's own clock pass the end of the lease too.
                await anyio.sleep(LEASE)
            finally:
                redis_server.resume()

            new = await acquire(second, port)
            late_renewal = await old.renew()
            await old.release()
            value = redis_server.get(first.redis_key(old.key))

        assert lost_after <= LEASE + INTERVAL
        assert "no renewal succeeded" in reason
        assert not late_renewal
        assert claim_id_in(value) == new.claim_id
        assert new.fencing_token > old.fencing_token
        assert f"tcp port {port} in scope cluster" in caplog.text

    async def test_claim_block_cancelled_on_loss(
        self, redis_server: RedisServer
    ) -> None:
        [port] = find_free_ports(1)
        finished: list[bool] = []

        async def hold_while_redis_pauses(registry: RedisRegistry) -> None:
            async with claim_port(port, registry=registry):
                redis_server.pause()
                try:
                    with anyio.fail_after(LEASE * 3):
                        await anyio.sleep_forever()
                finally:
                    redis_server.resume()
                finished.append(True)

        async with RedisRegistry(redis_server.url, lease=LEASE) as registry:
            with pytest.raises(ClaimLostError) as caught:
                await hold_while_redis_pauses(registry)
            left_behind = await registry.list_claims()

        assert finished == []
        assert left_behind == []
        assert f"port {port}" in str(caught.value)

    async def test_restarted_redis_noticed_at_renewal(
        self, redis_server: RedisServer
    ) -> None:
        [port] = find_free_ports(1)
        async with RedisRegistry(redis_server.url, lease=LEASE) as registry:
            # A plain PortClaimer, unlike open_claim, does not cancel its
            # block on loss, so the test can watch for the loss itself.
            async with PortClaimer(port, registry=registry) as claimer:
                old_token = claimer.leases[0].fencing_token or 0
                redis_server.restart()
                restarted_at = anyio.current_time()
                with anyio.fail_after(LEASE * 3):
                    reason = await claimer.wait_lost()
                noticed_after = anyio.current_time() - restarted_at
            new = await acquire(registry, port)

        assert "deleted or taken over" in reason
        assert noticed_after <= INTERVAL + 0.1
        assert old_token > 0
        assert new.fencing_token > old_token

    async def test_stale_release_spares_new_holder(
        self, redis_server: RedisServer
    ) -> None:
        [port] = find_free_ports(1)
        async with (
            RedisRegistry(redis_server.url, lease=LEASE, scope="cluster") as first,
            RedisRegistry(redis_server.url, lease=LEASE, scope="cluster") as second,
        ):
            old = await acquire(first, port)
            # The key vanishes as if its lease had run out in Redis.
            redis_server.command("DEL", first.redis_key(old.key))
            new = await acquire(second, port)
            still_held = await old.is_held()
            renewed = await old.renew()
            await old.release()
            value = redis_server.get(first.redis_key(old.key))

        assert not still_held
        assert not renewed
        assert claim_id_in(value) == new.claim_id

    async def test_loss_callbacks_run_once(self, redis_server: RedisServer) -> None:
        [port] = find_free_ports(1)
        calls: list[str] = []
        late_calls: list[str] = []
        async with RedisRegistry(redis_server.url, lease=LEASE) as registry:
            lease = await acquire(registry, port)
            lease.on_lost(calls.append)
            unregister = lease.on_lost(late_calls.append)
            unregister()
            redis_server.command("DEL", registry.redis_key(lease.key))
            with anyio.fail_after(LEASE * 2):
                await lease.wait_lost()
            after_loss: list[str] = []
            lease.on_lost(after_loss.append)

        assert len(calls) == 1
        assert late_calls == []
        assert after_loss == calls


class TestDefaultRegistry:
    async def test_open_registry_sets_default(
        self, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv(REGISTRY_ENV, f"{redis_server.url}?lease={LEASE}")
        async with open_registry() as registry:
            async with claim_port() as sock:
                port = sock.getsockname()[1]
                keys = redis_server.keys("aioportclaim:claim:*")

            assert isinstance(registry, RedisRegistry)
            assert default_registry() is registry
        assert len(keys) == 1
        assert keys[0].endswith(f":tcp:{port}".encode())

    def test_redis_url_outside_block_raises(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv(REGISTRY_ENV, "redis://127.0.0.1:6379")

        with pytest.raises(PortClaimError, match="open_registry"):
            default_registry()

    def test_file_url_selects_lock_directory(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.setenv(REGISTRY_ENV, f"file://{tmp_path}")
        registry = default_registry()

        assert isinstance(registry, FileLockRegistry)
        assert registry.path == tmp_path
        assert default_registry() is registry

    def test_unknown_registry_value_rejected(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv(REGISTRY_ENV, "/var/lib/ports")

        with pytest.raises(ValueError, match=REGISTRY_ENV):
            default_registry()

    def test_missing_redis_server_fails_in_ci(self) -> None:
        code = (
            "from tests.redis_server import require_redis_server\n"
            "try:\n"
            "    require_redis_server()\n"
            "except BaseException as error:\n"
            "    print(type(error).__name__)\n"
        )
        environment = {**os.environ, "CI": "true", "PATH": "/nonexistent"}
        result = run_python(code, cwd=str(HELPERS.parent.parent), env=environment)

        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "Failed"

    def test_import_without_coredis(self) -> None:
        code = (
            "import sys; sys.modules['coredis'] = None\n"
            "import aioportclaim\n"
            "try:\n"
            "    aioportclaim.RedisRegistry\n"
            "except ImportError as error:\n"
            "    print(error)\n"
        )
        result = run_python(code)

        assert result.returncode == 0, result.stderr
        assert "aioportclaim[redis]" in result.stdout


@pytest.mark.netns
class TestRedisAcrossHosts:
    async def test_cluster_scope_namespaces_never_share(
        self, redis_server: RedisServer, anyio_backend: str
    ) -> None:
        ports = find_free_ports(2)
        spec = f"[{ports[0]},{ports[1]}]"
        async with (
            holder_process(redis_server, spec, "cluster", anyio_backend) as first,
            holder_process(redis_server, spec, "cluster", anyio_backend) as second,
            holder_process(redis_server, spec, "cluster", anyio_backend) as third,
        ):
            lines = [await child.read_line() for child in (first, second, third)]

        claimed = sorted(
            int(line.split()[1]) for line in lines if line.startswith("CLAIMED")
        )
        assert claimed == ports
        assert sum(line.startswith("EXHAUSTED") for line in lines) == 1

    async def test_host_scope_namespaces_share_number(
        self, redis_server: RedisServer, anyio_backend: str
    ) -> None:
        [port] = find_free_ports(1)
        async with (
            holder_process(redis_server, str(port), "host", anyio_backend) as first,
            holder_process(redis_server, str(port), "host", anyio_backend) as second,
        ):
            lines = [await first.read_line(), await second.read_line()]

        assert [line.split()[:2] for line in lines] == [["CLAIMED", str(port)]] * 2

    async def test_frozen_holder_loses_port(
        self, redis_server: RedisServer, anyio_backend: str
    ) -> None:
        [port] = find_free_ports(1)
        async with (
            holder_process(redis_server, str(port), "cluster", anyio_backend) as child,
            RedisRegistry(redis_server.url, lease=LEASE, scope="cluster") as registry,
        ):
            line = await child.read_line()
            assert line.startswith("CLAIMED")
            child_token = int(line.split()[2])
            child.process.send_signal(signal.SIGSTOP)
            try:
                async with open_claim(
                    port, registry=registry, timeout=CHILD_LEASE * 3
                ) as claimer:
                    [lease] = claimer.leases
                    assert isinstance(lease, RedisLease)
                    claim_id, token = lease.claim_id, lease.fencing_token
                    child.process.send_signal(signal.SIGCONT)
                    with anyio.fail_after(CHILD_LEASE * 3):
                        report = await child.read_line()
                    await child.close_stdin()
                    with anyio.fail_after(5):
                        returncode = await child.process.wait()
                    value = redis_server.get(registry.redis_key(lease.key))
            finally:
                if child.process.returncode is None:
                    child.process.send_signal(signal.SIGCONT)

        assert report.startswith("LOST")
        assert returncode == 4
        assert claim_id_in(value) == claim_id
        assert token > child_token

    async def test_killed_holder_frees_port_after_lease(
        self, redis_server: RedisServer, anyio_backend: str
    ) -> None:
        [port] = find_free_ports(1)
        async with (
            holder_process(
                redis_server, str(port), "cluster", anyio_backend, netns=False
            ) as child,
            RedisRegistry(redis_server.url, lease=LEASE, scope="cluster") as registry,
        ):
            line = await child.read_line()
            assert line.startswith("CLAIMED")
            key = ClaimKey("cluster", "tcp", port)
            child.process.send_signal(signal.SIGKILL)
            killed_at = anyio.current_time()
            right_after = await registry.try_acquire(key, holder())
            lease = None
            for _ in range(round(CHILD_LEASE * 3 / 0.02)):
                lease = await registry.try_acquire(key, holder())
                if lease is not None:
                    break
                await anyio.sleep(0.02)
            freed_after = anyio.current_time() - killed_at
            assert lease is not None
            await lease.release()

        assert right_after is None
        assert CHILD_LEASE - CHILD_INTERVAL - 0.05 <= freed_after <= CHILD_LEASE + 0.2


class HolderProcess:
    """A `redis_hold.py` child and its output lines."""

    def __init__(self, process: Process) -> None:
        self.process = process
        assert process.stdout is not None
        self._stdout = BufferedByteReceiveStream(process.stdout)

    async def read_line(self, timeout: float = 15.0) -> str:
        with anyio.fail_after(timeout):
            line = await self._stdout.receive_until(b"\n", 65536)
        return line.decode()

    async def close_stdin(self) -> None:
        if self.process.stdin is not None:
            await self.process.stdin.aclose()


@asynccontextmanager
async def holder_process(
    server: RedisServer,
    spec: str,
    scope: str,
    backend: str,
    *,
    netns: bool = True,
) -> AsyncIterator[HolderProcess]:
    """Run a holder child, in a network namespace of its own unless `netns` is False."""
    command = [
        sys.executable,
        str(HELPERS / "redis_hold.py"),
        server.url,
        spec,
        "--scope",
        scope,
        "--lease",
        str(CHILD_LEASE),
        "--timeout",
        "1",
        "--backend",
        backend,
    ]
    if netns:
        require_root_tools("unshare", "ip")
        script = 'ip link set lo up && exec "$@"'
        command = ["unshare", "-n", "sh", "-c", script, "sh", *command]
    process = await anyio.open_process(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield HolderProcess(process)
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
            await process.wait()
            await process.aclose()


class ReplyDroppingProxy:
    """State of a proxy that drops the reply to one request."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.dropped = False


@asynccontextmanager
async def reply_dropping_proxy(
    redis_port: int, marker: bytes
) -> AsyncIterator[ReplyDroppingProxy]:
    """Proxy loopback TCP to Redis; cut the connection after the first request with `marker`."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    proxy = ReplyDroppingProxy(listener.extra(SocketAttribute.local_port))

    async def forward(client: ByteStream) -> None:
        upstream = await anyio.connect_tcp("127.0.0.1", redis_port)
        dropping = False
        async with client, upstream, anyio.create_task_group() as group:

            async def to_client() -> None:
                async for chunk in upstream:
                    if not dropping:
                        await client.send(chunk)

            async def to_server() -> None:
                nonlocal dropping
                async for chunk in client:
                    if marker in chunk and not proxy.dropped:
                        proxy.dropped = dropping = True
                        await upstream.send(chunk)
                        await anyio.sleep(0.05)  # Redis runs the request
                        group.cancel_scope.cancel()
                        return
                    await upstream.send(chunk)
                group.cancel_scope.cancel()

            group.start_soon(to_client)
            group.start_soon(to_server)

    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, forward)
        yield proxy
        group.cancel_scope.cancel()


def redis_server_value(
    server: RedisServer, registry: RedisRegistry, port: int
) -> bytes | None:
    return server.get(registry.redis_key(ClaimKey(registry.scope(), "tcp", port)))
