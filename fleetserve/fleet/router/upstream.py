"""Keep-alive connections from the router to one endpoint.

Each connection is an asyncio protocol carrying one request at a time. The
answer's bytes are passed to the client as they arrive (streaming works
unchanged, framing included); httptools parses the same bytes only to learn the
status and where the answer ends. Bytes are held back until the status line and
headers are complete, so an answer the router will retry elsewhere (503 from a
draining pod) never reaches the client.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httptools

if TYPE_CHECKING:
    from fleetserve.fleet.router.proxy import Exchange, Router


class UpstreamConn(asyncio.Protocol):
    __slots__ = ("pool", "parser", "transport", "ex", "used", "closed", "status", "head_done", "complete",
                 "held", "keep")

    def __init__(self, pool: UpstreamPool):
        self.pool = pool
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.ex: Exchange | None = None
        self.used = 0
        self.closed = False
        self.status = 0
        self.head_done = False
        self.complete = False
        self.held = b""
        self.keep = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def send(self, ex: Exchange) -> None:
        self.ex, ex.upstream = ex, self
        self.used += 1
        self.status, self.head_done, self.complete, self.held = 0, False, False, b""
        ex.last = self.pool.router.loop.time()
        self.pool.router.busy.add(self)  # taken here, released in _detach only
        self.transport.write(ex.request)

    def _detach(self) -> Exchange | None:
        """This connection is done with its request (answered, failed or dropped)."""
        ex, self.ex = self.ex, None
        self.pool.router.busy.discard(self)
        return ex

    # httptools callbacks: only note what happened; data_received acts on it
    def on_headers_complete(self) -> None:
        self.head_done = True
        self.status = self.parser.get_status_code()

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep = self.parser.should_keep_alive()  # only meaningful inside this callback

    def data_received(self, data: bytes) -> None:
        ex = self.ex
        if ex is None:  # bytes nobody asked for: this connection cannot be trusted again
            self.transport.close()
            return
        router = self.pool.router
        ex.last = router.loop.time()
        if not self.head_done:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self._fail("protocol")
                return
            if not self.head_done:
                self.held += data
                return
            data = self.held + data if self.held else data
            self.held = b""
            if router.should_retry_status(ex, self.status):
                self._detach()
                self.transport.close()
                router.upstream_failed(ex, f"http_{self.status}")
                return
            ex.forward(data)
        else:
            ex.forward(data)
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self._fail("protocol")
                return
        if self.complete:
            self._detach()
            keep = self.keep
            router.upstream_done(ex, self.status, keep)
            if keep:
                self.pool.release(self)
            else:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.lost(self)
        ex = self._detach()
        if ex is None:
            return
        router = self.pool.router
        if ex.sent_bytes:
            router.upstream_broke(ex)
        elif self.used > 1 and not self.head_done and not ex.resent:
            # an idle keep-alive connection the endpoint closed just as we reused it: the
            # request never got there, so it goes again, to the same endpoint, on a new connection
            ex.resent = True
            self.pool.send(ex)
        else:
            router.upstream_failed(ex, "reset")

    def _fail(self, kind: str) -> None:
        ex = self._detach()
        self.transport.abort()
        if ex is not None:
            if ex.sent_bytes:
                self.pool.router.upstream_broke(ex)
            else:
                self.pool.router.upstream_failed(ex, kind)

    def time_out(self) -> None:
        self._fail("timeout")

    def abort(self) -> None:
        """Drop the request (its client left): closing the connection is how HTTP/1.1 cancels."""
        self._detach()
        if self.transport is not None:
            self.transport.abort()


class UpstreamPool:
    """Idle keep-alive connections to one endpoint, opened on demand."""

    def __init__(self, router: Router, url: str, host: str, port: int):
        self.router, self.url, self.host, self.port = router, url, host, port
        self.idle: list[UpstreamConn] = []

    def send(self, ex: Exchange) -> None:
        idle = self.idle
        while idle:
            conn = idle.pop()  # the most recently used: the least likely to have been closed
            if not conn.closed:
                conn.send(ex)
                return
        self.router.loop.create_task(self._connect(ex))

    async def _connect(self, ex: Exchange) -> None:
        router = self.router
        try:
            _, conn = await asyncio.wait_for(
                router.loop.create_connection(lambda: UpstreamConn(self), self.host, self.port),
                router.cfg.connect_timeout)
        except (OSError, asyncio.TimeoutError):
            router.upstream_failed(ex, "connect")
            return
        if ex.finished:  # the client left while we connected
            self.release(conn)
        else:
            conn.send(ex)

    def release(self, conn: UpstreamConn) -> None:
        self.idle.append(conn)

    def lost(self, conn: UpstreamConn) -> None:
        if conn in self.idle:
            self.idle.remove(conn)

    def close(self) -> None:
        for conn in self.idle:
            if conn.transport is not None:
                conn.transport.close()
        self.idle.clear()
