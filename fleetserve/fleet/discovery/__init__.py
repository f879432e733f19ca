"""Endpoint discovery: sources of the set of ready pod endpoints, each behind one
interface, `snapshots()`, an async iterator that yields the whole current set
whenever it changes. Routing reads the latest snapshot; discovery never blocks
a request.

- `static`: a fixed list (`--endpoints URL,URL`).
- `file`: a JSON file watched for changes (the local supervisor writes it).
- `kubernetes`: the EndpointSlices of a Service, listed then watched.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol
from urllib.parse import urlsplit

from fleetserve.fleet.balancer import EndpointSpec

Snapshot = tuple[EndpointSpec, ...]


class Discovery(Protocol):
    def snapshots(self) -> AsyncIterator[Snapshot]:
        """Yield the full set of ready endpoints, first at once, then after every change."""
        ...


def parse_endpoint(text: str) -> EndpointSpec:
    """'http://host:port' with optional ';weight=W' and ';max_inflight=N' after it."""
    url, *opts = [part.strip() for part in text.strip().split(";")]
    url = normalize_url(url)
    weight, cap = 1.0, None
    for opt in opts:
        key, sep, value = opt.partition("=")
        try:
            if key == "weight" and sep:
                weight = float(value)
                if not weight > 0:
                    raise ValueError
            elif key == "max_inflight" and sep:
                cap = int(value)
                if cap < 1:
                    raise ValueError
            else:
                raise KeyError(key)
        except KeyError:
            raise ValueError(f"endpoint {text!r}: unknown option {opt!r} (use weight=W or max_inflight=N)") from None
        except ValueError:
            raise ValueError(f"endpoint {text!r}: {key} must be a positive number, not {value!r}") from None
    return EndpointSpec(url, weight, cap)


def normalize_url(url: str) -> str:
    """'host:port' or 'http://host:port[/]' -> 'http://host:port'."""
    parts = urlsplit(url if "://" in url else "http://" + url)
    if parts.scheme != "http":
        raise ValueError(f"endpoint {url!r}: only http:// endpoints are supported")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"endpoint {url!r}: the port is not a number") from None
    if not parts.hostname or port is None:
        raise ValueError(f"endpoint {url!r}: give host and port, as http://10.0.0.5:8100")
    if parts.path not in ("", "/"):
        raise ValueError(f"endpoint {url!r}: an endpoint is a host and port, without a path")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"http://{host}:{port}"


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname, parts.port
