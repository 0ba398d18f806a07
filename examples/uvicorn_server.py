"""Serve a tiny ASGI application with uvicorn on a claimed port.

python examples/uvicorn_server.py          # serve until Ctrl-C
python examples/uvicorn_server.py --once   # request one page, print it, exit
"""

from __future__ import annotations

import argparse
import asyncio
import urllib.request
from typing import Any

import uvicorn

from aioportclaim import PortSelectionStrategy, claim_port

# Try 8000-8099 first, and never the default port of a database or broker.
STRATEGY = PortSelectionStrategy().prefer_range(8000, 8099).exclude_well_known()


async def app(scope: Any, receive: Any, send: Any) -> None:
    """Respond to every HTTP request with a plain-text greeting."""
    if scope["type"] != "http":
        return  # lifespan is off in the config below, and there is no websocket route
    headers = [(b"content-type", b"text/plain")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"Hello from uvicorn\n"})


def fetch(url: str) -> tuple[int, str]:
    """GET `url` and return the status and the body (blocking)."""
    # No proxy: an http_proxy setting must not route a loopback request away.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as response:
        return response.status, response.read().decode()


async def main(once: bool) -> None:
    # With an app_id, the first port tried is the same on every run.
    async with claim_port(STRATEGY, app_id="uvicorn-example") as sock:
        host, port = sock.getsockname()[:2]
        url = f"http://{host}:{port}/"
        server = uvicorn.Server(uvicorn.Config(app, lifespan="off"))
        # The socket already listens, so the URL works from here on: requests
        # wait in the backlog until uvicorn accepts them.
        print(f"Serving on {url}", flush=True)

        if not once:
            # uvicorn stops on SIGINT or SIGTERM by itself and closes the socket.
            await server.serve(sockets=[sock])
            return

        async with asyncio.TaskGroup() as group:
            group.create_task(server.serve(sockets=[sock]))
            status, body = await asyncio.to_thread(fetch, url)
            print(f"GET {url} -> {status} {body!r}")
            server.should_exit = True


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--once", action="store_true", help="request one page, print it and exit"
    )
    try:
        asyncio.run(main(parser.parse_args().once))
    except KeyboardInterrupt:
        # After a graceful shutdown, uvicorn raises the caught signal again,
        # and for SIGINT that ends asyncio.run with KeyboardInterrupt.
        pass
