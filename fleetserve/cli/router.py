"""`fleetserve router`: its options and what runs it."""

from __future__ import annotations

import argparse
import logging
import sys
from fleetserve.fleet.balancer import POLICIES
from fleetserve.fleet.discovery import Discovery
from fleetserve.fleet.outlier import OutlierConfig
from fleetserve.fleet.router.config import RouterConfig
from fleetserve.fleet.router.server import serve_router

HELP = ('load-balancing proxy in front of pods: power of two choices '
        'over discovered endpoints, retries, health checks, outlier ejection')


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default %(default)s)")
    p.add_argument("--port", type=int, default=8000,
                   help="port to listen on (default %(default)s)")
    p.add_argument("--workers", type=int, default=1, help="router processes sharing the port (default %(default)s)")
    p.add_argument("--policy", choices=POLICIES, default="p2c",
                   help="p2c: the less loaded of two random endpoints (default); the others are baselines")
    d = p.add_argument_group("endpoint discovery")
    d.add_argument("--discovery", choices=["static", "file", "kubernetes"], default=None,
                   help="where endpoints come from (default: static with --endpoints, file with --endpoint-file)")
    d.add_argument("--endpoints", default=None,
                   help="static list: URL,URL,... each optionally with ;weight=W;max_inflight=N")
    d.add_argument("--endpoint-file", default=None, help="JSON file of endpoints, re-read when it changes")
    d.add_argument("--namespace", default=None, help="kubernetes: the Service's namespace")
    d.add_argument("--service", default=None, help="kubernetes: the Service whose EndpointSlices to watch")
    d.add_argument("--port-name", default=None, help="kubernetes: the EndpointSlice port to use (default: the first)")
    d.add_argument("--kubeconfig", default=None,
                   help="kubernetes: kubeconfig file (default: in-cluster credentials, else ~/.kube/config)")
    t = p.add_argument_group("limits and health")
    t.add_argument("--max-inflight-per-endpoint", type=int, default=256,
                   help="requests in flight per endpoint before it is skipped; 429 when all are full "
                        "(default %(default)s; 0: no cap)")
    t.add_argument("--connect-timeout", type=float, default=1.0, help="seconds (default %(default)s)")
    t.add_argument("--read-timeout", type=float, default=60.0,
                   help="longest silence from an endpoint before the request fails with 504 (default %(default)s)")
    t.add_argument("--request-read-timeout", type=float, default=30.0,
                   help="seconds a client has to send a whole request (headers and body) from its first byte, and "
                        "a new connection its first byte; then 408 and the connection closes "
                        "(default %(default)s; 0: none)")
    t.add_argument("--idle-timeout", type=float, default=75.0,
                   help="seconds an idle keep-alive client connection is kept (default %(default)s; 0: for ever)")
    t.add_argument("--health-interval", type=float, default=1.0,
                   help="seconds between GET /ready checks of each endpoint; 0: off (default %(default)s)")
    t.add_argument("--eject-after", type=int, default=3,
                   help="consecutive failures that eject an endpoint (default %(default)s)")
    t.add_argument("--eject-for", type=float, default=2.0,
                   help="first ejection in seconds, doubling on each repeat up to 30 (default %(default)s)")
    t.add_argument("--no-retry", action="store_true", help="never send a failed request to another endpoint")
    t.add_argument("--max-body-bytes", type=int, default=1 << 20, help="largest request body (default %(default)s)")
    t.add_argument("--drain-timeout", type=float, default=30.0,
                   help="on SIGTERM, how long to wait for requests in flight (default %(default)s)")


def discovery_from_args(a: argparse.Namespace) -> Discovery:
    kind = a.discovery or ("file" if a.endpoint_file else "static")
    if kind == "static":
        from fleetserve.fleet.discovery.static import StaticDiscovery

        if not a.endpoints:
            raise ValueError("give --endpoints URL,URL (or --endpoint-file FILE, or --discovery kubernetes)")
        return StaticDiscovery(a.endpoints)
    if kind == "file":
        from fleetserve.fleet.discovery.file import FileDiscovery

        if not a.endpoint_file:
            raise ValueError("--discovery file needs --endpoint-file FILE")
        return FileDiscovery(a.endpoint_file)
    from fleetserve.fleet.discovery.kubernetes import KubernetesDiscovery

    return KubernetesDiscovery(a.namespace, a.service, port_name=a.port_name, kubeconfig=a.kubeconfig)


def config_from_args(a: argparse.Namespace) -> RouterConfig:
    if a.workers < 1:
        raise ValueError("--workers must be at least 1")
    if a.max_inflight_per_endpoint < 0:
        raise ValueError("--max-inflight-per-endpoint must be 0 (no cap) or positive")
    return RouterConfig(host=a.host, port=a.port, policy=a.policy,
                        max_inflight_per_endpoint=a.max_inflight_per_endpoint or None,
                        connect_timeout=a.connect_timeout, read_timeout=a.read_timeout,
                        request_read_timeout=a.request_read_timeout, idle_timeout=a.idle_timeout,
                        health_interval=a.health_interval,
                        outlier=OutlierConfig(consecutive_failures=a.eject_after, base_ejection=a.eject_for,
                                              max_ejection=max(30.0, a.eject_for)),
                        retry=not a.no_retry, max_body_bytes=a.max_body_bytes, drain_timeout=a.drain_timeout)


def run(a: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = config_from_args(a)
    discovery = discovery_from_args(a)
    sys.exit(serve_router(cfg, discovery, a.workers))
