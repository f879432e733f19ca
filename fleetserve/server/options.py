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
    # A step loop that has not turned for this long is stuck, not slow: the pod exits 1
    # so that its supervisor replaces it. Far above any real step (seconds on a busy host).
    engine_stall_timeout: float = 120.0
    # Seconds a client has to send a whole request (headers and body) from its first
    # byte, and a new connection to send its first byte; then 408 and the connection closes.
    request_read_timeout: float = 30.0
