"""The pod's HTTP-side settings, shared by the one-process server, the frontends and the supervisor."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_BODY_BYTES = 1 << 20


@dataclass(frozen=True)
class ServerOptions:
    served_model_name: str | None = None  # None: the model directory's name
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    request_timeout: float | None = 60.0  # seconds a generation may take; None: no limit
    max_waiting: int = 1024  # requests waiting for a slot before 429; 0: no bound
    drain_timeout: float = 30.0  # seconds SIGTERM waits for requests in flight
    log_level: str = "info"
