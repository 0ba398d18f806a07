"""The public API: exports, module names, get_port's port-for dispatch."""

from __future__ import annotations

import socket

import anyio
import anyio.lowlevel
import pytest

import aioportclaim
from aioportclaim import (
    InvalidPortSpecError,
    PortClaimError,
    PortExhaustedError,
    claim_port,
    default_candidate_ports,
    get_port,
    get_port_sync,
)

from .conftest import find_free_ports


class TestExports:
    def test_all_is_sorted(self) -> None:
        # The order ruff's RUF022 keeps: constants, then classes, then functions.
        def group(name: str) -> tuple[int, str]:
            return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

        assert aioportclaim.__all__ == sorted(aioportclaim.__all__, key=group)

    def test_all_names_exist(self) -> None:
        missing = [
            name for name in aioportclaim.__all__ if not hasattr(aioportclaim, name)
        ]

        assert missing == []

    def test_public_classes_name_package(self) -> None:
        wrong = [
            name
            for name in aioportclaim.__all__
            if isinstance(getattr(aioportclaim, name), type)
            and getattr(aioportclaim, name).__module__ != "aioportclaim"
        ]

        assert wrong == []

    def test_errors_are_oserrors(self) -> None:
        assert issubclass(PortClaimError, OSError)
        assert issubclass(InvalidPortSpecError, ValueError)
        assert issubclass(InvalidPortSpecError, PortClaimError)
        assert issubclass(aioportclaim.ClaimTimeoutError, TimeoutError)
        assert issubclass(aioportclaim.ClaimTimeoutError, PortExhaustedError)


class TestGetPort:
    @pytest.mark.parametrize(
        ("spec", "expected"), [(8080, 8080), ("8080", 8080), (-1, None), ("-1", None)]
    )
    async def test_single_port_returned_unchecked(
        self, spec: object, expected: int | None
    ) -> None:
        assert await get_port(spec) == expected

    @pytest.mark.parametrize("spec", [None, 0, "", [], set(), frozenset(), ()])
    async def test_any_port_spec(self, spec: object) -> None:
        port = await get_port(spec)

        assert port in default_candidate_ports()

    async def test_range_tuple_searched(self) -> None:
        ports = find_free_ports(3)
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", ports[0]))
            squatter.listen()
            port = await get_port((ports[0], ports[1]))

        assert port == ports[1]

    async def test_mixed_collection_parsed(self) -> None:
        ports = find_free_ports(4)
        spec = [f"{ports[0]}-{ports[1]}", (ports[2], ports[2]), str(ports[3])]

        port = await get_port(spec, exclude_ports=[ports[0], ports[1], ports[2]])

        assert port == ports[3]

    async def test_returned_port_is_released(self) -> None:
        port = await get_port(find_free_ports(2))
        assert port is not None

        async with claim_port(port, timeout=0.5) as sock:
            assert sock.getsockname()[1] == port

    async def test_no_free_port_raises(self) -> None:
        ports = find_free_ports(1)
        async with claim_port(ports):
            with pytest.raises(PortExhaustedError):
                await get_port(ports)

    @pytest.mark.parametrize(
        "spec",
        ["abc", "9000-8000", 70000, (5,), "80,,90", -5, True, 8000.7, range(5, 5)],
    )
    async def test_bad_spec_names_value(self, spec: object) -> None:
        with pytest.raises(InvalidPortSpecError) as caught:
            await get_port(spec)

        assert repr(spec) in str(caught.value)

    @pytest.mark.parametrize("spec", ["abc", "9000-8000", 70000, (5,), "80,,90", -5])
    async def test_claim_port_rejects_bad_spec(self, spec: object) -> None:
        with pytest.raises(InvalidPortSpecError, match="invalid port spec"):
            async with claim_port(spec):
                pass


class TestGetPortSync:
    def test_sync_twin_outside_loop(self) -> None:
        ports = find_free_ports(2)

        assert get_port_sync(ports) in ports
        assert get_port_sync(1234) == 1234

    async def test_sync_twin_inside_loop(self) -> None:
        ports = find_free_ports(2)

        assert get_port_sync(ports) in ports
        await anyio.lowlevel.checkpoint()
