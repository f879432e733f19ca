"""What every layer that speaks HTTP itself (the pod's routes and HTTP layer, the
router) shares: OpenAI-style error objects, `{"error": {"message", "type",
"param", "code"}}`, and the limits on what a client can make us buffer.
No dependencies: the bottom of the import graph."""

from __future__ import annotations

import errno
import json
import socket

MAX_URL_BYTES = 8 << 10  # longer: 414
MAX_HEADER_BYTES = 64 << 10  # all header names and values of one request; more: 431

_TYPES = {400: "invalid_request_error", 404: "not_found_error", 405: "invalid_request_error",
          408: "invalid_request_error", 413: "invalid_request_error", 414: "invalid_request_error",
          422: "invalid_request_error", 429: "rate_limit_error", 431: "invalid_request_error",
          503: "service_unavailable"}
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
           413: "Content Too Large", 414: "URI Too Long", 429: "Too Many Requests",
           431: "Request Header Fields Too Large", 500: "Internal Server Error", 502: "Bad Gateway",
           503: "Service Unavailable", 504: "Gateway Timeout"}


class Refused(Exception):
    """Raised from an HTTP parser's callback to refuse a request (a size limit passed, a URL
    that cannot be parsed); the parser then fails with it as the cause (see `refusal`)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def check_url(url: bytes) -> None:
    if len(url) > MAX_URL_BYTES:
        raise Refused(414, f"the URL is over {MAX_URL_BYTES} bytes")


def count_header(total: int, name: bytes, value: bytes) -> int:
    """The request's header bytes so far, with this header; Refused past the limit."""
    total += len(name) + len(value)
    if total > MAX_HEADER_BYTES:
        raise Refused(431, f"the request headers are over {MAX_HEADER_BYTES} bytes")
    return total


def refusal(parse_error: Exception) -> tuple[int, str]:
    """Status and message for a request the HTTP parser refused: a size limit when one of our
    callbacks raised Refused (httptools wraps it), else 400 with the parser's reason."""
    cause = parse_error.__context__
    if isinstance(cause, Refused):
        return cause.status, str(cause)
    return 400, f"malformed HTTP request: {parse_error}"


def error_type(status: int) -> str:
    return _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


def error_body(status: int, message: str, code: str | None = None, param: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": error_type(status), "param": param,
                                 "code": code}}).encode()


def answer_head(status: int, content_type: bytes, length: int | None, extra: bytes = b"",
                close: bool = False, chunked: bool = False) -> bytes:
    """A response's status line and headers, for the layers that write to sockets
    themselves; `length` None: chunked, or without chunks the body ends with the connection
    (for HTTP/1.0 clients); `extra`: more header lines, each ending in CRLF."""
    if length is not None:
        framing = b"Content-Length: %d\r\n" % length
    else:
        framing = b"Transfer-Encoding: chunked\r\n" if chunked else b""
    return b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\n%s%s%s\r\n" % (
        status, REASONS.get(status, "").encode(), content_type, framing, extra,
        b"Connection: close\r\n" if close else b"")


def answer(status: int, body: bytes, content_type: bytes = b"application/json", extra: bytes = b"",
           close: bool = False) -> bytes:
    """A whole response."""
    return answer_head(status, content_type, len(body), extra, close) + body


def error_message(status: int, message: str, code: str | None = None, extra: bytes = b"") -> bytes:
    """A whole answer with an error object that closes the connection."""
    return answer(status, error_body(status, message, code), extra=extra, close=True)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the kernel's pick), for a process about to be started."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def check_port_free(host: str, port: int) -> None:
    """Raise ValueError, in one line, when something already listens on host:port; called
    before the model loads, so that a taken port fails at once. (Binding without
    SO_REUSEPORT, which would let a second pod share the port unnoticed.)"""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # connections in TIME_WAIT do not count
        try:
            sock.bind((host, port))
        except OSError as e:
            why = "already in use" if e.errno == errno.EADDRINUSE else e.strerror
            raise ValueError(f"cannot listen on {host}:{port}: {why}; choose another port with --port") from None
