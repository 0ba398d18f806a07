"""Child process for command line tests: listen on the port named by a variable.

Usage: cli_env_listener.py VARIABLE [--hold S] [--status N] [--never]
       [--pid-file PATH] [--signal-file PATH] [--ignore-signals]

Writes its pid to --pid-file, then listens on 127.0.0.1 at the port in
environment variable VARIABLE (unless --never), keeps listening for --hold
seconds (default 30) and exits with --status (default 0). SIGTERM ends it at once
with status 0, after writing "SIGTERM" to --signal-file. With --ignore-signals
it ignores SIGTERM and SIGINT instead.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("variable")
    parser.add_argument("--hold", type=float, default=30.0)
    parser.add_argument("--status", type=int, default=0)
    parser.add_argument("--never", action="store_true")
    parser.add_argument("--pid-file")
    parser.add_argument("--signal-file")
    parser.add_argument("--ignore-signals", action="store_true")
    args = parser.parse_args()
    if args.ignore_signals:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *_: stop(args.signal_file))
    if args.pid_file:
        with open(args.pid_file, "w", encoding="ascii") as file:
            file.write(str(os.getpid()))

    server = socket.socket()
    if not args.never:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", int(os.environ[args.variable])))
        server.listen()
    time.sleep(args.hold)
    server.close()
    sys.exit(args.status)


def stop(signal_file: str | None) -> None:
    if signal_file:
        with open(signal_file, "w", encoding="ascii") as file:
            file.write("SIGTERM")
    sys.exit(0)


if __name__ == "__main__":
    main()
