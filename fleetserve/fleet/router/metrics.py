"""The router's own counters and their Prometheus text.

Plain attributes bumped on the request path (no labels resolved per request,
no locks: one event loop per router process). Each router process keeps its own;
`worker` labels them when several share a port.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter

from fleetserve.fleet.balancer import Balancer

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class RouterMetrics:
    def __init__(self, worker: int = 0):
        self.worker = worker
        self.requests: Counter[int] = Counter()  # by status sent to the client
        self.by_endpoint: Counter[str] = Counter()  # requests sent to each endpoint (retries included)
        self.retries = 0
        self.upstream_failures: Counter[str] = Counter()  # by kind: connect, reset, timeout, http_5xx
        self.rejected: Counter[str] = Counter()  # none_ready (503), all_at_cap (429), draining (503)
        self.client_disconnects = 0
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0

    def observe(self, status: int, seconds: float) -> None:
        self.requests[status] += 1
        self.latency_counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def render(self, balancer: Balancer, ejections: int, now: float) -> str:
        w = f'worker="{self.worker}"'
        out = [
            "# HELP fleetserve_router_info The router's balancing policy.",
            "# TYPE fleetserve_router_info gauge",
            f'fleetserve_router_info{{{w},policy="{balancer.policy}"}} 1',
            "# HELP fleetserve_router_requests_total Requests answered, by status code.",
            "# TYPE fleetserve_router_requests_total counter",
        ]
        out += [f'fleetserve_router_requests_total{{{w},code="{c}"}} {n}' for c, n in sorted(self.requests.items())]
        out += ["# HELP fleetserve_router_endpoint_requests_total Requests sent to each endpoint (retries too).",
                "# TYPE fleetserve_router_endpoint_requests_total counter"]
        out += [f'fleetserve_router_endpoint_requests_total{{{w},endpoint="{u}"}} {n}'
                for u, n in sorted(self.by_endpoint.items())]
        out += ["# HELP fleetserve_router_endpoint_inflight Requests in flight to each endpoint, as this router counts.",
                "# TYPE fleetserve_router_endpoint_inflight gauge"]
        out += [f'fleetserve_router_endpoint_inflight{{{w},endpoint="{u}"}} {ep.inflight}'
                for u, ep in sorted(balancer.endpoints.items())]
        out += ["# HELP fleetserve_router_endpoint_available 1 if the endpoint may be picked (ready, not ejected).",
                "# TYPE fleetserve_router_endpoint_available gauge"]
        usable = {ep.url for ep in balancer.usable(now)}
        out += [f'fleetserve_router_endpoint_available{{{w},endpoint="{u}"}} {int(u in usable)}'
                for u in sorted(balancer.endpoints)]
        out += ["# HELP fleetserve_router_retries_total Requests sent again to another endpoint.",
                "# TYPE fleetserve_router_retries_total counter",
                f"fleetserve_router_retries_total{{{w}}} {self.retries}",
                "# HELP fleetserve_router_ejections_total Endpoints ejected after consecutive failures.",
                "# TYPE fleetserve_router_ejections_total counter",
                f"fleetserve_router_ejections_total{{{w}}} {ejections}",
                "# HELP fleetserve_router_upstream_failures_total Failed attempts, by kind.",
                "# TYPE fleetserve_router_upstream_failures_total counter"]
        out += [f'fleetserve_router_upstream_failures_total{{{w},kind="{k}"}} {n}'
                for k, n in sorted(self.upstream_failures.items())]
        out += ["# HELP fleetserve_router_rejected_total Requests the router answered itself, by reason.",
                "# TYPE fleetserve_router_rejected_total counter"]
        out += [f'fleetserve_router_rejected_total{{{w},reason="{k}"}} {n}' for k, n in sorted(self.rejected.items())]
        out += ["# HELP fleetserve_router_client_disconnects_total Clients gone before their answer.",
                "# TYPE fleetserve_router_client_disconnects_total counter",
                f"fleetserve_router_client_disconnects_total{{{w}}} {self.client_disconnects}",
                "# HELP fleetserve_router_request_seconds Time from a request's last byte to its answer's last byte.",
                "# TYPE fleetserve_router_request_seconds histogram"]
        cum = 0
        for le, n in zip(LATENCY_BUCKETS, self.latency_counts):
            cum += n
            out.append(f'fleetserve_router_request_seconds_bucket{{{w},le="{le}"}} {cum}')
        cum += self.latency_counts[-1]
        out.append(f'fleetserve_router_request_seconds_bucket{{{w},le="+Inf"}} {cum}')
        out.append(f"fleetserve_router_request_seconds_sum{{{w}}} {self.latency_sum:.6f}")
        out.append(f"fleetserve_router_request_seconds_count{{{w}}} {cum}")
        return "\n".join(out) + "\n"
