"""Host facts: default candidates, fallback, network namespaces, missing IPv6."""

from __future__ import annotations

import subprocess
import sys

import pytest

from aioportclaim import FALLBACK_PORT_RANGE, default_candidate_ports
from aioportclaim._system import (
    MIN_DEFAULT_PORTS,
    compute_default_ports,
    network_scope,
    parse_port_list,
    read_ephemeral_range,
    read_reserved_ports,
)

from .conftest import require_root_tools

NETNS_MARK = pytest.mark.netns


def run_in_netns(setup: str, code: str) -> subprocess.CompletedProcess[str]:
    """Run Python code in a new network namespace after shell `setup` commands."""
    require_root_tools("unshare", "ip", "sysctl")
    shell = f'ip link set lo up && {setup} exec "$0" -c "$1"'
    return subprocess.run(
        ["unshare", "-n", "sh", "-c", shell, sys.executable, code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class TestDefaultPorts:
    def test_defaults_avoid_ephemeral_range(self) -> None:
        low, high = read_ephemeral_range()
        ports = default_candidate_ports()

        assert ports
        assert not [port for port in ports if low <= port <= high]
        assert min(ports) >= 1024

    def test_defaults_avoid_reserved_ports(self) -> None:
        reserved = read_reserved_ports()

        assert not reserved.intersection(default_candidate_ports())

    def test_compute_skips_reserved_and_ephemeral(self) -> None:
        ports = compute_default_ports((32768, 60999), frozenset({2000, 61000}))

        assert 2000 not in ports
        assert 61000 not in ports
        assert 40000 not in ports
        assert 1024 in ports
        assert 65535 in ports

    def test_wide_ephemeral_range_falls_back(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        ports = compute_default_ports((1025, 65000), frozenset({20001}))
        first, last = FALLBACK_PORT_RANGE

        assert ports == tuple(port for port in range(first, last + 1) if port != 20001)
        assert "using 20000-29999 as default candidates" in caplog.text

    def test_narrow_remainder_kept_above_minimum(self) -> None:
        ports = compute_default_ports((1024 + MIN_DEFAULT_PORTS, 65535), frozenset())

        assert ports == tuple(range(1024, 1024 + MIN_DEFAULT_PORTS))

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("", frozenset()),
            ("8080", frozenset({8080})),
            ("8080,9000-9002", frozenset({8080, 9000, 9001, 9002})),
            ("x,7-", frozenset()),
        ],
    )
    def test_parse_kernel_port_list(self, text: str, expected: frozenset[int]) -> None:
        assert parse_port_list(text) == expected


@NETNS_MARK
class TestNamespaces:
    def test_kubernetes_range_falls_back_in_namespace(self) -> None:
        code = (
            "import logging\n"
            "logging.basicConfig(level=logging.WARNING)\n"
            "from aioportclaim import default_candidate_ports\n"
            "ports = default_candidate_ports()\n"
            "print(min(ports), max(ports), len(ports))\n"
        )
        result = run_in_netns(
            'sysctl -qw net.ipv4.ip_local_port_range="1025 65000" '
            "&& sysctl -qw net.ipv4.ip_local_reserved_ports=20005 &&",
            code,
        )

        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["20000", "29999", "9999"]
        assert "ephemeral range 1025-65000" in result.stderr

    def test_namespace_changes_scope(self) -> None:
        result = run_in_netns(
            "", "from aioportclaim._system import network_scope; print(network_scope())"
        )

        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().startswith("net-")
        assert result.stdout.strip() != network_scope()

    def test_no_ipv6_host_claims_ipv4(self) -> None:
        code = (
            "import anyio, time\n"
            "from aioportclaim import PortClaimError, claim_port\n"
            "async def main():\n"
            "    async with claim_port() as sock:\n"
            "        print('V4', sock.getsockname()[0])\n"
            "    async with claim_port(host='localhost') as sock:\n"
            "        print('LOCALHOST', sock.getsockname()[0])\n"
            "    start = time.monotonic()\n"
            "    try:\n"
            "        async with claim_port(host='::1'):\n"
            "            print('V6 CLAIMED')\n"
            "    except PortClaimError as error:\n"
            "        print('V6', round(time.monotonic() - start, 3), error)\n"
            "anyio.run(main)\n"
        )
        result = run_in_netns("sysctl -qw net.ipv6.conf.lo.disable_ipv6=1 &&", code)
        lines = result.stdout.splitlines()

        assert result.returncode == 0, result.stderr
        assert lines[0] == "V4 127.0.0.1"
        assert lines[1] == "LOCALHOST 127.0.0.1"
        assert lines[2].startswith("V6 ")
        assert float(lines[2].split()[1]) < 1.0
        assert "IPv6 is unavailable on this host" in lines[2]
