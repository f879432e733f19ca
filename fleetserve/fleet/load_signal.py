"""What the autoscaler measures on a pod: whether it is ready, and how many
requests its engine holds (waiting for a slot + running), from its Prometheus
text. Engine-level figures are the pod's own whatever its number of frontends."""

from __future__ import annotations

import urllib.request

from fleetserve.fleet.http_probe import http_get

INFLIGHT_METRICS = (b"fleetserve_requests_waiting", b"fleetserve_slots_running")


async def pod_ready(url: str, timeout: float = 1.0) -> bool:
    status, _ = await http_get(url, "/ready", timeout)
    return status == 200


async def pod_health(url: str, timeout: float = 1.0) -> int:
    """The status of the pod's GET /health (200: alive), 0 when it did not answer in time."""
    status, _ = await http_get(url, "/health", timeout)
    return status


def parse_inflight(text: bytes) -> float | None:
    total, seen = 0.0, 0
    for line in text.splitlines():
        name, _, value = line.partition(b" ")
        if name.split(b"{")[0] in INFLIGHT_METRICS:
            try:
                total += float(value.split()[0])
                seen += 1
            except (ValueError, IndexError):
                return None
    return total if seen else None


async def pod_inflight(url: str, timeout: float = 1.0) -> float | None:
    """Requests waiting + running in the pod's engine, or None if it could not be read."""
    status, body = await http_get(url, "/metrics", timeout)
    return parse_inflight(body) if status == 200 else None


def parse_metrics(text: str) -> dict[str, float]:
    """A pod's unlabelled metrics (counters and gauges), name -> value."""
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or "{" in line:
            continue
        name, _, value = line.partition(" ")
        try:
            out[name] = float(value.split()[0])
        except (ValueError, IndexError):
            continue
    return out


def pod_metrics(url: str, timeout: float = 5.0) -> dict[str, float]:
    """GET url/metrics, blocking (benchmarks read it between load steps), parsed."""
    with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=timeout) as r:
        return parse_metrics(r.read().decode())
