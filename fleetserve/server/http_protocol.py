"""uvicorn's httptools protocol with the pod's rules for what the HTTP layer
answers itself, before any request reaches the application:

- a malformed request (bad Content-Length, bad chunking, garbage) gets a 400
  with an OpenAI-style error object saying what the parser objected to;
- a URL over 8 KiB gets 414 and headers over 64 KiB get 431 (fleetserve.http_common),
  so a client cannot make the server buffer without end;
- a client has `read_timeout` seconds to send a whole request (headers and body)
  from its first byte, and a new connection as long to send its first byte;
  then it gets 408 and the connection closes, so slow or silent clients cannot
  hold connections (and the request's task) for ever.

Idle keep-alive connections between requests are uvicorn's own timeout.
"""

from __future__ import annotations

import asyncio

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from fleetserve.http_common import check_url, count_header, error_message, refusal


class PodHttpProtocol(HttpToolsProtocol):
    read_timeout: float = 30.0  # set per server by `with_read_timeout`

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._read_timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._has_cycle = False  # the message being read has its RequestResponseCycle (headers complete)

    @classmethod
    def with_read_timeout(cls, seconds: float) -> type[PodHttpProtocol]:
        return type(cls.__name__, (cls,), {"read_timeout": seconds})

    # --- the read deadline ---------------------------------------------------------------------
    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._has_cycle = False
        self._arm()

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._has_cycle = True

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _arm(self) -> None:
        self._disarm()
        if self.read_timeout:
            self._read_timer = self.loop.call_later(self.read_timeout, self._read_timed_out)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        self._reject(408, f"the request was not received within {self.read_timeout:g}s", "request_timeout")

    # --- size limits and malformed requests ---------------------------------------------------
    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        check_url(self.url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes = count_header(self._header_bytes, name, value)
        super().on_header(name, value)

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError as e:
            self._reject(*refusal(e))

    def send_400_response(self, msg: str) -> None:
        self._reject(400, f"malformed HTTP request: {msg}")

    def _reject(self, status: int, message: str, code: str | None = None) -> None:
        """Answer with an error object and close, unless an answer to this request has
        begun (the application answered before the body ended) or another request's is
        being written (pipelining): a second answer would corrupt it, so only close."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the application sees the client gone and stops
            cycle.message_event.set()
        if self.transport.is_closing():
            return
        busy = cycle is not None and (cycle.response_started if self._has_cycle else not cycle.response_complete)
        if not busy:
            self.transport.write(error_message(status, message, code))
        self.transport.close()
