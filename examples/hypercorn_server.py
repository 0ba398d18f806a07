"""Serve a tiny ASGI application with hypercorn on a claimed port, on asyncio or trio.

python examples/hypercorn_server.py                  # serve until Ctrl-C
python examples/hypercorn_server.py --backend trio   # the same on trio
python examples/hypercorn_server.py --once           # request one page, print it, exit
"""

from __future__ import annotations

import argparse
import os
import signal
import urllib.request
from functools import partial
from typing import Any

import anyio
import hypercorn.asyncio
import hypercorn.trio
from hypercorn.config import Config

from aioportclaim import PortSelectionStrategy, claim_port

# Try 8000-8099 first, and never the default port of a database or broker.
STRATEGY = PortSelectionStrategy().prefer_range(8000, 8099).exclude_well_known()


async def app(scope: Any, receive: Any, send: Any) -> None:
    """Respond to every HTTP request with a plain-text greeting."""
    if scope["type"] == "lifespan":
        # hypercorn 0.18 on trio fails to start unless the app responds to
        # each lifespan event.
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return  # no websocket route
    headers = [(b"content-type", b"text/plain")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"Hello from hypercorn\n"})


def fetch(url: str) -> tuple[int, str]:
    """GET `url` and return the status and the body (blocking)."""
    # No proxy: an http_proxy setting must not route a loopback request away.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as response:
        return response.status, response.read().decode()


async def main(once: bool, backend: str) -> None:
    serve = hypercorn.trio.serve if backend == "trio" else hypercorn.asyncio.serve
    stop = anyio.Event()

    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        # With an app_id, the first port tried is the same on every run.
        async with claim_port(STRATEGY, app_id="hypercorn-example") as sock:
            config = Config()
            # hypercorn wraps an fd:// descriptor in a socket of its own and
            # closes it at shutdown. A duplicate keeps the claim's socket
            # open, so the claim holds the port until its block ends.
            config.bind = [f"fd://{os.dup(sock.fileno())}"]
            host, port = sock.getsockname()[:2]
            url = f"http://{host}:{port}/"

            async with anyio.create_task_group() as group:
                group.start_soon(
                    partial(serve, app, config, shutdown_trigger=stop.wait)
                )
                print(f"Serving on {url} ({backend})", flush=True)
                if once:
                    status, body = await anyio.to_thread.run_sync(fetch, url)
                    print(f"GET {url} -> {status} {body!r}")
                else:
                    async for _ in signals:
                        break
                stop.set()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--once", action="store_true", help="request one page, print it and exit"
    )
    parser.add_argument(
        "--backend",
        choices=["asyncio", "trio"],
        default="asyncio",
        help="event loop to run hypercorn on (default: asyncio)",
    )
    args = parser.parse_args()
    anyio.run(main, args.once, args.backend, backend=args.backend)
