"""A trivial OpenAI-shaped HTTP server with no model behind it, for measuring
the load tester itself and for its tests: it answers after a delay drawn from
a chosen distribution, fails a chosen share of requests, can turn slow part
way through a run, and can be told to answer some prompts differently (for
shadow tests).

It is deliberately not the real pod server: its job is to cost almost nothing,
so a load test against it measures the client. `fleetserve stub-server --help`.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import zlib
from collections import deque
from dataclasses import dataclass

import httptools
import msgspec
import uvloop

from fleetserve.loadtest.profile import parse_duration


@dataclass(frozen=True)
class Delay:
    """A latency distribution: const, exp (mean), lognormal (median, sigma) or uniform (lo..hi)."""
    kind: str = "const"
    a: float = 0.0
    b: float = 0.0

    def __str__(self) -> str:
        if self.kind == "lognormal":
            return f"lognormal:{self.a * 1e3:g}ms,{self.b:g}"
        if self.kind == "uniform":
            return f"uniform:{self.a * 1e3:g}ms..{self.b * 1e3:g}ms"
        return f"{self.kind}:{self.a * 1e3:g}ms"

    def draw(self, rng: random.Random) -> float:
        if self.kind == "exp":
            return rng.expovariate(1.0 / self.a) if self.a > 0 else 0.0
        if self.kind == "lognormal":
            return self.a * math.exp(rng.gauss(0.0, self.b))
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b)
        return self.a

    def quantile(self, q: float) -> float:
        """The distribution's q-quantile, for tests that compare measured percentiles."""
        if self.kind == "exp":
            return -self.a * math.log(1 - q)
        if self.kind == "lognormal":
            from statistics import NormalDist
            return self.a * math.exp(self.b * NormalDist().inv_cdf(q))
        if self.kind == "uniform":
            return self.a + (self.b - self.a) * q
        return self.a


def parse_delay(text: str) -> Delay:
    """'0', '20ms', 'const:20ms', 'exp:20ms', 'lognormal:50ms,0.5', 'uniform:10ms..30ms'."""
    text = text.strip()
    if text in ("", "0"):
        return Delay()
    kind, _, args = text.partition(":") if ":" in text else ("const", "", text)
    if kind == "const":
        return Delay("const", parse_duration(args, allow_zero=True))
    if kind == "exp":
        return Delay("exp", parse_duration(args, allow_zero=True))
    if kind == "lognormal":
        median, _, sigma = args.partition(",")
        return Delay("lognormal", parse_duration(median, allow_zero=True), float(sigma or 0.5))
    if kind == "uniform":
        lo, _, hi = args.partition("..")
        return Delay("uniform", parse_duration(lo, allow_zero=True), parse_duration(hi, allow_zero=True))
    raise ValueError(f"delay {text!r}: use const:D, exp:MEAN, lognormal:MEDIAN,SIGMA or uniform:LO..HI")


@dataclass(frozen=True)
class StubConfig:
    delay: Delay = Delay()
    error_rate: float = 0.0  # share of requests answered with error_status
    error_status: int = 500
    concurrency: int = 0  # requests worked on at once (a pod's slots); beyond it they queue; 0: no limit
    slow_after: float | None = None  # seconds after the first request ...
    slow_delay: Delay = Delay()  # ... from which this delay applies instead
    token_interval: float = 0.0  # between streamed tokens
    disagree: float = 0.0  # share of prompts answered differently than a default stub would
    seed: int = 0
    model: str = "stub"


def answer_for(prompt: bytes, tokens: int, disagree: float) -> list[str]:
    """The answer's tokens: a function of the prompt, so two stubs agree unless told otherwise."""
    h = zlib.crc32(prompt)
    words = [f"w{h % 997}"] + [f" t{(h >> (k % 24)) % 89}" for k in range(1, tokens)]
    if disagree and (h % 10_000) < disagree * 10_000:
        words[0] = "other"
    return words


_HEAD = "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {n}\r\n\r\n"
_STATUS = {200: "200 OK", 404: "404 Not Found", 400: "400 Bad Request", 500: "500 Internal Server Error",
           502: "502 Bad Gateway", 503: "503 Service Unavailable", 429: "429 Too Many Requests"}


def _response(status: int, body: bytes, ctype: str = "application/json") -> bytes:
    return _HEAD.format(status=_STATUS[status], ctype=ctype, n=len(body)).encode() + body


class StubProtocol(asyncio.Protocol):
    def __init__(self, server: StubServer):
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport = None
        self.url = b""
        self.body = bytearray()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(_response(400, b'{"error":{"message":"bad HTTP"}}'))
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        url, body = self.url, bytes(self.body)
        self.url, self.body = b"", bytearray()
        method = self.parser.get_method()
        self.server.handle(self, method, url.split(b"?")[0], body)


class StubServer:
    def __init__(self, cfg: StubConfig):
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.first: float | None = None
        self.requests = 0
        self.failed = 0
        self.active = 0
        self.queue: deque[tuple] = deque()
        self.loop = asyncio.get_running_loop()

    def handle(self, proto: StubProtocol, method: bytes, path: bytes, body: bytes) -> None:
        if method == b"GET":
            if path in (b"/health", b"/ready"):
                proto.transport.write(_response(200, b'{"status":"ok"}'))
            elif path == b"/stats":  # what the stub did, for tests to compare with what the client saw
                proto.transport.write(_response(200, msgspec.json.encode(
                    {"requests": self.requests, "failed": self.failed})))
            elif path == b"/v1/models":
                proto.transport.write(_response(200, msgspec.json.encode(
                    {"object": "list", "data": [{"id": self.cfg.model, "object": "model"}]})))
            else:
                proto.transport.write(_response(404, b'{"error":{"message":"not found"}}'))
            return
        if path not in (b"/v1/completions", b"/v1/chat/completions", b"/v1/correct"):
            proto.transport.write(_response(404, b'{"error":{"message":"not found"}}'))
            return
        self.requests += 1
        t = time.monotonic()
        if self.first is None:
            self.first = t
        cfg = self.cfg
        slow = cfg.slow_after is not None and t - self.first >= cfg.slow_after
        delay = (cfg.slow_delay if slow else cfg.delay).draw(self.rng)
        fail = cfg.error_rate > 0 and self.rng.random() < cfg.error_rate
        self.failed += fail
        if cfg.concurrency and self.active >= cfg.concurrency:
            self.queue.append((proto, path, body, fail, delay))
        else:
            self.begin(proto, path, body, fail, delay)

    def begin(self, proto: StubProtocol, path: bytes, body: bytes, fail: bool, delay: float) -> None:
        self.active += 1
        if delay > 0:
            self.loop.call_later(delay, self.answer, proto, path, body, fail)
        else:
            self.answer(proto, path, body, fail)

    def answer(self, proto: StubProtocol, path: bytes, body: bytes, fail: bool) -> None:
        self.active -= 1
        if self.queue:  # a slot freed: the longest-waiting request starts its delay now
            self.begin(*self.queue.popleft())
        if proto.transport.is_closing():
            return
        if fail:
            status = self.cfg.error_status
            proto.transport.write(_response(status, b'{"error":{"message":"injected failure","type":"server_error"}}'))
            return
        try:
            req = msgspec.json.decode(body) if body else {}
        except msgspec.DecodeError:
            proto.transport.write(_response(400, b'{"error":{"message":"body is not JSON"}}'))
            return
        if not isinstance(req, dict):
            req = {}
        prompt = msgspec.json.encode(req.get("prompt") or req.get("messages") or req.get("text") or "")
        n = int(req.get("max_tokens") or 16)
        words = answer_for(prompt, max(1, n), self.cfg.disagree)
        if path == b"/v1/correct":
            proto.transport.write(_response(200, msgspec.json.encode({"text": "".join(words), "edits": []})))
            return
        chat = path == b"/v1/chat/completions"
        usage = {"prompt_tokens": 1, "completion_tokens": len(words), "total_tokens": 1 + len(words)}
        if not req.get("stream"):
            choice = {"index": 0, "message": {"role": "assistant", "content": "".join(words)}} if chat \
                else {"index": 0, "text": "".join(words)}
            choice["finish_reason"] = "length"
            proto.transport.write(_response(200, msgspec.json.encode(
                {"id": "stub", "model": self.cfg.model, "choices": [choice], "usage": usage})))
            return
        proto.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        events = []
        for w in words:
            choice = {"index": 0, "delta": {"content": w}} if chat else {"index": 0, "text": w}
            events.append(b"data: " + msgspec.json.encode({"id": "stub", "choices": [choice]}) + b"\n\n")
        if (req.get("stream_options") or {}).get("include_usage"):
            events.append(b"data: " + msgspec.json.encode({"id": "stub", "choices": [], "usage": usage}) + b"\n\n")
        events.append(b"data: [DONE]\n\n")
        self._stream(proto, events)

    def _stream(self, proto: StubProtocol, events: list[bytes]) -> None:
        def chunk(data: bytes) -> bytes:
            return f"{len(data):x}\r\n".encode() + data + b"\r\n"

        if self.cfg.token_interval <= 0:
            proto.transport.write(b"".join(chunk(e) for e in events) + b"0\r\n\r\n")
            return

        def send(k: int) -> None:
            if proto.transport.is_closing():
                return
            proto.transport.write(chunk(events[k]))
            if k + 1 < len(events):
                self.loop.call_later(self.cfg.token_interval, send, k + 1)
            else:
                proto.transport.write(b"0\r\n\r\n")
        send(0)


async def serve_stub(cfg: StubConfig, host: str = "127.0.0.1", port: int = 0,
                     ready: asyncio.Future | None = None) -> None:
    """Serve until cancelled; `ready` gets the bound port."""
    server = StubServer(cfg)
    srv = await asyncio.get_running_loop().create_server(lambda: StubProtocol(server), host, port,
                                                         reuse_address=True, backlog=4096)
    bound = srv.sockets[0].getsockname()[1]
    if ready is not None:
        ready.set_result(bound)
    async with srv:
        await srv.serve_forever()


def run_stub(cfg: StubConfig, host: str, port: int, announce: bool = True) -> None:
    async def main() -> None:
        ready = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(serve_stub(cfg, host, port, ready))
        bound = await ready
        if announce:
            print(f"stub server on http://{host}:{bound} (delay {cfg.delay}, error rate {cfg.error_rate:g})",
                  flush=True)
        await task

    try:
        uvloop.run(main())
    except KeyboardInterrupt:
        pass
