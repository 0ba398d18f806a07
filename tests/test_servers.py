"""Real servers on claimed sockets: each serves one request over loopback.

Every test starts the server on the socket a claim yields, sends a real
request to it, stops the server with the server's own shutdown call and
counts descriptors to check that none outlives the claim's block. Most
tests then claim the same port again, which fails if a lock leaked.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from typing import TYPE_CHECKING, Any, cast

import anyio
import hypercorn.asyncio
import hypercorn.trio
import pytest
import trio
import uvicorn
from aiohttp import web
from anyio.abc import SocketListener, SocketStream, UDPSocket
from anyio.streams.stapled import MultiListener
from hypercorn.config import Config as HypercornConfig

from aioportclaim import FileLockRegistry, claim_port, open_claim

from .conftest import count_open_fds, require_ipv6

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    # Loose ASGI types: servers declare their own TypedDicts for messages.
    AsgiScope = Mapping[str, Any]
    AsgiReceive = Callable[[], Awaitable[Mapping[str, Any]]]
    AsgiSend = Callable[[Any], Awaitable[None]]

#: Seconds that each test may take, from claim to shutdown.
DEADLINE = 10

# aiohttp, uvicorn and the asyncio servers run only on an asyncio event loop.
asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])
# trio's own listener API needs the trio event loop.
trio_only = pytest.mark.parametrize("anyio_backend", ["trio"])


async def fetch(host: str, port: int, path: str = "/") -> tuple[int, bytes]:
    """Send an HTTP/1.0 GET and return the status code and the body."""
    async with await anyio.connect_tcp(host, port) as stream:
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        request = f"GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n"
        await stream.send(request.encode())
        # HTTP/1.0 servers close the connection after the response.
        response = b"".join([chunk async for chunk in stream])
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body


async def send_echo(host: str, port: int, payload: bytes) -> bytes:
    """Send `payload` to a TCP echo server, close the sending side, return the reply."""
    async with await anyio.connect_tcp(host, port) as stream:
        await stream.send(payload)
        await stream.send_eof()
        return b"".join([chunk async for chunk in stream])


async def echo_stream(stream: SocketStream) -> None:
    """Echo what the client sends until it closes its sending side (anyio handler)."""
    async with stream:
        async for chunk in stream:
            await stream.send(chunk)


async def echo_asyncio_stream(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Echo what the client sends until it closes its sending side (asyncio handler)."""
    writer.write(await reader.read())
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def echo_trio_stream(stream: trio.SocketStream) -> None:
    """Echo what the client sends until it closes its sending side (trio handler)."""
    async with stream:
        async for chunk in stream:
            await stream.send_all(chunk)


class EchoProtocol(asyncio.Protocol):
    """Echo TCP data and close the connection at the client's EOF."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def eof_received(self) -> bool:
        self.transport.close()
        return False


class DatagramEchoProtocol(asyncio.DatagramProtocol):
    """Send every datagram back to its sender."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # CPython's selector loop passes a transport that has sendto() but
        # does not subclass asyncio.DatagramTransport, so it is cast, not checked.
        self.transport = cast("asyncio.DatagramTransport", transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.transport.sendto(data, addr)


async def hello_app(scope: AsgiScope, receive: AsgiReceive, send: AsgiSend) -> None:
    """Respond to every HTTP request with "hello <path>", and complete lifespan events."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    body = f"hello {scope['path']}".encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def aiohttp_hello(request: web.Request) -> web.Response:
    return web.Response(text=f"hello {request.path}")


def port_of(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


def bind_errno(host: str, port: int) -> int:
    """Bind a fresh TCP socket to the port and return 0, or the errno of the failure."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            return error.errno or -1
    return 0


async def assert_released(port: int, registry: FileLockRegistry) -> None:
    """Claim the exact port again, which fails while a lock or socket leaked."""
    async with claim_port(port, registry=registry, timeout=1) as again:
        assert port_of(again) == port


@asyncio_only
class TestAsyncioServers:
    async def test_start_server_echoes_over_claim(
        self, registry: FileLockRegistry
    ) -> None:
        before = count_open_fds()

        with anyio.fail_after(DEADLINE):
            async with claim_port(registry=registry) as sock:
                port = port_of(sock)
                server = await asyncio.start_server(echo_asyncio_stream, sock=sock)
                async with server:
                    reply = await send_echo("127.0.0.1", port, b"ping")
                await server.wait_closed()

        assert reply == b"ping"
        assert sock.fileno() == -1
        assert count_open_fds() == before
        await assert_released(port, registry)

    async def test_create_server_echoes_over_claim(
        self, registry: FileLockRegistry
    ) -> None:
        loop = asyncio.get_running_loop()
        before = count_open_fds()

        with anyio.fail_after(DEADLINE):
            async with claim_port(registry=registry) as sock:
                port = port_of(sock)
                server = await loop.create_server(EchoProtocol, sock=sock)
                try:
                    reply = await send_echo("127.0.0.1", port, b"ping")
                finally:
                    server.close()
                    await server.wait_closed()

        assert reply == b"ping"
        assert sock.fileno() == -1
        assert count_open_fds() == before
        await assert_released(port, registry)

    async def test_datagram_endpoint_echoes_over_claim(
        self, registry: FileLockRegistry
    ) -> None:
        loop = asyncio.get_running_loop()
        before = count_open_fds()

        with anyio.fail_after(DEADLINE):
            async with claim_port(registry=registry, kind="udp") as sock:
                port = port_of(sock)
                transport, _ = await loop.create_datagram_endpoint(
                    DatagramEchoProtocol, sock=sock
                )
                try:
                    async with await anyio.create_connected_udp_socket(
                        "127.0.0.1", port
                    ) as client:
                        await client.send(b"ping")
                        reply = await client.receive()
                finally:
                    transport.close()

        assert reply == b"ping"
        assert sock.fileno() == -1
        assert count_open_fds() == before

    async def test_aiohttp_sock_site_serves_request(
        self, registry: FileLockRegistry
    ) -> None:
        app = web.Application()
        app.router.add_get("/{name}", aiohttp_hello)
        before = count_open_fds()

        with anyio.fail_after(DEADLINE):
            async with claim_port(registry=registry) as sock:
                port = port_of(sock)
                runner = web.AppRunner(app)
                await runner.setup()
                try:
                    await web.SockSite(runner, sock).start()
                    status, body = await fetch("127.0.0.1", port, "/aiohttp")
                finally:
                    await runner.cleanup()

        assert status == 200
        assert body == b"hello /aiohttp"
        assert sock.fileno() == -1
        assert count_open_fds() == before
        await assert_released(port, registry)

    async def test_aiohttp_sites_serve_port_block(
        self, registry: FileLockRegistry
    ) -> None:
        app = web.Application()
        app.router.add_get("/{name}", aiohttp_hello)
        before = count_open_fds()

        with anyio.fail_after(DEADLINE):
            async with open_claim(registry=registry, count=2) as claim:
                runner = web.AppRunner(app)
                await runner.setup()
                try:
                    for sock in claim.sockets:
                        await web.SockSite(runner, sock).start()
                    answers = [
                        await fetch("127.0.0.1", port, f"/{port}")
                        for port in claim.ports
                    ]
                finally:
                    await runner.cleanup()

        assert claim.ports == (claim.port, claim.port + 1)
        assert answers == [(200, f"hello /{port}".encode()) for port in claim.ports]
        assert count_open_fds() == before

    async def test_uvicorn_serves_claimed_socket(
        self, registry: FileLockRegistry
    ) -> None:
        # log_config=None keeps uvicorn from reconfiguring this process's logging.
        config = uvicorn.Config(hello_app, lifespan="on", log_config=None)
        server = uvicorn.Server(config)
        before = count_open_fds()

        with anyio.fail_after(DEADLINE):
            async with claim_port(registry=registry) as sock:
                port = port_of(sock)
                async with anyio.create_task_group() as group:
                    group.start_soon(server.serve, [sock])
                    # The claimed socket already listens, so this request
                    # waits in the backlog until uvicorn accepts it.
                    status, body = await fetch("127.0.0.1", port, "/uvicorn")
                    server.should_exit = True
                # uvicorn closes the sockets it was given. The claim's exit
                # must then tolerate a closed socket and still release the lock.
                assert sock.fileno() == -1

        assert status == 200
        assert body == b"hello /uvicorn"
        assert count_open_fds() == before
        await assert_released(port, registry)

    async def test_uvicorn_serves_both_loopback_families(
        self, registry: FileLockRegistry
    ) -> None:
        require_ipv6()
        config = uvicorn.Config(hello_app, lifespan="off", log_config=None)
        server = uvicorn.Server(config)
        before = count_open_fds()

        with anyio.fail_after(DEADLINE):
            async with open_claim(registry=registry, host="localhost") as claim:
                async with anyio.create_task_group() as group:
                    group.start_soon(server.serve, list(claim.sockets))
                    answers = [
                        await fetch(host, claim.port, "/uvicorn")
                        for host in ("127.0.0.1", "::1")
                    ]
                    server.should_exit = True

        assert answers == [(200, b"hello /uvicorn"), (200, b"hello /uvicorn")]
        assert count_open_fds() == before


class TestHypercorn:
    async def test_hypercorn_serves_duplicated_descriptor(
        self, registry: FileLockRegistry, anyio_backend: str
    ) -> None:
        serve = (
            hypercorn.trio.serve if anyio_backend == "trio" else hypercorn.asyncio.serve
        )
        stop = anyio.Event()
        before = count_open_fds()

        with anyio.fail_after(DEADLINE):
            async with claim_port(registry=registry) as sock:
                port = port_of(sock)
                config = HypercornConfig()
                # hypercorn closes the sockets it creates from fd:// binds, so
                # it gets a duplicate and the claim keeps its own descriptor.
                config.bind = [f"fd://{os.dup(sock.fileno())}"]
                config.errorlog = logging.getLogger("hypercorn.error")
                async with anyio.create_task_group() as group:
                    group.start_soon(
                        lambda: serve(hello_app, config, shutdown_trigger=stop.wait)
                    )
                    status, body = await fetch("127.0.0.1", port, "/hypercorn")
                    stop.set()

                # hypercorn has stopped, and the claim still holds the port.
                assert sock.fileno() != -1
                assert bind_errno("127.0.0.1", port) == errno.EADDRINUSE

        assert status == 200
        assert body == b"hello /hypercorn"
        assert sock.fileno() == -1
        assert count_open_fds() == before
        await assert_released(port, registry)


class TestAnyioServers:
    async def test_anyio_listener_serves_claimed_socket(
        self, registry: FileLockRegistry
    ) -> None:
        before = count_open_fds()

        with anyio.fail_after(DEADLINE):
            async with claim_port(registry=registry) as sock:
                port = port_of(sock)
                async with (
                    await SocketListener.from_socket(sock) as listener,
                    anyio.create_task_group() as group,
                ):
                    group.start_soon(listener.serve, echo_stream)
                    reply = await send_echo("127.0.0.1", port, b"ping")
                    group.cancel_scope.cancel()

        assert reply == b"ping"
        assert sock.fileno() == -1
        assert count_open_fds() == before
        await assert_released(port, registry)

    async def test_anyio_listeners_serve_both_families(
        self, registry: FileLockRegistry
    ) -> None:
        require_ipv6()
        before = count_open_fds()

        with anyio.fail_after(DEADLINE):
            async with open_claim(registry=registry, host="localhost") as claim:
                listeners = [
                    await SocketListener.from_socket(sock) for sock in claim.sockets
                ]
                async with (
                    MultiListener(listeners) as listener,
                    anyio.create_task_group() as group,
                ):
                    group.start_soon(listener.serve, echo_stream)
                    replies = [
                        await send_echo(host, claim.port, host.encode())
                        for host in ("127.0.0.1", "::1")
                    ]
                    group.cancel_scope.cancel()

        assert replies == [b"127.0.0.1", b"::1"]
        assert count_open_fds() == before
        await assert_released(claim.port, registry)

    async def test_anyio_udp_socket_echoes_over_claim(
        self, registry: FileLockRegistry
    ) -> None:
        before = count_open_fds()

        with anyio.fail_after(DEADLINE):
            async with claim_port(registry=registry, kind="udp") as sock:
                port = port_of(sock)
                async with (
                    await UDPSocket.from_socket(sock) as server,
                    await anyio.create_connected_udp_socket(
                        "127.0.0.1", port
                    ) as client,
                ):
                    await client.send(b"ping")
                    data, sender = await server.receive()
                    await server.sendto(data, *sender[:2])
                    reply = await client.receive()

        assert reply == b"ping"
        assert sock.fileno() == -1
        assert count_open_fds() == before

    async def test_tcp_and_udp_serve_same_port(
        self, registry: FileLockRegistry
    ) -> None:
        before = count_open_fds()

        with anyio.fail_after(DEADLINE):
            async with open_claim(registry=registry, kind=("tcp", "udp")) as claim:
                tcp_sock, udp_sock = claim.sockets
                async with (
                    await SocketListener.from_socket(tcp_sock) as listener,
                    await UDPSocket.from_socket(udp_sock) as udp_server,
                    await anyio.create_connected_udp_socket(
                        "127.0.0.1", claim.port
                    ) as udp_client,
                    anyio.create_task_group() as group,
                ):
                    group.start_soon(listener.serve, echo_stream)
                    tcp_reply = await send_echo("127.0.0.1", claim.port, b"tcp")
                    await udp_client.send(b"udp")
                    data, sender = await udp_server.receive()
                    await udp_server.sendto(data, *sender[:2])
                    udp_reply = await udp_client.receive()
                    group.cancel_scope.cancel()

        assert tcp_reply == b"tcp"
        assert udp_reply == b"udp"
        assert count_open_fds() == before


@trio_only
class TestTrioServers:
    async def test_trio_listener_serves_claimed_socket(
        self, registry: FileLockRegistry
    ) -> None:
        before = count_open_fds()

        with anyio.fail_after(DEADLINE):
            async with claim_port(registry=registry) as sock:
                port = port_of(sock)
                listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(
                        trio.serve_listeners, echo_trio_stream, [listener]
                    )
                    reply = await send_echo("127.0.0.1", port, b"ping")
                    nursery.cancel_scope.cancel()
                await listener.aclose()

        assert reply == b"ping"
        assert sock.fileno() == -1
        assert count_open_fds() == before
        await assert_released(port, registry)

    async def test_trio_listeners_serve_both_families(
        self, registry: FileLockRegistry
    ) -> None:
        require_ipv6()
        before = count_open_fds()

        with anyio.fail_after(DEADLINE):
            async with open_claim(registry=registry, host="localhost") as claim:
                listeners = [
                    trio.SocketListener(trio.socket.from_stdlib_socket(sock))
                    for sock in claim.sockets
                ]
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(
                        trio.serve_listeners, echo_trio_stream, listeners
                    )
                    replies = [
                        await send_echo(host, claim.port, host.encode())
                        for host in ("127.0.0.1", "::1")
                    ]
                    nursery.cancel_scope.cancel()

        assert replies == [b"127.0.0.1", b"::1"]
        assert count_open_fds() == before

    async def test_trio_listener_rejects_unlistened_claim(
        self, registry: FileLockRegistry
    ) -> None:
        async with claim_port(registry=registry, listen=False) as sock:
            trio_sock = trio.socket.from_stdlib_socket(sock)
            with pytest.raises(ValueError, match="listening socket"):
                trio.SocketListener(trio_sock)
