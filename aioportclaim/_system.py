"""Facts about the host: port ranges, network namespace, container id."""

from __future__ import annotations

import functools
import logging
import os
import re
import socket
import sys

logger = logging.getLogger(__name__)

#: Lowest port that an unprivileged process may bind on most systems.
FIRST_UNPRIVILEGED_PORT = 1024
MAX_PORT = 65535

#: Ephemeral range assumed where the system cannot be asked: the IANA range,
#: which macOS and Windows use by default.
IANA_EPHEMERAL_RANGE = (49152, 65535)

#: Ports used by default when fewer than `MIN_DEFAULT_PORTS` unprivileged
#: ports lie outside the ephemeral range (some Kubernetes nodes set it to
#: 1025-65000). These ports may then meet outgoing connections' local ports;
#: a bind that fails for that reason counts as "in use" and the claim moves on.
FALLBACK_PORT_RANGE = (20000, 29999)
MIN_DEFAULT_PORTS = 1000

_PORT_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"
_RESERVED_PORTS_FILE = "/proc/sys/net/ipv4/ip_local_reserved_ports"
_CONTAINER_ID = re.compile(r"([0-9a-f]{64})")


def read_ephemeral_range() -> tuple[int, int]:
    """Return the operating system's ephemeral port range, both ends inclusive."""
    try:
        with open(_PORT_RANGE_FILE, encoding="ascii") as file:
            low, high = (int(field) for field in file.read().split())
    except (OSError, ValueError):
        return IANA_EPHEMERAL_RANGE
    return low, high


def read_reserved_ports() -> frozenset[int]:
    """Return the ports that the kernel keeps out of its ephemeral choices.

    Linux lists them in ``ip_local_reserved_ports`` because some service
    expects them to stay free, so a claim avoids them as well.
    """
    try:
        with open(_RESERVED_PORTS_FILE, encoding="ascii") as file:
            text = file.read().strip()
    except OSError:
        return frozenset()
    return parse_port_list(text)


def parse_port_list(text: str) -> frozenset[int]:
    """Parse the kernel's ``"8080,9000-9010"`` form; malformed items are skipped."""
    ports: set[int] = set()
    for item in text.split(","):
        low_text, dash, high_text = item.strip().partition("-")
        try:
            low = int(low_text)
            high = int(high_text) if dash else low
        except ValueError:
            continue
        ports.update(range(max(low, 0), min(high, MAX_PORT) + 1))
    return frozenset(ports)


def compute_default_ports(
    ephemeral: tuple[int, int], reserved: frozenset[int]
) -> tuple[int, ...]:
    """Return the default candidates for the given ephemeral range and reserved ports.

    The default is every unprivileged port outside the ephemeral range and
    the reserved set. When fewer than `MIN_DEFAULT_PORTS` remain, the ports of
    `FALLBACK_PORT_RANGE` that are not reserved are used instead and a warning
    is logged.
    """
    low, high = ephemeral
    ports = tuple(
        port
        for port in range(FIRST_UNPRIVILEGED_PORT, MAX_PORT + 1)
        if not low <= port <= high and port not in reserved
    )
    if len(ports) >= MIN_DEFAULT_PORTS:
        return ports

    first, last = FALLBACK_PORT_RANGE
    logger.warning(
        "only %d unprivileged ports lie outside the ephemeral range %d-%d; "
        "using %d-%d as default candidates instead. Pass ports to the strategy "
        "or narrow net.ipv4.ip_local_port_range to silence this warning",
        len(ports),
        low,
        high,
        first,
        last,
    )
    return tuple(port for port in range(first, last + 1) if port not in reserved)


@functools.cache
def default_candidate_ports() -> tuple[int, ...]:
    """Return the default candidate ports of this host, read once per process."""
    return compute_default_ports(read_ephemeral_range(), read_reserved_ports())


def network_scope() -> str:
    """Name the network namespace this process binds ports in.

    Ports are per network namespace, so two processes coordinate only when
    they share one. On Linux the namespace is named by the inode of
    ``/proc/self/ns/net``; elsewhere the whole host is one scope.
    """
    try:
        return f"net-{os.stat('/proc/self/ns/net').st_ino}"
    except OSError:
        return "host"


@functools.cache
def container_id() -> str | None:
    """Return the id of the container this process runs in, when one shows."""
    for path in ("/proc/self/cgroup", "/proc/self/mountinfo"):
        try:
            with open(path, encoding="utf-8", errors="replace") as file:
                match = _CONTAINER_ID.search(file.read(65536))
        except OSError:
            continue
        if match:
            return match.group(1)
    return None


@functools.cache
def host_name() -> str:
    """Return this host's name as the holder records show it."""
    return socket.gethostname()


def is_windows() -> bool:
    """Tell whether the socket and lock rules of Windows apply."""
    return sys.platform == "win32"
