"""Child process for hand-off tests: listen on a port, or fail to, on request.

Usage: handoff_listener.py PORT [--host H] [--kind tcp|udp] [--delay S]
       [--fork | --daemon] [--never] [--hold S]

Binds PORT (TCP sockets listen) after --delay seconds and prints
"LISTENING <pid>", where pid is the process that owns the socket. With
--fork a forked grandchild binds while this process waits for it. With
--daemon a daemon binds: a grandchild in a new session whose parent has
exited, so it is no longer a descendant of this process, which waits until
the daemon listens and then sleeps. The daemon closes its standard streams
after printing. With --never nothing binds. Every process exits after
--hold seconds (default 30) or on SIGTERM, whichever comes first.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time


def listen(args: argparse.Namespace) -> socket.socket:
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    kind = socket.SOCK_STREAM if args.kind == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(family, kind)
    if args.kind == "tcp":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6 and args.host == "::":
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((args.host, args.port))
    if args.kind == "tcp":
        sock.listen()
    return sock


def become_daemon(hold: float) -> int:
    """Fork a daemon and return, in it, the pipe end that reports it listens.

    The calling process does not return: it waits for that report, sleeps
    for `hold` seconds and exits.
    """
    read_end, write_end = os.pipe()
    if os.fork() == 0:
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        os.close(read_end)
        return write_end
    os.close(write_end)
    os.wait()
    os.read(read_end, 1)
    time.sleep(hold)
    sys.exit(0)


def detach_streams() -> None:
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--kind", default="tcp")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--fork", action="store_true")
    parser.add_argument("--daemon", action="store_true")
    parser.add_argument("--never", action="store_true")
    parser.add_argument("--hold", type=float, default=30.0)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    if args.fork:
        child = os.fork()
        if child:
            signal.signal(signal.SIGTERM, lambda *_: os.kill(child, signal.SIGTERM))
            os.waitpid(child, 0)
            return
    ready = become_daemon(args.hold) if args.daemon else None
    time.sleep(args.delay)
    if not args.never:
        sock = listen(args)
        print("LISTENING", os.getpid(), flush=True)
    if ready is not None:
        os.write(ready, b"x")
        detach_streams()
    time.sleep(args.hold)
    if not args.never:
        sock.close()


if __name__ == "__main__":
    main()
