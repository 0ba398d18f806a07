"""Sockets of a claim: address and protocol arguments, and bind rules."""

from __future__ import annotations

import errno
import functools
import ipaddress
import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal

from ._exceptions import PortClaimError
from ._system import is_windows
from ._verify import BUSY_ERRNOS, FAMILY_MISSING_ERRNOS, family_of, is_port_taken

if TYPE_CHECKING:
    from collections.abc import Sequence

Kind = Literal["tcp", "udp"]

_WILDCARDS = {"": "0.0.0.0", "0.0.0.0": "0.0.0.0", "::": "::"}
DEFAULT_BACKLOG = 128


def bind_socket(
    host: str, kind: str, port: int, *, listen: bool, backlog: int = DEFAULT_BACKLOG
) -> socket.socket | None:
    """Bind a plain `socket.socket` to `host` and `port`; None if the port is busy.

    TCP sockets that will listen set ``SO_REUSEADDR`` (so a port with old
    connections in TIME_WAIT can be claimed) and listen at once, which makes
    them exclusive. Other sockets bind without it: on Linux two bound,
    non-listening ``SO_REUSEADDR`` sockets may share a port, and for UDP the
    option lets two sockets share it outright. ``SO_REUSEPORT`` is never set.
    On Windows every socket sets ``SO_EXCLUSIVEADDRUSE`` instead.
    """
    family = family_of(host)
    sock_type = socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM
    try:
        sock = socket.socket(family, sock_type)
    except OSError as error:
        raise _address_error(host, port, error) from error
    try:
        if is_windows():
            # NOTE: untested until CI covers Windows.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)  # type: ignore[attr-defined,unused-ignore]
        elif kind == "tcp" and listen:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if host == "::":
            # Dual-stack, whatever net.ipv6.bindv6only is set to, so the claim
            # covers IPv4 as well and needs no probe of 0.0.0.0.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        if kind == "tcp" and listen:
            sock.listen(backlog)
    except OSError as error:
        sock.close()
        if error.errno in BUSY_ERRNOS:
            return None
        raise _address_error(host, port, error) from error
    return sock


def _address_error(host: str, port: int, error: OSError) -> PortClaimError:
    ipv6 = family_of(host) == socket.AF_INET6
    if error.errno in (errno.EMFILE, errno.ENFILE):
        msg = f"cannot open a socket for {host} port {port}: {error.strerror}; raise the descriptor limit (ulimit -n) or hold fewer claims"
    elif error.errno in FAMILY_MISSING_ERRNOS and ipv6 and not ipv6_works():
        msg = f"IPv6 is unavailable on this host: binding [{host}]:{port} failed ({error.strerror}); claim on 127.0.0.1 instead"
    elif error.errno in FAMILY_MISSING_ERRNOS:
        bracketed = f"[{host}]" if ipv6 else host
        msg = f"address {bracketed} is not available on this host ({error.strerror}); use an address of a local interface, such as 127.0.0.1"
    else:
        msg = f"binding {host} port {port} failed: {error.strerror or error}; check that the address belongs to a local interface"
    return PortClaimError(msg)


def normalize_hosts(host: str | Sequence[str]) -> tuple[str, ...]:
    """Turn a host argument into numeric addresses, without duplicates.

    ``"localhost"`` becomes 127.0.0.1 and, where IPv6 works, ::1: clients
    that connect to "localhost" may reach either.
    """
    # Callers may pass anything at run time, whatever the annotation declares.
    value: object = host
    if isinstance(value, str):
        items: tuple[str, ...] = (value,)
    elif isinstance(value, bytes | bytearray) or not isinstance(value, Iterable):
        msg = f"invalid host {value!r}: expected an IP address string such as '127.0.0.1', 'localhost', or a list of them"
        raise TypeError(msg)
    else:
        items = tuple(value)
    try:
        return _normalize_host_tuple(items)
    except TypeError:
        if all(isinstance(item, str) for item in items):
            raise
        return _normalize_host_tuple.__wrapped__(items)


@functools.lru_cache(maxsize=64)
def _normalize_host_tuple(items: tuple[str, ...]) -> tuple[str, ...]:
    if not items:
        msg = "host must name at least one address, for example '127.0.0.1'"
        raise ValueError(msg)
    hosts: list[str] = []
    for item in items:
        for address in _expand_host(item):
            if address not in hosts:
                hosts.append(address)
    _check_overlap(items, hosts)
    return tuple(hosts)


def _check_overlap(items: tuple[str, ...], hosts: list[str]) -> None:
    # A wildcard bind covers every address it spans, so a second socket on
    # one of those addresses could never bind and no port would ever fit.
    others = [address for address in hosts if address != "::"]
    if "::" in hosts and others:
        msg = f"invalid hosts {list(items)!r}: '::' is bound dual-stack and already covers {', '.join(others)}; claim '::' alone"
        raise ValueError(msg)
    ipv4 = [address for address in hosts if ":" not in address and address != "0.0.0.0"]
    if "0.0.0.0" in hosts and ipv4:
        msg = f"invalid hosts {list(items)!r}: '0.0.0.0' already covers {', '.join(ipv4)}; claim '0.0.0.0' alone"
        raise ValueError(msg)


def _expand_host(host: object) -> tuple[str, ...]:
    if not isinstance(host, str):
        msg = f"invalid host {host!r}: expected an IP address string, 'localhost', '0.0.0.0' or '::'"
        raise TypeError(msg)
    if host.lower() == "localhost":
        return ("127.0.0.1", "::1") if ipv6_works() else ("127.0.0.1",)
    if host in _WILDCARDS:
        return (_WILDCARDS[host],)
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        msg = f"invalid host {host!r}: expected an IP address, 'localhost', '0.0.0.0' or '::'; resolve host names before claiming"
        raise ValueError(msg) from None
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        msg = f"invalid host {host!r}: an IPv4-mapped address; claim the IPv4 address {mapped} instead"
        raise ValueError(msg)
    return (str(address),)


def normalize_kinds(kind: str | Sequence[str]) -> tuple[Kind, ...]:
    """Turn a kind argument ("tcp", "udp", or both) into a tuple without duplicates."""
    value: object = kind
    if isinstance(value, str):
        items: list[str] = [value]
    elif isinstance(value, bytes | bytearray) or not isinstance(value, Iterable):
        msg = (
            f"invalid kind {value!r}: expected 'tcp', 'udp' or both, as ('tcp', 'udp')"
        )
        raise TypeError(msg)
    else:
        items = list(value)
    kinds: list[Kind] = []
    for item in items:
        item_value: object = item
        name = item_value.lower() if isinstance(item_value, str) else item_value
        if name == "tcp" or name == "udp":
            if name not in kinds:
                kinds.append("tcp" if name == "tcp" else "udp")
        else:
            msg = f"invalid kind {item!r}: expected 'tcp', 'udp' or both, as ('tcp', 'udp')"
            raise ValueError(msg)
    if not kinds:
        msg = "kind must name at least one protocol: 'tcp' or 'udp'"
        raise ValueError(msg)
    return tuple(kinds)


def check_port(port: object, count: object) -> int:
    """Validate a port and a block size; return the port."""
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        msg = f"invalid count {count!r}: expected a whole number of ports, 1 or more"
        raise ValueError(msg)
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        msg = f"invalid port {port!r}: expected a whole number from 1 to 65535"
        raise ValueError(msg)
    if port + count - 1 > 65535:
        msg = (
            f"invalid block of {count} ports from {port}: it would end past port 65535"
        )
        raise ValueError(msg)
    return port


_ipv6_works: bool | None = None


def ipv6_works() -> bool:
    """Tell whether this host can bind ::1, checked once per process."""
    global _ipv6_works
    if _ipv6_works is None:
        _ipv6_works = is_port_taken("::1", "tcp", 0) is not None
    return _ipv6_works
