"""Child process for hand-off tests: meet a listener whose owner it cannot see.

Usage: handoff_unknown_owner.py

Run it in a new PID namespace. It reserves a port, prints "RESERVED <port>",
closes the socket and waits for a line on standard input, sent once a
process outside the namespace listens on the port. Then it waits for its own
listener and prints "LOST <message>" when the hand-off reports the port as
lost, or "OTHER <error>" for any other outcome.
"""

from __future__ import annotations

import os
import sys

import anyio

from aioportclaim import ClaimLostError, reserve_port


async def main() -> None:
    async with reserve_port() as reservation:
        print("RESERVED", reservation.port, flush=True)
        reservation.release_socket()
        await anyio.to_thread.run_sync(sys.stdin.readline)
        try:
            await reservation.wait_listening(os.getpid(), timeout=5)
        except ClaimLostError as error:
            print("LOST", error, flush=True)
        except Exception as error:  # reported to the test, which fails on it
            print("OTHER", repr(error), flush=True)
        else:
            print("OTHER no error", flush=True)


if __name__ == "__main__":
    anyio.run(main)
