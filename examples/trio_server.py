"""Serve an echo protocol with trio on a claimed port.

python examples/trio_server.py          # serve until Ctrl-C (try nc 127.0.0.1 PORT)
python examples/trio_server.py --once   # send one line, print the echo, exit
"""

from __future__ import annotations

import argparse
import signal

import trio

from aioportclaim import PortSelectionStrategy, claim_port

# Try 8000-8099 first, and never the default port of a database or broker.
STRATEGY = PortSelectionStrategy().prefer_range(8000, 8099).exclude_well_known()


async def echo(stream: trio.SocketStream) -> None:
    """Send back what the client sends until it closes the connection."""
    async with stream:
        async for data in stream:
            await stream.send_all(data)


async def send_line(host: str, port: int, line: bytes) -> bytes:
    """Send one line to the echo server and return what comes back."""
    async with await trio.open_tcp_stream(host, port) as stream:
        await stream.send_all(line)
        await stream.send_eof()
        return b"".join([data async for data in stream])


async def main(once: bool) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        # With an app_id, the first port tried is the same on every run.
        async with claim_port(STRATEGY, app_id="trio-example") as sock:
            # trio wraps only a plain socket.socket that already listens,
            # which is what a claim yields.
            listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
            host, port = sock.getsockname()[:2]

            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.serve_listeners, echo, [listener])
                print(f"Serving on tcp://{host}:{port}", flush=True)
                if once:
                    reply = await send_line(host, port, b"hello\n")
                    print(f"Sent b'hello\\n', received {reply!r}")
                else:
                    async for _ in signals:
                        break
                nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--once", action="store_true", help="send one line, print the echo and exit"
    )
    trio.run(main, parser.parse_args().once)
