"""Serve an aiohttp application on a claimed port.

python examples/aiohttp_server.py          # serve until Ctrl-C
python examples/aiohttp_server.py --once   # request one page, print it, exit
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import aiohttp
from aiohttp import web

from aioportclaim import PortSelectionStrategy, claim_port

# Try 8000-8099 first, and never the default port of a database or broker.
STRATEGY = PortSelectionStrategy().prefer_range(8000, 8099).exclude_well_known()


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="Hello from aiohttp\n")


async def main(once: bool) -> None:
    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    # With an app_id, the first port tried is the same on every run.
    async with claim_port(STRATEGY, app_id="aiohttp-example") as sock:
        try:
            await web.SockSite(runner, sock).start()
            host, port = sock.getsockname()[:2]
            url = f"http://{host}:{port}/"
            print(f"Serving on {url}", flush=True)

            if once:
                async with aiohttp.ClientSession() as session:
                    async with session.get(url) as response:
                        text = await response.text()
                print(f"GET {url} -> {response.status} {text!r}")
            else:
                await stop.wait()
        finally:
            # This stops the server and closes the socket. The claim then
            # releases its lock.
            await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--once", action="store_true", help="request one page, print it and exit"
    )
    asyncio.run(main(parser.parse_args().once))
