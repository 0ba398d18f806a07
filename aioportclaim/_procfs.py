"""Linux /proc readers: listening sockets, their owners, and the process tree.

The owner of a listening socket is found by reading its inode from
``/proc/net/{tcp,tcp6,udp,udp6}`` and the ``socket:[inode]`` links under
``/proc/<pid>/fd``, and descendants by the parent pid in ``/proc/<pid>/stat``.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from anyio.abc import Process

_TCP_LISTEN_STATE = "0A"


@dataclass(frozen=True, slots=True)
class _Socket:
    kind: str
    address: str
    inode: int


def descendants(pid: int) -> set[int]:
    """Return `pid` and the pids of all its descendants, read from ``/proc/*/stat``."""
    children: dict[int, list[int]] = {}
    for child, parent in _read_parents().items():
        children.setdefault(parent, []).append(child)
    tree = {pid}
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), ()):
            if child not in tree:
                tree.add(child)
                pending.append(child)
    return tree


def find_socket_owners(inodes: set[int], pids: set[int]) -> dict[int, set[int]]:
    """Map each socket inode of `inodes` to the processes of `pids` that hold it."""
    owners: dict[int, set[int]] = {}
    for pid in pids:
        for inode in _socket_inodes(pid) & inodes:
            owners.setdefault(inode, set()).add(pid)
    return owners


def _read_proc_net(kind: str, port: int) -> list[_Socket] | None:
    """List the sockets on `port` from /proc/net, or None where it cannot be read."""
    found: list[_Socket] = []
    readable = False
    for path in (f"/proc/net/{kind}", f"/proc/net/{kind}6"):
        try:
            with open(path, encoding="ascii") as file:
                lines = file.readlines()[1:]
        except OSError:
            continue
        readable = True
        for line in lines:
            item = _parse_proc_net_line(line, kind, port)
            if item is not None:
                found.append(item)
    return found if readable else None


def _parse_proc_net_line(line: str, kind: str, port: int) -> _Socket | None:
    # Fields: slot, local address:port, remote address:port, state, queues,
    # timers, retransmits, uid, timeout, inode. Addresses are hexadecimal
    # 32-bit words in host byte order, and the port is plain hexadecimal.
    fields = line.split()
    if len(fields) < 10:
        return None
    address_hex, _, port_hex = fields[1].partition(":")
    try:
        if int(port_hex, 16) != port:
            return None
        if kind == "tcp" and fields[3] != _TCP_LISTEN_STATE:
            return None
        inode = int(fields[9])
        address = _decode_address(address_hex)
    except ValueError:
        return None
    return _Socket(kind, address, inode) if inode else None


def _decode_address(text: str) -> str:
    words = [int(text[start : start + 8], 16) for start in range(0, len(text), 8)]
    raw = b"".join(struct.pack("=I", word) for word in words)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw)
    address = ipaddress.IPv6Address(raw)
    mapped = address.ipv4_mapped
    return str(mapped) if mapped is not None else str(address)


def _list_pids() -> list[int]:
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    return [int(name) for name in names if name.isdigit()]


def _read_parents() -> dict[int, int]:
    parents: dict[int, int] = {}
    for pid in _list_pids():
        try:
            with open(f"/proc/{pid}/stat", "rb") as file:
                data = file.read()
        except OSError:
            continue
        # The command name in parentheses may contain spaces and ")", so
        # the fields after it are found from the last ")".
        fields = data.rpartition(b")")[2].split()
        if len(fields) >= 2 and fields[1].isdigit():
            parents[pid] = int(fields[1])
    return parents


def _socket_inodes(pid: int) -> set[int]:
    fd_dir = f"/proc/{pid}/fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return set()
    inodes: set[int] = set()
    for name in names:
        try:
            target = os.readlink(f"{fd_dir}/{name}")
        except OSError:
            continue
        if target.startswith("socket:[") and target.endswith("]"):
            inodes.add(int(target[8:-1]))
    return inodes


def _command_name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as file:
            return file.read(64).strip() or "?"
    except OSError:
        return "?"


def _has_exited(process: int | Process) -> bool:
    if not isinstance(process, int) and process.returncode is not None:
        return True
    pid = process if isinstance(process, int) else process.pid
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            state = file.read().rpartition(b")")[2].split()[:1]
    except FileNotFoundError:
        return os.path.exists("/proc/self/stat") or not _pid_exists(pid)
    except OSError:
        return False
    return state == [b"Z"]  # a zombie has exited, and its parent has not waited yet


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
