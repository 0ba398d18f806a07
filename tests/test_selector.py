"""RobustPortSelector: passes, exhaustion counts, verification, cancellation, logs."""

from __future__ import annotations

import logging
import re
import socket
import subprocess
import sys
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel
import pytest

from aioportclaim import (
    ClaimLostError,
    FileLockRegistry,
    PortClaimer,
    PortExhaustedError,
    PortSelectionStrategy,
    RobustPortSelector,
    claim_port,
    open_claim,
)
from aioportclaim._selector import block_bases

from .conftest import HELPERS, count_open_fds, find_free_ports

if TYPE_CHECKING:
    from pathlib import Path


def hold_in_child(port: int) -> subprocess.Popen[str]:
    """Start a process that claims `port` through the default registry and holds it."""
    child = subprocess.Popen(
        [sys.executable, str(HELPERS / "hold_claim.py"), str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().split() == ["CLAIMED", str(port)]
    return child


class TestSelectAndClaim:
    async def test_returns_port_and_claimer(self, registry: FileLockRegistry) -> None:
        ports = find_free_ports(3)
        selector = RobustPortSelector(ports, registry)

        port, claimer = await selector.select_and_claim()
        try:
            assert port in ports
            assert claimer.claimed
            assert claimer.socket.getsockname()[1] == port
        finally:
            await claimer.release()

        assert not claimer.claimed

    async def test_claim_context_releases(self, registry: FileLockRegistry) -> None:
        selector = RobustPortSelector(
            PortSelectionStrategy(find_free_ports(2)), registry
        )

        async with selector.claim(app_id="svc") as claimer:
            assert claimer.app_id == "svc"

        assert not claimer.claimed

    async def test_app_id_gets_same_port_back(self, registry: FileLockRegistry) -> None:
        selector = RobustPortSelector(find_free_ports(50), registry)

        async with selector.claim(app_id="orders") as first:
            port = first.port
        async with selector.claim(app_id="orders") as second:
            assert second.port == port

    async def test_exhaustion_counts_each_reason(
        self, registry: FileLockRegistry
    ) -> None:
        # One port locked by a child process, one bound by a plain socket,
        # one rejected by a validator, one excluded: nothing is left.
        ports = find_free_ports(4)
        strategy = (
            PortSelectionStrategy(ports)
            .exclude_ports(ports[3])
            .add_validator(lambda port: port != ports[2])
        )
        child = hold_in_child(ports[0])
        try:
            with socket.socket() as squatter:
                squatter.bind(("127.0.0.1", ports[1]))
                squatter.listen()
                with pytest.raises(PortExhaustedError) as caught:
                    await RobustPortSelector(strategy).select_and_claim(timeout=0.3)
        finally:
            child.communicate("", timeout=30)

        error = caught.value
        assert error.rejections == {
            "in_use": 1,
            "locked": 1,
            "excluded": 1,
            "validator": 1,
        }
        assert (
            "1 in use, 1 locked by another holder, 1 excluded, 1 rejected by a validator"
            in str(error)
        )
        assert "PortSelectionStrategy(" in str(error)

    async def test_max_attempts_stops_early(self, registry: FileLockRegistry) -> None:
        ports = find_free_ports(1)
        async with claim_port(ports, registry=registry):
            start = anyio.current_time()
            with pytest.raises(PortExhaustedError, match="1 pass"):
                await RobustPortSelector(ports, registry).select_and_claim(
                    max_attempts=1, timeout=None
                )

        assert anyio.current_time() - start < 1

    async def test_empty_strategy_fails_at_once(
        self, registry: FileLockRegistry
    ) -> None:
        ports = find_free_ports(2)
        strategy = PortSelectionStrategy(ports).exclude_ports(*ports)

        with anyio.fail_after(2), pytest.raises(PortExhaustedError) as caught:
            await RobustPortSelector(strategy, registry).select_and_claim(timeout=30)

        assert caught.value.rejections["excluded"] == 2

    async def test_async_validator_consulted(self, registry: FileLockRegistry) -> None:
        ports = find_free_ports(3)
        seen: list[int] = []

        async def only_last(port: int) -> bool:
            await anyio.lowlevel.checkpoint()
            seen.append(port)
            return port == ports[2]

        strategy = PortSelectionStrategy(ports).add_validator(only_last)
        async with claim_port(strategy, registry=registry) as sock:
            assert sock.getsockname()[1] == ports[2]

        assert ports[2] in seen

    async def test_lost_claim_moves_to_next(self, registry: FileLockRegistry) -> None:
        # The verification delay lets an IPv6 listener appear on the first
        # candidate; the selector must notice and claim another port.
        ports = find_free_ports(2)
        strategy = PortSelectionStrategy(ports).prefer_ports(ports[0], weight=100)
        intruders: list[socket.socket] = []

        async def intrude() -> None:
            await anyio.sleep(0.05)
            intruder = socket.socket(socket.AF_INET6)
            intruder.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            intruder.bind(("::1", ports[0]))
            intruder.listen()
            intruders.append(intruder)

        try:
            async with anyio.create_task_group() as group:
                group.start_soon(intrude)
                async with open_claim(
                    strategy, registry=registry, verify_delay=0.2
                ) as claim:
                    assert claim.port == ports[1]
        finally:
            for intruder in intruders:
                intruder.close()

    @pytest.mark.parametrize(
        ("arguments", "message"),
        [
            ({"max_attempts": 0}, "invalid max_attempts 0"),
            ({"verify_delay": -1.0}, "invalid verify_delay -1.0"),
            ({"timeout": -1.0}, "invalid timeout -1.0"),
        ],
    )
    async def test_bad_limits_rejected(
        self, registry: FileLockRegistry, arguments: dict[str, float], message: str
    ) -> None:
        with pytest.raises(ValueError, match=message):
            await RobustPortSelector(None, registry).select_and_claim(**arguments)  # type: ignore[arg-type]


class TestVerification:
    async def test_verify_passes_on_healthy_claim(
        self, registry: FileLockRegistry
    ) -> None:
        async with open_claim(registry=registry) as claim:
            await claim.verify_claim(0.01)

    async def test_verify_detects_closed_socket(
        self, registry: FileLockRegistry
    ) -> None:
        async with open_claim(registry=registry) as claim:
            claim.socket.close()
            with pytest.raises(ClaimLostError, match="closed or rebound"):
                await claim.verify_claim()

    async def test_verify_after_release_fails(self, registry: FileLockRegistry) -> None:
        claimer = PortClaimer(find_free_ports(1)[0], registry=registry)
        async with claimer:
            pass

        with pytest.raises(ClaimLostError, match="released"):
            await claimer.verify_claim()


class TestCancellation:
    async def test_cancel_during_exact_wait_leaks_nothing(
        self, registry: FileLockRegistry
    ) -> None:
        [port] = find_free_ports(1)
        async with claim_port(port, registry=registry):
            before = count_open_fds()
            with anyio.move_on_after(0.2) as scope:
                async with claim_port(port, registry=registry, timeout=30):
                    pytest.fail("the port is held, so the claim must wait")

            assert scope.cancelled_caught
            assert count_open_fds() == before

    async def test_cancel_during_verify_delay_releases(
        self, registry: FileLockRegistry
    ) -> None:
        [port] = find_free_ports(1)
        before = count_open_fds()
        with anyio.move_on_after(0.1):
            async with claim_port(port, registry=registry, verify_delay=30):
                pytest.fail("the verification delay must not have ended")

        assert count_open_fds() == before
        async with claim_port(port, registry=registry, timeout=0.1):
            pass

    async def test_cancel_in_validator_releases(
        self, registry: FileLockRegistry
    ) -> None:
        ports = find_free_ports(2)

        async def slow(port: int) -> bool:
            await anyio.sleep(30)
            return True

        before = count_open_fds()
        with anyio.move_on_after(0.1):
            async with claim_port(
                PortSelectionStrategy(ports).add_validator(slow), registry=registry
            ):
                pytest.fail("the validator must not have returned")

        assert count_open_fds() == before
        assert not [info for info in registry.list_claims_now() if info.held]

    async def test_cancel_during_backoff_releases(
        self, registry: FileLockRegistry
    ) -> None:
        ports = find_free_ports(1)
        async with claim_port(ports, registry=registry):
            before = count_open_fds()
            with anyio.move_on_after(0.3) as scope:
                await RobustPortSelector(ports, registry).select_and_claim(timeout=30)

            assert scope.cancelled_caught
            assert count_open_fds() == before
            assert len([info for info in registry.list_claims_now() if info.held]) == 1


class TestLogging:
    async def test_claim_and_release_logged(
        self, registry: FileLockRegistry, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, logger="aioportclaim")
        async with open_claim(registry=registry, app_id="web") as claim:
            pass

        messages = [record.getMessage() for record in caplog.records]
        assert messages == [
            f"claimed tcp 127.0.0.1 port {claim.port}",
            f"released tcp 127.0.0.1 port {claim.port}",
        ]
        assert all(record.name.startswith("aioportclaim.") for record in caplog.records)
        assert caplog.records[0].port == claim.port  # type: ignore[attr-defined]
        assert caplog.records[0].app_id == "web"  # type: ignore[attr-defined]

    async def test_lost_claim_warns(
        self, registry: FileLockRegistry, caplog: pytest.LogCaptureFixture
    ) -> None:
        async with open_claim(registry=registry) as claim:
            claim.socket.close()
            with pytest.raises(ClaimLostError):
                await claim.verify_claim()

        [warning] = [
            record for record in caplog.records if record.levelno == logging.WARNING
        ]
        assert warning.getMessage().startswith(
            f"lost claim of tcp 127.0.0.1 port {claim.port}"
        )


class TestEarlyExhaustion:
    async def test_all_rejected_by_validator_fails_fast(
        self, registry: FileLockRegistry
    ) -> None:
        strategy = PortSelectionStrategy(find_free_ports(3)).add_validator(
            lambda _: False
        )

        with anyio.fail_after(2), pytest.raises(PortExhaustedError) as caught:
            await RobustPortSelector(strategy, registry).select_and_claim(timeout=30)

        assert caught.value.rejections["validator"] == 3


class TestDeadlineCoversWaits:
    async def test_stuck_validator_bounded_by_timeout(
        self, registry: FileLockRegistry
    ) -> None:
        async def stuck(port: int) -> bool:
            await anyio.sleep(60)
            return True

        strategy = PortSelectionStrategy(find_free_ports(2)).add_validator(stuck)
        before = count_open_fds()
        with anyio.fail_after(5), pytest.raises(PortExhaustedError):
            async with claim_port(strategy, registry=registry, timeout=0.3):
                pass

        assert count_open_fds() == before

    async def test_verify_delay_bounded_by_timeout(
        self, registry: FileLockRegistry
    ) -> None:
        ports = find_free_ports(2)
        before = count_open_fds()
        with anyio.fail_after(5), pytest.raises(PortExhaustedError):
            async with claim_port(
                ports, registry=registry, timeout=0.3, verify_delay=30
            ):
                pass
        with anyio.fail_after(5), pytest.raises(TimeoutError):
            async with claim_port(
                ports[0], registry=registry, timeout=0.3, verify_delay=30
            ):
                pass

        assert count_open_fds() == before
        assert not [info for info in registry.list_claims_now() if info.held]


class TestArgumentTypes:
    @pytest.mark.parametrize(
        ("arguments", "message"),
        [
            ({"registry": "x"}, "invalid registry 'x'"),
            ({"timeout": "5"}, "invalid timeout '5'"),
            ({"host": None}, "invalid host None"),
            ({"host": b"127.0.0.1"}, "invalid host b'127.0.0.1'"),
            ({"kind": None}, "invalid kind None"),
        ],
    )
    async def test_wrong_type_names_value(
        self, arguments: dict[str, object], message: str
    ) -> None:
        with pytest.raises(TypeError, match=re.escape(message)):
            async with claim_port(**arguments):  # type: ignore[arg-type]
                pass

    @pytest.mark.parametrize("hosts", [["0.0.0.0", "::"], ["127.0.0.1", "::"]])
    async def test_dual_stack_beside_ipv4_rejected(self, hosts: list[str]) -> None:
        with pytest.raises(ValueError, match="already covers"):
            async with claim_port(host=hosts):
                pass

    async def test_kind_is_case_insensitive(self, registry: FileLockRegistry) -> None:
        async with claim_port(kind="UDP", registry=registry) as sock:
            assert sock.type == socket.SOCK_DGRAM


class TestImpossibleBlocks:
    async def test_gapped_ports_fail_fast_with_reason(
        self, registry: FileLockRegistry
    ) -> None:
        ports = find_free_ports(9)[::2]

        with anyio.fail_after(5), pytest.raises(PortExhaustedError) as caught:
            async with open_claim(ports, count=2, registry=registry, timeout=30):
                pass

        assert caught.value.rejections["excluded"] == 5
        assert "every allowed port is excluded" in str(caught.value)
        assert "a block of 2 ports" in str(caught.value)

    async def test_verify_unclaimed_raises(self, registry: FileLockRegistry) -> None:
        claimer = PortClaimer(find_free_ports(1)[0], registry=registry)

        with pytest.raises(RuntimeError, match="never claimed"):
            await claimer.verify_claim()


class TestSharedSelectors:
    async def test_bool_count_rejected_after_int(
        self, registry: FileLockRegistry
    ) -> None:
        spec = ",".join(map(str, find_free_ports(2)))
        async with claim_port(spec, registry=registry):
            pass

        with pytest.raises(ValueError, match="invalid count True"):
            async with claim_port(spec, registry=registry, count=True):
                pass

    async def test_registry_change_takes_effect(self, tmp_path: Path) -> None:
        spec = ",".join(map(str, find_free_ports(2)))
        first, second = (
            FileLockRegistry(tmp_path / "a"),
            FileLockRegistry(tmp_path / "b"),
        )
        async with claim_port(spec, registry=first):
            pass
        async with claim_port(spec, registry=second):
            pass

        assert first.list_claims_now()
        assert second.list_claims_now()


class TestSecondUserReport:
    async def test_huge_block_fails_fast(self, registry: FileLockRegistry) -> None:
        with (
            anyio.fail_after(5),
            pytest.raises(PortExhaustedError, match="every allowed port"),
        ):
            async with open_claim(count=33000, registry=registry, timeout=2):
                pass

    async def test_block_bases_need_consecutive_ports(self) -> None:
        assert block_bases((1, 2, 3, 5, 6, 7, 8, 10), 3) == frozenset({1, 5, 6})

    @pytest.mark.parametrize(
        "hosts",
        [
            ["0.0.0.0", "127.0.0.1"],
            ["::1", "::"],
            ["::", "::ffff:127.0.0.1"],
            ["127.0.0.1", "::ffff:127.0.0.1"],
        ],
    )
    async def test_overlapping_hosts_rejected(self, hosts: list[str]) -> None:
        with (
            anyio.fail_after(5),
            pytest.raises(ValueError, match=r"covers|IPv4-mapped"),
        ):
            async with claim_port(host=hosts, timeout=None):
                pass

    @pytest.mark.parametrize(
        ("arguments", "error"),
        [
            ({"verify_delay": None}, TypeError),
            ({"backlog": "1"}, TypeError),
            ({"backlog": True}, TypeError),
            ({"backlog": -1}, ValueError),
            ({"listen": "no"}, TypeError),
            ({"metrics": "x"}, TypeError),
        ],
    )
    async def test_bad_options_named(
        self, arguments: dict[str, object], error: type[Exception]
    ) -> None:
        name, value = next(iter(arguments.items()))
        with pytest.raises(
            error,
            match=re.escape(f"invalid {name} {value!r}".replace("'None'", "None")),
        ):
            async with claim_port(**arguments):  # type: ignore[arg-type]
                pass

    async def test_interrupted_wait_named_in_error(
        self, registry: FileLockRegistry
    ) -> None:
        ports = find_free_ports(2)
        with (
            anyio.fail_after(5),
            pytest.raises(PortExhaustedError, match="verification delay were running"),
        ):
            async with claim_port(
                ports, registry=registry, verify_delay=5, timeout=0.2
            ):
                pass
