"""The router's settings, with the defaults `fleetserve router --help` shows."""

from __future__ import annotations

from dataclasses import dataclass, field

from fleetserve.fleet.outlier import OutlierConfig

# Routes proxied to pods (method, path); everything else is the router's own or 404.
PROXIED = {
    (b"POST", b"/v1/completions"),
    (b"POST", b"/v1/chat/completions"),
    (b"POST", b"/v1/correct"),
    (b"GET", b"/v1/models"),
}
# Every path the router answers on some method (others get 404, these 405 on a wrong method).
KNOWN_PATHS = {path for _, path in PROXIED} | {b"/health", b"/ready", b"/metrics"}


@dataclass(frozen=True)
class RouterConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    policy: str = "p2c"
    max_inflight_per_endpoint: int | None = 256  # beyond it on every endpoint: 429
    connect_timeout: float = 1.0
    read_timeout: float = 60.0  # longest silence from an upstream before the request fails (504)
    request_read_timeout: float = 30.0  # a client's time to send a whole request from its first byte (408)
    idle_timeout: float = 75.0  # an idle keep-alive client connection closes after this
    health_interval: float = 1.0  # active /ready checks; 0 turns them off
    health_timeout: float = 1.0
    outlier: OutlierConfig = field(default_factory=OutlierConfig)
    retry: bool = True  # one retry on another endpoint for requests that failed before any answer byte
    max_body_bytes: int = 1 << 20
    drain_timeout: float = 30.0
    retry_after: int = 1  # seconds, in 429 and 503 answers

    def __post_init__(self) -> None:
        if self.connect_timeout <= 0 or self.read_timeout <= 0 or self.health_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if self.request_read_timeout < 0 or self.idle_timeout < 0:
            raise ValueError("--request-read-timeout and --idle-timeout must be 0 (none) or positive")
        if self.health_interval < 0:
            raise ValueError("--health-interval must be 0 (off) or positive")
        if self.max_body_bytes < 1:
            raise ValueError("--max-body-bytes must be positive")
