"""Serve an echo protocol with plain asyncio on a claimed port.

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


class Connections:
    """The open connections of one server, so that stopping can close them.

    `Server.close` leaves the connections open, and from Python 3.12 on
    `Server.wait_closed` waits for them, so one idle client would block
    the shutdown.
    """

    def __init__(self) -> None:
        self.transports: set[asyncio.BaseTransport] = set()
        self.closing = False

    def close_all(self) -> None:
        self.closing = True
        for transport in list(self.transports):
            transport.close()


class EchoProtocol(asyncio.Protocol):
    """Send back every byte that arrives, and close when the client stops sending."""

    def __init__(self, connections: Connections) -> None:
        self.connections = connections

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.connections.closing:
            transport.close()  # accepted while the server was stopping
        else:
            self.connections.transports.add(transport)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.transports.discard(self.transport)


async def send_line(host: str, port: int, line: bytes) -> bytes:
    """Send one line to the echo server and return what comes back."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(line)
    writer.write_eof()
    reply = await reader.read()  # the server closes after the echo
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
        connections = Connections()
        server = await loop.create_server(lambda: EchoProtocol(connections), sock=sock)
        host, port = sock.getsockname()[:2]
        print(f"Serving on tcp://{host}:{port}", flush=True)

        if once:
            reply = await send_line(host, port, b"hello\n")
            print(f"Sent b'hello\\n', received {reply!r}")
        else:
            await stop.wait()

        # Closing the server closes the claimed socket too.
        server.close()
        connections.close_all()
        await server.wait_closed()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--once", action="store_true", help="send one line, print the echo and exit"
    )
    asyncio.run(main(parser.parse_args().once))
