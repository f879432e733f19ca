"""What the autoscaler measures on a pod: whether it is ready, and how many
requests its engine holds (waiting for a slot + running), from its Prometheus
text. Engine-level figures are the pod's own whatever its number of frontends.

The load is the mean number in flight since the previous reading, from the
engine's time integral of that count: a once-a-second sample of the instant
count at a pod that answers in 50 ms is mostly 0 or 1 whatever the traffic,
and a scale-down window of such samples can read 0 under steady load."""

from __future__ import annotations

import asyncio
import urllib.request
from dataclasses import dataclass

from fleetserve.fleet.http_probe import http_get

INFLIGHT_METRICS = (b"fleetserve_requests_waiting", b"fleetserve_slots_running")
AREA_METRIC = b"fleetserve_inflight_seconds_total"
CLOCK_METRIC = b"fleetserve_engine_clock_seconds"


@dataclass(frozen=True)
class InflightReading:
    instant: float  # waiting + running when the pod answered
    area: float | None  # time integral of that count (None: a pod without the counter)
    clock: float | None  # the engine's monotonic clock at `area`


async def pod_ready(url: str, timeout: float = 1.0) -> bool:
    status, _ = await http_get(url, "/ready", timeout)
    return status == 200


async def pod_health(url: str, timeout: float = 1.0) -> int:
    """The status of the pod's GET /health (200: alive), 0 when it did not answer in time."""
    status, _ = await http_get(url, "/health", timeout)
    return status


def parse_inflight(text: bytes) -> InflightReading | None:
    """The in-flight figures in a pod's /metrics text; None when the instant count is absent or malformed."""
    total, seen = 0.0, 0
    extra: dict[bytes, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(b" ")
        name = name.split(b"{")[0]
        if name in INFLIGHT_METRICS or name in (AREA_METRIC, CLOCK_METRIC):
            try:
                v = float(value.split()[0])
            except (ValueError, IndexError):
                return None
            if name in INFLIGHT_METRICS:
                total += v
                seen += 1
            else:
                extra[name] = v
    if not seen:
        return None
    return InflightReading(total, extra.get(AREA_METRIC), extra.get(CLOCK_METRIC))


class InflightMeter:
    """Each pod's mean in flight between successive readings (see the module's docstring).
    A pod's first reading, or one whose counter went back (the process was replaced at
    the same address) or whose clock did not move, gives its instant count instead."""

    def __init__(self) -> None:
        self._last: dict[str, InflightReading] = {}

    def mean(self, url: str, reading: InflightReading) -> float:
        before = self._last.get(url)
        if reading.area is None or reading.clock is None:
            return reading.instant
        self._last[url] = reading
        if before is None or before.area is None or before.clock is None:
            return reading.instant
        elapsed, area = reading.clock - before.clock, reading.area - before.area
        if elapsed <= 0 or area < 0:
            return reading.instant
        return area / elapsed

    def forget(self, keep: set[str]) -> None:
        """Drop the pods no longer read (scaled away), so a new pod at a reused address starts afresh."""
        for url in set(self._last) - keep:
            del self._last[url]

    async def read(self, url: str, timeout: float = 1.0) -> float | None:
        """The pod's mean requests in flight (waiting + running) since its previous
        reading, or None if its /metrics could not be read."""
        status, body = await http_get(url, "/metrics", timeout)
        reading = parse_inflight(body) if status == 200 else None
        return None if reading is None else self.mean(url, reading)

    async def read_all(self, urls: list[str], timeout: float = 1.0) -> list[float | None]:
        self.forget(set(urls))
        return list(await asyncio.gather(*(self.read(u, timeout) for u in urls)))


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
