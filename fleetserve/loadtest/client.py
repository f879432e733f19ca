"""A small, fast HTTP/1.1 client for the load tester: keep-alive connections
as asyncio protocols with the httptools response parser.

General-purpose clients (aiohttp, httpx) spend more CPU per request than the
server under test does on a small model; this one needs no coroutine per
request (a request is a pre-encoded byte string written to an idle
connection, and the answer arrives through parser callbacks), which is what
lets one core offer thousands of requests per second. Times come from
`time.perf_counter`, since uvloop's `loop.time()` has millisecond resolution.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from urllib.parse import urlsplit

import httptools

from fleetserve.loadtest.workload import answer_text, event_delta

now = time.perf_counter


def parse_url(url: str) -> tuple[str, int, str]:
    """(host, port, path prefix) of an http:// base URL."""
    parts = urlsplit(url if "://" in url else "http://" + url)
    if parts.scheme != "http":
        raise ValueError(f"{url}: only http:// URLs are supported")
    if not parts.hostname:
        raise ValueError(f"{url}: no host in the URL")
    return parts.hostname, parts.port or 80, parts.path.rstrip("/")


def encode_requests(host: str, port: int, path: str, bodies: list[bytes]) -> list[bytes]:
    head = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
    return [(head + f"Content-Length: {len(b)}\r\n\r\n").encode() + b for b in bodies]


class Call:
    """One request: its schedule, its timings and what came back."""

    __slots__ = ("index", "prompt", "due", "start", "first", "last", "end", "status", "error", "tokens",
                 "chunks", "itl", "parts", "buf", "done", "retried", "got_bytes", "conn")

    def __init__(self, index: int, prompt: int, due: float, start: float):
        # `start` is when the request was handed to the pool; `Connection.send` moves it
        # to when the request was written.
        self.index, self.prompt, self.due, self.start = index, prompt, due, start
        self.first = self.last = self.end = 0.0
        self.status = 0
        self.error = ""  # "" on success, else a kind: http_503, timeout, connection, protocol, stream_error
        self.tokens = 0
        self.chunks = 0
        self.itl: list[float] = []
        self.parts: list[str] = []
        self.buf = bytearray()
        self.done = self.retried = self.got_bytes = False
        self.conn: Connection | None = None

    @property
    def text(self) -> str:
        return "".join(self.parts)


class Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self, pool: Pool):
        self.pool = pool
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.call: Call | None = None
        self.used = 0
        self.closed = False

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        call = self.call
        if call is None:  # bytes nobody asked for: the connection is not in a state we can reuse
            self.transport.close()
            return
        call.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._finish("protocol")
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        call, self.call = self.call, None
        self.pool.lost(self)
        if call is not None and not call.done:
            call.conn = None
            if self.used > 1 and not call.got_bytes and not call.retried:
                # The server closed an idle keep-alive connection as we reused it: the
                # request never reached it, so it goes again on another connection.
                call.retried = True
                self.pool.submit(call)
            else:
                self.pool.finish(call, "connection")

    # httptools callbacks
    def on_headers_complete(self) -> None:
        self.call.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        call = self.call
        if self.pool.stream and call.status == 200:
            self._events(call, body)
        else:
            call.buf += body

    def on_message_complete(self) -> None:
        call = self.call
        error = ""
        if call.status >= 400 or call.status < 200:
            error = f"http_{call.status}"
        elif not self.pool.stream:
            text, tokens = answer_text(self.pool.endpoint, bytes(call.buf))
            if text is None:
                error = "protocol"
            else:
                call.parts.append(text)
                call.tokens = tokens or 0
        elif call.error:
            error = call.error
        keep = self.parser.should_keep_alive()
        self._finish(error)
        if keep:
            self.pool.release(self)
        else:
            self.transport.close()

    def _events(self, call: Call, body: bytes) -> None:
        call.buf += body
        if b"\r" in call.buf:
            call.buf = bytearray(call.buf.replace(b"\r\n", b"\n"))
        while (cut := call.buf.find(b"\n\n")) >= 0:
            event = bytes(call.buf[:cut])
            del call.buf[:cut + 2]
            for line in event.split(b"\n"):
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    continue
                if data.startswith(b'{"error"'):
                    call.error = "stream_error"
                    continue
                text, tokens = event_delta(self.pool.endpoint, data)
                if tokens is not None:
                    call.tokens = tokens
                if text:
                    t = now()
                    if call.chunks:
                        call.itl.append(t - call.last)
                    else:
                        call.first = t
                    call.last = t
                    call.chunks += 1
                    call.parts.append(text)

    def send(self, call: Call) -> None:
        self.call, call.conn = call, self
        self.used += 1
        if not call.retried:
            # sent now: time waiting for a free or new connection is client lag, not server latency
            call.start = now()
        self.transport.write(self.pool.requests[call.prompt])

    def _finish(self, error: str) -> None:
        call, self.call = self.call, None
        if call is not None and not call.done:
            call.conn = None
            self.pool.finish(call, error)

    def abort(self) -> None:
        """Drop the connection under a timed-out call (HTTP/1.1 cannot cancel one request)."""
        self.call = None
        if self.transport is not None:
            self.transport.abort()


class Pool:
    """Keep-alive connections to one server, opened as the offered load needs them
    (an open-loop test must not cap concurrency below what the server is sent)."""

    def __init__(self, url: str, path: str, bodies: list[bytes], endpoint: str, stream: bool,
                 on_done: Callable[[Call], None], max_connections: int = 10_000):
        self.host, self.port, prefix = parse_url(url)
        self.requests = encode_requests(self.host, self.port, prefix + path, bodies)
        self.endpoint, self.stream, self.on_done = endpoint, stream, on_done
        self.max_connections = max_connections
        self.idle: list[Connection] = []
        self.waiting: deque[Call] = deque()
        self.open = 0
        self.peak_open = 0
        self.connect_errors = 0

    def submit(self, call: Call) -> None:
        while self.idle:
            conn = self.idle.pop()  # most recently used first: the least likely to have timed out
            if not conn.closed:
                conn.send(call)
                return
        if self.open < self.max_connections:
            self.open += 1
            self.peak_open = max(self.peak_open, self.open)
            asyncio.get_running_loop().create_task(self._connect(call))
        else:
            self.waiting.append(call)

    async def _connect(self, call: Call) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(lambda: Connection(self), self.host, self.port)
        except OSError:
            self.open -= 1
            self.connect_errors += 1
            self.finish(call, "connection")
            self._drain_waiting()
            return
        if call.done:  # timed out while connecting
            self.release(conn)
        else:
            conn.send(call)

    def release(self, conn: Connection) -> None:
        while self.waiting:
            call = self.waiting.popleft()
            if not call.done:
                conn.send(call)
                return
        self.idle.append(conn)

    def lost(self, conn: Connection) -> None:
        self.open -= 1
        if conn in self.idle:
            self.idle.remove(conn)
        self._drain_waiting()

    def _drain_waiting(self) -> None:
        while self.waiting and self.open < self.max_connections:
            call = self.waiting.popleft()
            if not call.done:
                self.submit(call)

    def finish(self, call: Call, error: str) -> None:
        call.done = True
        call.end = now()
        call.error = error
        self.on_done(call)

    def time_out(self, call: Call) -> None:
        if call.done:
            return
        conn = call.conn
        self.finish(call, "timeout")
        if conn is not None:
            conn.abort()

    def close(self) -> None:
        for conn in self.idle:
            if conn.transport is not None:
                conn.transport.close()
        self.idle.clear()
