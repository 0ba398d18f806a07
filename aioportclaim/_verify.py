"""Verification checks: is the socket still bound, is the other family free."""

from __future__ import annotations

import _socket
import errno
import socket

from ._system import is_windows

# The address that clients of "localhost" may reach in the other IP family.
# "::" has none: claims bind it dual-stack, so its bind covers IPv4 too.
_COUNTERPART = {
    "127.0.0.1": "::1",
    "::1": "127.0.0.1",
    "0.0.0.0": "::",
}

# Errors that mean the address family or address does not exist on this host.
FAMILY_MISSING_ERRNOS = {errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT}
# A bind refused with EACCES (a privileged port, a Windows excluded range)
# counts as busy: the port cannot be had, but another one may.
BUSY_ERRNOS = {errno.EADDRINUSE, errno.EACCES}


def counterpart_host(host: str) -> str | None:
    """Return the address in the other IP family that clients treat as the same host."""
    return _COUNTERPART.get(host)


def family_of(host: str) -> socket.AddressFamily:
    """Return the address family of a numeric host address."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def is_port_taken(host: str, kind: str, port: int) -> bool | None:
    """Probe whether some socket holds `port` on `host`.

    Returns True when a bind fails because the port is in use, False when
    the port is free, and None when the host or its family is unavailable
    here (no IPv6, for example). For TCP the probe sets ``SO_REUSEADDR``, so
    a listener or an exclusive socket counts as taken, while connections in
    TIME_WAIT do not.
    """
    family = family_of(host)
    sock_type = socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM
    try:
        # The probe never leaves this function, so the C-level socket type
        # serves and skips the Python wrapper's set-up.
        probe = _socket.socket(family, sock_type)
    except OSError as error:
        if error.errno in FAMILY_MISSING_ERRNOS:
            return None
        raise
    try:
        if family == socket.AF_INET6:
            # Probe the IPv6 side alone: a dual-stack probe on "::" would
            # also collide with our own IPv4 socket.
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == "tcp" and not is_windows():
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno in BUSY_ERRNOS:
                return True
            if error.errno in FAMILY_MISSING_ERRNOS:
                return None
            raise
    finally:
        probe.close()
    return False


def is_socket_bound(sock: socket.socket, port: int) -> bool:
    """Check that `sock` is open and still bound to `port`."""
    if sock.fileno() < 0:
        return False
    try:
        return int(sock.getsockname()[1]) == port
    except OSError:
        return False
