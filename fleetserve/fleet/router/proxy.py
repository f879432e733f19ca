"""The router's request path: client connections, picking an endpoint, retries.

Mechanism only: which endpoint is the balancer's decision (`balancer.py`), when
an endpoint is ejected is the outlier detector's (`outlier.py`). The HTTP stack
is asyncio protocols with httptools' parsers on uvloop, no framework: a
request is parsed once, re-framed with a Content-Length and written to a pooled
keep-alive connection, and the answer's bytes are relayed as they come. That
was measured against an aiohttp proxy and HAProxy (BENCHMARKS.md, "Router").

A request is retried once, on another endpoint, when its attempt failed before
any byte of the answer was relayed: the connection was refused or reset, or the
pod answered 503 (draining or not ready: it did not start the work). A read
timeout is not retried: the pod may still be working on it, and sending the
same work again to a loaded fleet makes the overload worse.
"""

from __future__ import annotations

import asyncio
import logging

import httptools

from fleetserve.http_common import answer, check_url, count_header, error_body, error_message, refusal
from fleetserve.fleet.balancer import Balancer, Choice, Endpoint
from fleetserve.fleet.discovery import Snapshot, host_port
from fleetserve.fleet.outlier import OutlierDetector
from fleetserve.fleet.router.config import KNOWN_PATHS, PROXIED, RouterConfig
from fleetserve.fleet.router.metrics import RouterMetrics
from fleetserve.fleet.router.upstream import UpstreamConn, UpstreamPool

log = logging.getLogger("fleetserve.router")

_HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te", b"trailer",
               b"upgrade", b"content-length", b"expect"}


class Exchange:
    """One client request and its attempts upstream."""

    __slots__ = ("client", "request", "endpoint", "counted", "upstream", "attempts", "resent", "sent_bytes",
                 "finished", "start", "last", "keep_alive")

    def __init__(self, client: ClientConn, request: bytes, keep_alive: bool, start: float):
        self.client, self.request, self.keep_alive, self.start = client, request, keep_alive, start
        self.endpoint: Endpoint | None = None  # of the current (or last) attempt
        self.counted = False  # the attempt is in its endpoint's in-flight count (Router._take/_release)
        self.upstream: UpstreamConn | None = None
        self.attempts = 0
        self.resent = False  # sent again after a stale keep-alive connection (not a retry)
        self.sent_bytes = False  # some of the answer reached the client: no retry possible
        self.finished = False
        self.last = start

    def forward(self, data: bytes) -> None:
        self.sent_bytes = True
        transport = self.client.transport
        if transport is not None:
            transport.write(data)


class ClientConn(asyncio.Protocol):
    """One client connection; requests on it are served one at a time, in order.

    A client has `request_read_timeout` seconds to send a whole request from its
    first byte (a new connection, to send its first byte): then 408 and close. An
    idle keep-alive connection closes after `idle_timeout`. URLs and headers are
    bounded (414, 431), so no client makes the router buffer without end. The
    deadlines are plain timestamps that `Router.sweep_timeouts` checks, not a timer
    per request on the hot path."""

    def __init__(self, router: Router):
        self.router = router
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.header_bytes = 0
        self.body = bytearray()
        self.too_big = False
        self.queue: list[tuple[bytes, bytes, list, bytes, bool, bool]] = []
        self.current: Exchange | None = None
        self.closing = False
        self.deadline: float | None = None  # when to give up waiting on the client (None: not waiting)
        self.reading = False  # the deadline is for a request being read (408), else for an idle connection

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.router.clients.add(self)
        self._wait_for_request(self.router.cfg.request_read_timeout, reading=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self.deadline = None
        self.router.clients.discard(self)
        self.transport = None
        ex, self.current = self.current, None
        if ex is not None and not ex.finished:
            self.router.client_gone(ex)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.reply(error_message(400, "protocol upgrades are not supported"), close=True)
        except httptools.HttpParserError as e:
            self.reply(error_message(*refusal(e)), close=True)

    def _wait_for_request(self, seconds: float, reading: bool) -> None:
        self.deadline = self.router.loop.time() + seconds if seconds else None
        self.reading = reading

    def timed_out(self) -> None:
        """The deadline passed: 408 to a request still being read, or only a close when an
        answer is being relayed on this connection (a second one would corrupt it); an idle
        connection just closes."""
        self.deadline = None
        if self.transport is None:
            return
        if self.reading and self.current is None and not self.queue:
            timeout = self.router.cfg.request_read_timeout
            self.reply(error_message(408, f"the request was not received within {timeout:g}s", "request_timeout"),
                       close=True)
        elif self.reading or self.current is None:
            self.closing = True
            self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url, self.headers, self.body, self.too_big, self.header_bytes = b"", [], bytearray(), False, 0
        self._wait_for_request(self.router.cfg.request_read_timeout, reading=True)

    def on_url(self, url: bytes) -> None:
        self.url += url
        check_url(self.url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes = count_header(self.header_bytes, name, value)
        self.headers.append((name, value))
        if name.lower() == b"expect" and value.lower() == b"100-continue":
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # curl waits for it before a large body

    def on_body(self, body: bytes) -> None:
        if self.too_big:
            return
        self.body += body
        if len(self.body) > self.router.cfg.max_body_bytes:
            self.too_big = True
            self.body = bytearray()

    def on_message_complete(self) -> None:
        self.deadline = None
        item = (self.parser.get_method(), self.url, self.headers, bytes(self.body),
                self.parser.should_keep_alive(), self.too_big)
        if self.current is None and not self.queue:
            self.router.handle(self, *item)
        else:  # pipelined: answered in order after the current one
            self.queue.append(item)
            self.transport.pause_reading()

    def reply(self, data: bytes, close: bool = False) -> None:
        """An answer the router makes itself."""
        if self.transport is None:
            return
        self.transport.write(data)
        if close:
            self.closing = True
            self.transport.close()
        else:
            self.next()

    def next(self) -> None:
        if self.queue and self.transport is not None and not self.closing:
            item = self.queue.pop(0)
            if not self.queue:
                self.transport.resume_reading()
            self.router.handle(self, *item)
        elif self.deadline is None and not self.closing:  # answered, nothing more begun: idle
            self._wait_for_request(self.router.cfg.idle_timeout, reading=False)


class Router:
    def __init__(self, cfg: RouterConfig, balancer: Balancer, outlier: OutlierDetector, metrics: RouterMetrics):
        self.cfg, self.balancer, self.outlier, self.metrics = cfg, balancer, outlier, metrics
        self.loop = asyncio.get_running_loop()
        self.pools: dict[str, UpstreamPool] = {}
        self.busy: set[UpstreamConn] = set()  # connections with a request on them (read-timeout sweep)
        self.clients: set[ClientConn] = set()
        self.inflight = 0
        self.draining = False

    # --- discovery ----------------------------------------------------------------
    def apply_snapshot(self, snap: Snapshot) -> None:
        now = self.loop.time()
        self.balancer.update(snap, now)
        keep = {s.url for s in snap}
        for url in keep - self.pools.keys():
            self.pools[url] = UpstreamPool(self, url, *host_port(url))
        for url in self.pools.keys() - keep:
            self.pools.pop(url).close()  # requests in flight finish on their own connections
        self.outlier.forget(keep)
        log.info("endpoints (%d): %s", len(keep), ", ".join(sorted(keep)) or "none")

    # --- the request path -----------------------------------------------------------
    def handle(self, client: ClientConn, method: bytes, url: bytes, headers: list, body: bytes,
               keep_alive: bool, too_big: bool) -> None:
        path = url.split(b"?", 1)[0]
        if too_big:
            self._own(client, 413, error_body(413, f"request body over {self.cfg.max_body_bytes} bytes"), close=True)
            return
        if (method, path) not in PROXIED:
            self._local(client, method, path, keep_alive)
            return
        if self.draining:
            self.metrics.rejected["draining"] += 1
            self._own(client, 503, error_body(503, "router is shutting down", "draining"),
                      extra=b"Retry-After: %d\r\n" % self.cfg.retry_after, close=True)
            return
        parts = [b"%s %s HTTP/1.1\r\n" % (method, url)]
        for name, value in headers:
            if name.lower() not in _HOP_BY_HOP:
                parts.append(b"%s: %s\r\n" % (name, value))
        parts.append(b"Content-Length: %d\r\n\r\n" % len(body))
        parts.append(body)
        ex = Exchange(client, b"".join(parts), keep_alive, self.loop.time())
        client.current = ex
        self.inflight += 1
        self._dispatch(ex, None)

    def _dispatch(self, ex: Exchange, exclude: Endpoint | None) -> None:
        now = self.loop.time()
        ep = self.balancer.pick(now, exclude)
        if ep is None:
            self._finish(ex)
            why = self.balancer.last_failure
            self.metrics.rejected[why] += 1
            if why == Choice.ALL_AT_CAP:
                status, msg = 429, "every endpoint is at its in-flight limit; retry later"
            else:
                status, msg = 503, "no ready endpoint to send the request to"
            self._answer(ex, status, error_body(status, msg, "overloaded" if status == 429 else "no_endpoint"),
                         extra=b"Retry-After: %d\r\n" % self.cfg.retry_after)
            return
        pool = self.pools.get(ep.url)
        if pool is None:  # removed by discovery between the pick and now (cannot happen in one step)
            pool = self.pools[ep.url] = UpstreamPool(self, ep.url, *host_port(ep.url))
        self._take(ex, ep)
        self.metrics.by_endpoint[ep.url] += 1
        pool.send(ex)

    def should_retry_status(self, ex: Exchange, status: int) -> bool:
        return status == 503 and self.cfg.retry and ex.attempts == 1 and len(self.balancer.endpoints) > 1

    def upstream_done(self, ex: Exchange, status: int, keep_alive: bool) -> None:
        """The whole answer was relayed."""
        ep = ex.endpoint
        self._finish(ex)
        if status >= 500:
            self._failure(ep, f"http_{status}")
        else:
            self.outlier.success(ep.url)
        self.metrics.observe(status, self.loop.time() - ex.start)
        client = ex.client
        if client.current is ex:
            client.current = None
        if not keep_alive or not ex.keep_alive:
            # the upstream's "Connection: close" was relayed, or the client asked for it
            client.closing = True
            if client.transport is not None:
                client.transport.close()
        else:
            client.next()

    def upstream_failed(self, ex: Exchange, kind: str) -> None:
        """An attempt failed before any byte of its answer reached the client."""
        if ex.finished:  # its client left; client_gone settled the counts
            return
        ep = ex.endpoint
        self._release(ex)
        self._failure(ep, kind)
        if self.cfg.retry and ex.attempts == 1 and kind != "timeout" and ex.client.transport is not None:
            self.metrics.retries += 1
            self._dispatch(ex, ep)
            return
        self._finish(ex)
        if kind == "timeout":
            status, msg = 504, f"no answer from {ep.url} within {self.cfg.read_timeout:g}s"
        else:
            status, msg = 502, f"upstream {ep.url} failed ({kind}) before answering"
        self.metrics.observe(status, self.loop.time() - ex.start)
        self._answer(ex, status, error_body(status, msg, "upstream_timeout" if status == 504 else "upstream_error"))

    def upstream_broke(self, ex: Exchange) -> None:
        """The upstream failed part-way through an answer: the client gets what was relayed
        and a closed connection (its parser reports the truncation)."""
        self._finish(ex)
        self._failure(ex.endpoint, "reset")
        self.metrics.observe(502, self.loop.time() - ex.start)
        client = ex.client
        client.current = None
        client.closing = True
        if client.transport is not None:
            client.transport.close()

    def client_gone(self, ex: Exchange) -> None:
        """The client disconnected before its answer: cancel the upstream attempt."""
        self.metrics.client_disconnects += 1
        conn = ex.upstream
        if conn is not None and conn.ex is ex:
            conn.abort()
        # (still connecting: the connect task sees `finished` and parks the connection)
        self._finish(ex)

    def _failure(self, ep: Endpoint, kind: str) -> None:
        self.metrics.upstream_failures[kind] += 1
        now = self.loop.time()
        until = self.outlier.failure(ep.url, now)
        if until is not None:
            log.warning("ejecting %s until %.1fs from now after consecutive failures (last: %s)",
                        ep.url, until - now, kind)
            self.balancer.eject(ep.url, until, now)

    # The two counts of a request, each taken in one place and released in one:
    # the router's (handle .. _finish) and its current attempt's endpoint's (_take .. _release).
    def _take(self, ex: Exchange, ep: Endpoint) -> None:
        ex.endpoint, ex.counted = ep, True
        ex.attempts += 1
        self.balancer.start(ep)

    def _release(self, ex: Exchange) -> None:
        if ex.counted:
            ex.counted = False
            self.balancer.finish(ex.endpoint)

    def _finish(self, ex: Exchange) -> None:
        self._release(ex)
        if not ex.finished:
            ex.finished = True
            self.inflight -= 1

    def _answer(self, ex: Exchange, status: int, body: bytes, extra: bytes = b"") -> None:
        client = ex.client
        if client.current is ex:
            client.current = None
        client.reply(answer(status, body, extra=extra, close=not ex.keep_alive), close=not ex.keep_alive)

    def _own(self, client: ClientConn, status: int, body: bytes, ctype: bytes = b"application/json",
             extra: bytes = b"", close: bool = False) -> None:
        self.metrics.observe(status, 0.0)
        client.reply(answer(status, body, ctype, extra, close), close)

    # --- the router's own routes ------------------------------------------------------
    def _local(self, client: ClientConn, method: bytes, path: bytes, keep_alive: bool) -> None:
        close = not keep_alive
        if method == b"GET" and path == b"/health":
            client.reply(answer(200, b'{"status":"ok"}', close=close), close)
        elif method == b"GET" and path == b"/ready":
            n = len(self.balancer.usable(self.loop.time()))
            if n and not self.draining:
                client.reply(answer(200, b'{"status":"ready","endpoints":%d}' % n, close=close), close)
            else:
                why = "the router is draining" if self.draining else "no ready endpoint"
                client.reply(answer(503, error_body(503, f"not ready: {why}", "not_ready"), close=close), close)
        elif method == b"GET" and path == b"/metrics":
            text = self.metrics.render(self.balancer, self.outlier.ejected_total, self.loop.time()).encode()
            client.reply(answer(200, text, b"text/plain; version=0.0.4", close=close), close)
        elif path in KNOWN_PATHS:
            self._own(client, 405, error_body(405, f"{method.decode()} is not allowed on {path.decode()}"),
                      close=close)
        else:
            self._own(client, 404, error_body(404, f"no route {path.decode(errors='replace')}"), close=close)

    # --- timeouts and shutdown ---------------------------------------------------------
    async def sweep_timeouts(self) -> None:
        """Fail attempts whose upstream has been silent for longer than the read timeout, and
        give up on clients past their deadline (a request sent too slowly, an idle connection)."""
        period = min(0.25, self.cfg.read_timeout / 4)
        while True:
            await asyncio.sleep(period)
            now = self.loop.time()
            limit = now - self.cfg.read_timeout
            for conn in [c for c in self.busy if c.ex is not None and c.ex.last < limit]:
                conn.time_out()
            for client in [c for c in self.clients if c.deadline is not None and c.deadline < now]:
                client.timed_out()

    async def drain(self) -> None:
        """Stop taking requests and wait for those in flight (up to the drain timeout)."""
        self.draining = True
        deadline = self.loop.time() + self.cfg.drain_timeout
        while self.inflight > 0 and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        for client in list(self.clients):
            if client.transport is not None:
                client.transport.close()
        for pool in self.pools.values():
            pool.close()
