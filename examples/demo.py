"""Claim a port, start a real HTTP server on it, request one page and exit.

    python examples/demo.py                    # uvicorn (the default)
    python examples/demo.py --server aiohttp

The output shows the URL, that no other socket can bind the port while the
claim holds it, and the server's answer. The exit status is 0 when all of
that worked, and 1 when the port was not exclusive or the answer was wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import urllib.request
from typing import Any

from aioportclaim import PortSelectionStrategy, claim_port

# Try 8000-8099 first, and never the default port of a database or broker.
STRATEGY = PortSelectionStrategy().prefer_range(8000, 8099).exclude_well_known()
#: Seconds that the whole demo may take.
TIMEOUT = 30


async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
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


async def request_from_uvicorn(sock: socket.socket, url: str) -> tuple[int, str]:
    import uvicorn

    config = uvicorn.Config(asgi_app, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    async with asyncio.TaskGroup() as group:
        group.create_task(server.serve(sockets=[sock]))
        answer = await asyncio.to_thread(fetch, url)
        server.should_exit = True
    return answer


async def request_from_aiohttp(sock: socket.socket, url: str) -> tuple[int, str]:
    from aiohttp import web

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="Hello from aiohttp\n")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        return await asyncio.to_thread(fetch, url)
    finally:
        await runner.cleanup()


def bind_rival(host: str, port: int) -> OSError | None:
    """Bind a second socket to the port as a rival server would, and return the bind error.

    None means that the bind worked, so the port was not exclusive.
    """
    with socket.socket() as rival:
        rival.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            rival.bind((host, port))
        except OSError as error:
            return error
    return None


async def main(server_name: str) -> int:
    async with asyncio.timeout(TIMEOUT):
        # With an app_id, the first port tried is the same on every run.
        async with claim_port(STRATEGY, app_id="aioportclaim-demo") as sock:
            host, port = sock.getsockname()[:2]
            url = f"http://{host}:{port}/"
            print(f"Serving on {url} with {server_name}")

            rival_error = bind_rival(host, port)
            if rival_error is None:
                print(f"FAILED: a second socket could bind {host}:{port}")
                return 1
            print(f"A second bind of {host}:{port} fails: {rival_error.strerror}")

            if server_name == "aiohttp":
                status, body = await request_from_aiohttp(sock, url)
            else:
                status, body = await request_from_uvicorn(sock, url)
            print(f"GET {url} -> {status} {body!r}")

    expected = f"Hello from {server_name}\n"
    if status != 200 or body != expected:
        print(f"FAILED: expected 200 {expected!r}")
        return 1
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--server",
        choices=["uvicorn", "aiohttp"],
        default="uvicorn",
        help="HTTP server to start on the claimed port (default: uvicorn)",
    )
    sys.exit(asyncio.run(main(parser.parse_args().server)))
