"""Serve a line echo protocol with plain asyncio on a claimed port.

python examples/asyncio_server.py          # serve until Ctrl-C (try nc 127.0.0.1 PORT)
python examples/asyncio_server.py --once   # send one line, print the echo, exit
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from aioportclaim import PortSelectionStrategy, claim_port

# Try 8000-8099 first, and never the default port of a database or broker.
STRATEGY = PortSelectionStrategy().prefer_range(8000, 8099).exclude_well_known()


# Open connections and their handler tasks, so that stopping can end them.
connections: dict[asyncio.StreamWriter, asyncio.Task[object]] = {}


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send each line back until either side closes the connection."""
    task = asyncio.current_task()
    assert task is not None
    connections[writer] = task
    try:
        while line := await reader.readline():
            writer.write(line)
            await writer.drain()
    finally:
        del connections[writer]
        writer.close()
        await writer.wait_closed()


async def close_connections() -> None:
    """Close every open connection and wait until its handler has returned.

    Closing a server leaves its connections open, and from Python 3.12 on
    it waits for them, so one idle client would block the shutdown.
    """
    handlers = list(connections.values())
    for writer in list(connections):
        writer.close()
    await asyncio.gather(*handlers, return_exceptions=True)


async def send_line(host: str, port: int, line: bytes) -> bytes:
    """Send one line to the echo server and return what comes back."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(line)
    writer.write_eof()
    # The server closes its side after the echo, so this read ends once the
    # server's handler is done.
    reply = await reader.read()
    writer.close()
    await writer.wait_closed()
    return reply


async def main(once: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    # With an app_id, the first port tried is the same on every run.
    async with claim_port(STRATEGY, app_id="asyncio-example") as sock:
        server = await asyncio.start_server(echo, sock=sock)
        host, port = sock.getsockname()[:2]
        print(f"Serving on tcp://{host}:{port}", flush=True)

        # Leaving this block closes the server and its socket.
        async with server:
            if once:
                reply = await send_line(host, port, b"hello\n")
                print(f"Sent b'hello\\n', received {reply!r}")
            else:
                await stop.wait()
            await close_connections()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--once", action="store_true", help="send one line, print the echo and exit"
    )
    asyncio.run(main(parser.parse_args().once))
