"""The public API: exports, module names, get_port's port-for dispatch."""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING

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

from .conftest import find_free_ports, run_python

if TYPE_CHECKING:
    from pathlib import Path

# Imports that a star import of the package and of its registries must allow.
STAR_IMPORTS = """
from aioportclaim import *
from aioportclaim.registries import *

print(open_registry.__name__, HandoffError.__name__, FileLockRegistry.__name__)
"""
# Reads RedisRegistry by name after a star import, which skips it.
REDIS_BY_NAME = """
from aioportclaim import *

print("RedisRegistry" in globals())
try:
    from aioportclaim import RedisRegistry
except ImportError as error:
    print(error)
"""


def hide_coredis(directory: Path) -> dict[str, str]:
    """Return an environment whose Python path finds a coredis that fails to import."""
    (directory / "coredis.py").write_text(
        "raise ImportError('coredis is hidden for this test')\n"
    )
    return {"PYTHONPATH": str(directory)}


class TestExports:
    def test_all_is_sorted(self) -> None:
        # The order ruff's RUF022 keeps: constants, then classes, then functions.
        def group(name: str) -> tuple[int, str]:
            if name.isupper():
                return (0, name)
            if name[0].isupper():
                return (1, name)
            return (2, name)

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

    def test_redis_registry_outside_all(self) -> None:
        assert "RedisRegistry" not in aioportclaim.__all__
        assert aioportclaim.RedisRegistry.__module__ == "aioportclaim"

    def test_open_registry_exported(self) -> None:
        from aioportclaim.registries import open_registry

        assert aioportclaim.open_registry is open_registry
        assert "open_registry" in aioportclaim.__all__

    def test_handoff_errors_exported(self) -> None:
        from aioportclaim import _exceptions

        assert aioportclaim.HandoffError is _exceptions.HandoffError
        assert aioportclaim.ListenTimeoutError is _exceptions.ListenTimeoutError
        assert issubclass(aioportclaim.ListenTimeoutError, TimeoutError)

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


class TestWithoutCoredis:
    def test_star_import_works(self, tmp_path: Path) -> None:
        env = {**os.environ, **hide_coredis(tmp_path)}

        result = run_python(STAR_IMPORTS, env=env)

        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == [
            "open_registry",
            "HandoffError",
            "FileLockRegistry",
        ]

    def test_import_by_name_names_extra(self, tmp_path: Path) -> None:
        env = {**os.environ, **hide_coredis(tmp_path)}

        result = run_python(REDIS_BY_NAME, env=env)
        in_globals, message = result.stdout.splitlines()

        assert result.returncode == 0, result.stderr
        assert in_globals == "False"
        assert "pip install 'aioportclaim[redis]'" in message

    def test_hidden_coredis_really_fails(self, tmp_path: Path) -> None:
        env = {**os.environ, **hide_coredis(tmp_path)}

        result = run_python("import coredis", env=env)

        assert result.returncode == 1
        assert "coredis is hidden for this test" in result.stderr


class TestGetPortExclusions:
    @pytest.mark.parametrize("form", ["string", "int"])
    async def test_single_exclusion_not_split(self, form: str) -> None:
        ports = find_free_ports(2)
        excluded: object = str(ports[0]) if form == "string" else ports[0]

        assert await get_port(ports, exclude_ports=excluded) == ports[1]  # type: ignore[arg-type]


class TestAppId:
    @pytest.mark.parametrize("spec", [None, 8080])
    async def test_overlong_app_id_rejected(self, spec: object) -> None:
        with pytest.raises(ValueError, match="app_id of 300 characters is too long"):
            async with claim_port(spec, app_id="x" * 300):
                pass
