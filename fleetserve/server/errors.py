"""The pod's error answers: OpenAI-style error objects (see fleetserve.http_common)."""

from __future__ import annotations

from fleetserve.http_common import error_body
from fleetserve.server.http_server import Response


class APIError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param

    def response(self) -> Response:
        return error_response(self.status, self.message, self.code, self.param)


def error_response(status: int, message: str, code: str | None = None, param: str | None = None) -> Response:
    return Response(status, error_body(status, message, code, param))
