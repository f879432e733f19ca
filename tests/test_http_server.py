"""The pod's HTTP/1.1 server (fleetserve/server/http_server.py) on its own, with a small
handler instead of the pod: framing, pipelining, limits, deadlines, streams whose client
leaves, handler failures and the stop with its grace period. Real sockets on uvloop."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest
import uvloop

from fleetserve.server.http_server import EventStream, HttpServer, Request, Response, listen_socket

pytestmark = pytest.mark.slow  # real servers, some waiting out deadlines

LIMIT = 1000


class App:
    """Echoes the method, path and body; /slow waits for `release`; /stream streams until
    its client leaves; /fail raises."""

    def __init__(self):
        self.release = asyncio.Event()
        self.gone: list[str] = []
        self.closed = asyncio.Event()
        self.seen: list[str] = []

    async def handle(self, req: Request) -> Response | EventStream:
        self.seen.append(req.path)
        if req.path == "/fail":
            raise RuntimeError("a bug")
        if req.path == "/slow":
            done, _ = await asyncio.wait({asyncio.ensure_future(self.release.wait()), req.gone},
                                         return_when=asyncio.FIRST_COMPLETED)
            if req.gone in done:
                self.gone.append(req.path)
        if req.path == "/stream":
            async def events():
                n = 0
                while True:
                    yield b"data: %d\n\n" % n
                    n += 1
                    await asyncio.sleep(0.01)

            async def close():
                self.closed.set()

            return EventStream(events(), close)
        return Response(200, b"%s %s %s" % (req.method.encode(), req.path.encode(), req.body), "text/plain")


@contextlib.asynccontextmanager
async def serving(read_timeout: float = 5.0, idle_timeout: float = 5.0, grace: float = 5.0):
    app = App()
    server = HttpServer(app.handle, LIMIT, read_timeout, idle_timeout)
    sock = listen_socket("127.0.0.1", 0)
    stop = False
    task = asyncio.ensure_future(server.serve([sock], lambda: stop, grace))
    try:
        yield app, sock.getsockname()[1], server
    finally:
        stop = True
        await asyncio.wait_for(task, grace + 5)


async def exchange(port: int, data: bytes, until: bytes | None = None, wait: float = 3.0) -> bytes:
    """Send `data`; read until `until` appears, the server closes, or `wait` seconds pass."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    out = b""
    with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
        async with asyncio.timeout(wait):
            while until is None or until not in out:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                out += chunk
    writer.close()
    return out


def run(coro):
    return uvloop.run(coro)


def test_pipelined_requests_are_answered_in_order_on_one_connection():
    async def go():
        async with serving() as (app, port, _):
            requests = b"".join(b"POST /echo%d HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nb%d" % (i, i)
                                for i in range(5))
            out = await exchange(port, requests, until=b"POST /echo4 b4")
            bodies = [part.split(b"\r\n\r\n", 1)[1][:len(b"POST /echoN bN")] for part in out.split(b"HTTP/1.1 ")[1:]]
            assert bodies == [b"POST /echo%d b%d" % (i, i) for i in range(5)]
    run(go())


def test_a_percent_encoded_path_is_decoded():
    async def go():
        async with serving() as (_, port, _):
            out = await exchange(port, b"GET /v1/%63orrect%20x HTTP/1.1\r\nHost: x\r\n\r\n", until=b"correct x ")
            assert out.endswith(b"GET /v1/correct x ")
    run(go())


def test_head_has_no_body_and_http_1_0_closes():
    async def go():
        async with serving() as (_, port, _):
            out = await exchange(port, b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\nGET /g HTTP/1.1\r\nHost: x\r\n\r\n",
                                 until=b"GET /g ")
            first, second = out.split(b"HTTP/1.1 200")[1:]
            assert b"content-length: 8\r\n" in first.lower() and first.endswith(b"\r\n\r\n")
            assert second.endswith(b"GET /g ")
            out = await exchange(port, b"GET /old HTTP/1.0\r\n\r\n")
            assert b"connection: close" in out.lower() and out.endswith(b"GET /old ")  # and the server closed it
    run(go())


def test_a_body_over_the_limit_is_refused_before_it_is_sent():
    async def go():
        async with serving() as (app, port, _):
            out = await exchange(port, b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (LIMIT + 1))
            assert out.startswith(b"HTTP/1.1 413") and b"the limit is 1000" in out
            chunked = (b"POST /big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                       + b"%x\r\n%s\r\n" % (LIMIT + 1, b"a" * (LIMIT + 1)) + b"0\r\n\r\n")
            out = await exchange(port, chunked)
            assert out.startswith(b"HTTP/1.1 413") and b"exceeds the limit" in out
            assert "/big" not in app.seen
    run(go())


def test_expect_100_continue_gets_its_interim_answer():
    async def go():
        async with serving() as (_, port, _):
            out = await exchange(port, b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n",
                                 until=b"100 Continue\r\n\r\n")
            assert out == b"HTTP/1.1 100 Continue\r\n\r\n"
    run(go())


def test_a_failing_handler_fails_its_request_alone():
    async def go():
        async with serving() as (_, port, _):
            out = await exchange(port, b"GET /fail HTTP/1.1\r\nHost: x\r\n\r\nGET /ok HTTP/1.1\r\nHost: x\r\n\r\n",
                                 until=b"GET /ok ")
            assert out.startswith(b"HTTP/1.1 500") and b"internal error: RuntimeError" in out
            assert out.endswith(b"GET /ok ")
    run(go())


def test_a_slow_request_gets_408_and_an_idle_connection_closes():
    async def go():
        async with serving(read_timeout=0.3, idle_timeout=0.3) as (app, port, _):
            out = await exchange(port, b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
            assert out.startswith(b"HTTP/1.1 408") and b"request_timeout" in out
            loop = asyncio.get_running_loop()
            start = loop.time()
            out = await exchange(port, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")  # answered, then idle
            assert out.startswith(b"HTTP/1.1 200") and loop.time() - start < 2
    run(go())


def test_a_client_that_hangs_up_is_seen_by_the_handler_and_its_stream_is_closed():
    async def go():
        async with serving() as (app, port, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            await asyncio.sleep(0.2)
            writer.close()
            for _ in range(100):
                if app.gone:
                    break
                await asyncio.sleep(0.02)
            assert app.gone == ["/slow"]

            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
            got = await reader.readuntil(b"data: 2\n\n")
            assert b"transfer-encoding: chunked" in got.lower() and b"text/event-stream" in got
            writer.transport.abort()
            await asyncio.wait_for(app.closed.wait(), 2)
    run(go())


def test_stopping_lets_a_request_being_answered_finish_and_refuses_new_connections():
    async def go():
        app = App()
        server = HttpServer(app.handle, LIMIT, 5.0)
        sock = listen_socket("127.0.0.1", 0)
        port = sock.getsockname()[1]
        stop = False
        task = asyncio.ensure_future(server.serve([sock], lambda: stop, grace=5.0))
        slow = asyncio.ensure_future(exchange(port, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n", wait=5))
        await asyncio.sleep(0.3)
        stop = True
        await asyncio.sleep(0.3)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            refused = False
        except OSError:
            refused = True
        app.release.set()
        out = await slow
        await asyncio.wait_for(task, 5)
        assert refused and out.startswith(b"HTTP/1.1 200") and b"connection: close" in out.lower()
    run(go())


def test_an_unparseable_request_after_a_good_one_is_refused_after_its_answer():
    async def go():
        async with serving() as (app, port, _):
            out = await exchange(port, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nNOT HTTP\r\n\r\n", wait=1)
            assert out == b""  # the first is still being answered
            app.release.set()
            out = await exchange(port, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nNOT HTTP\r\n\r\n")
            first, second = out.split(b"HTTP/1.1 ")[1:]
            assert first.startswith(b"200") and second.startswith(b"400") and b"malformed HTTP request" in second
    run(go())


def test_a_request_asking_to_upgrade_is_answered_in_http_1_1_and_the_connection_ends():
    async def go():
        async with serving() as (_, port, _):
            out = await exchange(port, b"GET /u HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
            assert out.startswith(b"HTTP/1.1 200") and out.count(b"HTTP/1.1") == 1
            assert b"connection: close" in out.lower() and out.endswith(b"GET /u ")
            out = await exchange(port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            assert out.startswith(b"HTTP/1.1 400")
    run(go())


def test_a_stream_is_chunked_for_http_1_1_and_ends_with_the_connection_for_http_1_0():
    async def go():
        async with serving() as (app, port, _):
            out = await exchange(port, b"GET /stream HTTP/1.0\r\n\r\n", until=b"data: 3\n\n")
            head, _, body = out.partition(b"\r\n\r\n")
            assert b"chunked" not in head.lower() and body.startswith(b"data: 0\n\ndata: 1\n\n")
            await asyncio.wait_for(app.closed.wait(), 2)
    run(go())
