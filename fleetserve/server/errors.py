"""OpenAI-style error responses: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import msgspec
from starlette.responses import Response

_TYPES = {400: "invalid_request_error", 404: "not_found_error", 413: "invalid_request_error",
          422: "invalid_request_error", 429: "rate_limit_error", 503: "service_unavailable"}


class APIError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param

    def response(self) -> Response:
        return error_response(self.status, self.message, self.code, self.param)


def error_response(status: int, message: str, code: str | None = None, param: str | None = None) -> Response:
    body = {"error": {"message": message, "type": _TYPES.get(status, "server_error"),
                      "param": param, "code": code}}
    return Response(msgspec.json.encode(body), status_code=status, media_type="application/json")
