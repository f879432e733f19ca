"""Why the engine could not serve a request, in terms a server can map to HTTP."""

from __future__ import annotations


class EngineDeadError(RuntimeError):
    """The step loop crashed or the engine process is gone; no request can complete."""


class RequestRejected(RuntimeError):
    """The engine would not take the request: `status` 429 when its waiting queue is
    full (try again later), 400 when the request can never run."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
