"""The pod's HTTP/1.1 server: asyncio protocols with httptools' request parser on
uvloop, no framework, as the router's. It replaced uvicorn + Starlette, with which a
frontend spent 1.28x the CPU per correction request (BENCHMARKS.md, "The pod's HTTP server").

Mechanism only; what a request means is the handler's (`app.py`). This layer:

- answers what it must refuse itself with an OpenAI-style error object and a closed
  connection: a malformed request (400, with the parser's reason), a protocol upgrade
  (400), a URL over 8 KiB (414), headers over 64 KiB (431), a body over the limit
  (413, as soon as its length is known, without reading the rest);
- gives a client `read_timeout` seconds to send a whole request from its first byte
  (a new connection as long for its first byte), then 408 and close; an idle
  keep-alive connection closes after `idle_timeout`. Deadlines are timestamps swept
  ten times a second, not a timer per request;
- runs one handler task per request and answers pipelined requests in order;
- resolves `Request.gone` when the client hangs up, and ends a stream (its
  generator is closed, so the engine drops the request) the moment its client leaves;
- stops by closing its listening sockets and idle connections, then letting the
  requests being answered finish, up to a grace period.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import urllib.parse
from collections.abc import AsyncGenerator, Awaitable, Callable

import httptools
import msgspec

from fleetserve.http_common import Refused, answer_head, check_url, count_header, error_body, error_message, refusal

log = logging.getLogger(__name__)

IDLE_TIMEOUT = 5.0  # seconds an idle keep-alive connection is kept (uvicorn's default, which the router expects)
SWEEP_SECONDS = 0.1


class Request:
    """A whole request, body read. `headers`: lower-case names (the last of repeated ones)."""

    __slots__ = ("method", "path", "query", "headers", "body", "keep_alive", "chunks", "gone")

    def __init__(self, method: str, path: str, query: str, headers: dict[str, str], body: bytes,
                 keep_alive: bool, chunks: bool, gone: asyncio.Future):
        self.method, self.path, self.query, self.headers, self.body = method, path, query, headers, body
        self.keep_alive = keep_alive
        self.chunks = chunks  # the client reads chunked answers (HTTP/1.1)
        self.gone = gone  # done when the client has closed the connection


class Response:
    __slots__ = ("status", "body", "content_type", "headers")

    def __init__(self, status: int = 200, body: bytes = b"", content_type: str = "application/json",
                 headers: dict[str, str] | None = None):
        self.status, self.body, self.content_type = status, body, content_type
        self.headers = {} if headers is None else headers


class EventStream:
    """A 200 of server-sent events, each written as it comes (chunked encoding).
    `close` runs once when the stream ends, however it ends, even if no event was sent."""

    __slots__ = ("events", "close", "headers")
    status = 200

    def __init__(self, events: AsyncGenerator[bytes, None], close: Callable[[], Awaitable[None]]):
        self.events, self.close = events, close
        self.headers: dict[str, str] = {}


def json_response(content: object, status: int = 200) -> Response:
    return Response(status, msgspec.json.encode(content))


Handler = Callable[[Request], Awaitable[Response | EventStream]]


def head(status: int, content_type: str, headers: dict[str, str], length: int | None, close: bool) -> bytes:
    """`length` None: a stream, chunked unless the connection ends with it."""
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items()).encode("latin-1")
    return answer_head(status, content_type.encode("latin-1"), length, extra, close, chunked=not close)


def listen_socket(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket; `reuse_port`: other processes can bind it too and the
    kernel spreads the connections (a pod's frontends)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class HttpServer:
    def __init__(self, handler: Handler, max_body_bytes: int, read_timeout: float,
                 idle_timeout: float = IDLE_TIMEOUT):
        self.handler, self.max_body_bytes = handler, max_body_bytes
        self.read_timeout, self.idle_timeout = read_timeout, idle_timeout
        self.connections: set[Connection] = set()
        self.stopping = False
        self.loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket], should_stop: Callable[[], bool], grace: float) -> None:
        """Serve on `sockets` until `should_stop()` (asked ten times a second) says so,
        then stop, giving the requests being answered `grace` seconds to finish."""
        loop = self.loop = asyncio.get_running_loop()
        servers = [await loop.create_server(lambda: Connection(self), sock=sock, backlog=2048) for sock in sockets]
        while not should_stop():
            await asyncio.sleep(SWEEP_SECONDS)
            self._sweep(loop.time())
        self.stopping = True
        for server in servers:
            server.close()
        for conn in list(self.connections):
            if conn.current is None:
                conn.close()
        deadline = loop.time() + grace
        while any(c.current is not None for c in self.connections) and loop.time() < deadline:
            await asyncio.sleep(SWEEP_SECONDS)
            self._sweep(loop.time())
        for conn in list(self.connections):
            conn.abort()

    def _sweep(self, now: float) -> None:
        for conn in [c for c in self.connections if c.deadline is not None and c.deadline < now]:
            conn.timed_out()


class Connection(asyncio.Protocol):
    """One client connection; its requests are answered one at a time, in order."""

    def __init__(self, server: HttpServer):
        self.server = server
        self.loop = server.loop
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: dict[str, str] = {}
        self.header_bytes = 0
        self.body: list[bytes] = []
        self.body_bytes = 0
        self.parsing = False  # between a request's first byte and its end
        self.queue: collections.deque[Request] = collections.deque()  # pipelined, waiting their turn
        self.current: Request | None = None  # being handled or answered
        self.task: asyncio.Task | None = None
        self.streaming = False
        self.refused: bytes | None = None  # the connection ends after the requests before it, with this
        self.write_ready: asyncio.Future | None = None  # set while the transport's buffer is full
        self.deadline: float | None = None
        self.reading = False  # the deadline is for a request being read (408), else for an idle connection

    # --- the transport's callbacks -----------------------------------------------------------
    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.server.connections.add(self)
        self._expect(self.server.read_timeout, reading=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.transport = None
        self.deadline = None
        for req in (self.current, *self.queue):
            if req is not None and not req.gone.done():
                req.gone.set_result(None)
        self.queue.clear()
        if self.streaming and self.task is not None:
            self.task.cancel()  # the stream's generator closes: the engine drops the request now
        self._writable()

    def pause_writing(self) -> None:
        self.write_ready = self.loop.create_future()

    def resume_writing(self) -> None:
        self._writable()

    def _writable(self) -> None:
        if self.write_ready is not None:
            if not self.write_ready.done():
                self.write_ready.set_result(None)
            self.write_ready = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self.current is not None:  # a whole request asked to switch: answered in HTTP/1.1, then closed
                self._refuse(b"")
            else:
                self._refuse(error_message(400, "protocol upgrades are not supported"))
        except httptools.HttpParserError as e:
            self._refuse(error_message(*refusal(e)))

    # --- httptools' callbacks ------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.url, self.headers, self.header_bytes, self.body, self.body_bytes = b"", {}, 0, [], 0
        self.parsing = True
        self._expect(self.server.read_timeout, reading=True)

    def on_url(self, url: bytes) -> None:
        self.url += url
        check_url(self.url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes = count_header(self.header_bytes, name, value)
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        declared = self.headers.get("content-length", "")
        limit = self.server.max_body_bytes
        if declared.isdigit() and int(declared) > limit:
            raise Refused(413, f"request body is {declared} bytes; the limit is {limit}")
        if self.headers.get("expect", "").lower() == "100-continue" and self.current is None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # curl waits for it before a large body

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        if self.body_bytes > self.server.max_body_bytes:
            raise Refused(413, f"request body exceeds the limit of {self.server.max_body_bytes} bytes")
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.parsing = False
        self.deadline = None
        try:
            url = httptools.parse_url(self.url)
        except httptools.HttpParserInvalidURLError:
            raise Refused(400, f"malformed HTTP request: invalid URL {self.url[:200]!r}") from None
        path = url.path.decode("latin-1")
        if "%" in path:
            path = urllib.parse.unquote(path)  # as uvicorn did: /v1/%63orrect is /v1/correct
        req = Request(self.parser.get_method().decode("latin-1"), path,
                      (url.query or b"").decode("latin-1"), self.headers, b"".join(self.body),
                      self.parser.should_keep_alive(), self.parser.get_http_version() != "1.0",
                      self.loop.create_future())
        if self.current is None:
            self._start(req)
        else:
            self.queue.append(req)
            self.transport.pause_reading()  # beyond what this read held, the rest stay in the socket

    # --- answering ---------------------------------------------------------------------------
    def _start(self, req: Request) -> None:
        self.current = req
        self.task = self.loop.create_task(self._serve(req))

    async def _serve(self, req: Request) -> None:
        try:
            answer = await self.server.handler(req)
        except Exception as e:  # a bug met by one request fails that request alone
            log.exception("%s %s failed", req.method, req.path)
            answer = Response(500, error_body(500, f"internal error: {type(e).__name__}", "internal_error"))
        close = not req.keep_alive or self.server.stopping or (self.refused == b"" and not self.queue)
        if isinstance(answer, EventStream):
            close = close or not req.chunks  # without chunks, the stream ends with the connection
            await self._stream(answer, close)
        elif self.transport is not None:
            body = b"" if req.method == "HEAD" else answer.body
            self.transport.write(head(answer.status, answer.content_type, answer.headers, len(answer.body), close)
                                 + body)
        self._answered(close)

    async def _stream(self, stream: EventStream, close: bool) -> None:
        self.streaming = True
        events = stream.events
        try:
            if self.transport is None:
                return
            stream.headers["cache-control"] = "no-cache"
            self.transport.write(head(200, "text/event-stream", stream.headers, None, close))
            async for event in events:
                if self.transport is None:
                    return
                self.transport.write(event if close else b"%x\r\n%s\r\n" % (len(event), event))
                if self.write_ready is not None:
                    await self.write_ready  # a slow reader holds its stream back, not our memory
            if self.transport is not None and not close:
                self.transport.write(b"0\r\n\r\n")
        finally:
            self.streaming = False
            await events.aclose()
            await stream.close()

    def _answered(self, close: bool) -> None:
        self.current, self.task = None, None
        if self.transport is None:
            return
        if close:
            self.close()
        elif self.queue:
            req = self.queue.popleft()
            if not self.queue:
                self.transport.resume_reading()
            self._start(req)
        elif self.refused is not None:
            self.transport.write(self.refused)  # (empty when nothing was wrong but the connection must end)
            self.close()
        elif not self.parsing:
            self._expect(self.server.idle_timeout, reading=False)

    def _refuse(self, answer: bytes) -> None:
        """Answer a request this layer refuses and close; after the ones before it, if any.
        (Where the parser found the request's upgrade, the request was whole and is answered.)"""
        self.parsing = False
        self.deadline = None
        if self.transport is None:
            return
        if self.current is None:
            self.transport.write(answer)
            self.close()
        else:
            self.refused = answer
            self.transport.pause_reading()

    # --- deadlines and closing -----------------------------------------------------------------
    def _expect(self, seconds: float, reading: bool) -> None:
        self.deadline = self.loop.time() + seconds if seconds else None
        self.reading = reading

    def timed_out(self) -> None:
        """Its deadline passed: 408 to a request being read while nothing is being answered,
        a plain close otherwise (a second answer would corrupt the one being written)."""
        self.deadline = None
        if self.transport is None:
            return
        if self.reading and self.current is None:
            timeout = self.server.read_timeout
            self.transport.write(error_message(408, f"the request was not received within {timeout:g}s",
                                               "request_timeout"))
        self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """The server is stopping and its grace period is over."""
        if self.task is not None:
            self.task.cancel()
        if self.transport is not None:
            self.transport.abort()
