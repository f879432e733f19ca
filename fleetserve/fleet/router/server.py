"""`fleetserve router`: run the router, as one process or several on one port.

Each process binds the port with SO_REUSEPORT (the kernel spreads connections
over them), runs its own discovery, health checks and balancer, and counts its
own in-flight requests; a parent process restarts a worker that dies and passes
SIGTERM on. On SIGTERM a worker stops accepting, answers requests still
arriving on open connections with 503, finishes those in flight (up to
`--drain-timeout`) and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import signal
import sys
import time

from fleetserve.fleet.balancer import POLICIES, Balancer
from fleetserve.fleet.discovery import Discovery
from fleetserve.fleet.outlier import OutlierConfig, OutlierDetector
from fleetserve.fleet.router.config import RouterConfig
from fleetserve.fleet.router.metrics import RouterMetrics
from fleetserve.fleet.router.proxy import ClientConn, Router
from fleetserve.http_common import check_port_free

log = logging.getLogger("fleetserve.router")


async def run_worker(cfg: RouterConfig, discovery: Discovery, worker: int = 0, announce: bool = True) -> int:
    """Serve until SIGTERM/SIGINT; the exit status (non-zero when discovery failed)."""
    from fleetserve.fleet.router.health import health_loop

    loop = asyncio.get_running_loop()
    router = Router(cfg, Balancer(cfg.policy, cfg.max_inflight_per_endpoint), OutlierDetector(cfg.outlier),
                    RouterMetrics(worker))
    stop = asyncio.Event()
    status = 0

    async def follow() -> None:
        async for snap in discovery.snapshots():
            router.apply_snapshot(snap)

    def discovery_ended(task: asyncio.Task) -> None:
        nonlocal status
        if not task.cancelled() and task.exception() is not None:
            log.error("endpoint discovery failed: %s", task.exception())
            status = 1
            stop.set()

    disc = loop.create_task(follow())
    disc.add_done_callback(discovery_ended)
    server = await loop.create_server(lambda: ClientConn(router), cfg.host, cfg.port, reuse_port=True,
                                      backlog=4096)
    tasks = [loop.create_task(router.sweep_timeouts())]
    if cfg.health_interval > 0:
        tasks.append(loop.create_task(health_loop(router)))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    port = server.sockets[0].getsockname()[1]
    if announce:
        print(f"router on http://{cfg.host}:{port} (policy {cfg.policy}, worker {worker}, pid {os.getpid()})",
              flush=True)
    await stop.wait()
    server.close()
    await router.drain()
    for task in [disc, *tasks]:
        task.cancel()
    await asyncio.gather(disc, *tasks, return_exceptions=True)
    if announce:
        print(f"router worker {worker} stopped", flush=True)
    return status


def _worker_main(cfg: RouterConfig, discovery: Discovery, worker: int) -> None:
    import uvloop

    sys.exit(uvloop.run(run_worker(cfg, discovery, worker)))


def serve_router(cfg: RouterConfig, discovery: Discovery, workers: int = 1) -> int:
    if cfg.port:
        check_port_free(cfg.host, cfg.port)  # the workers share it with SO_REUSEPORT, which would not fail
    if workers == 1:
        import uvloop

        return uvloop.run(run_worker(cfg, discovery))
    if cfg.port == 0:
        raise ValueError("--workers above 1 needs a fixed --port (they share it)")
    ctx = multiprocessing.get_context("fork")  # no threads exist yet in this process
    procs: dict[int, multiprocessing.Process] = {}
    stopping = False

    def start(k: int) -> None:
        p = ctx.Process(target=_worker_main, args=(cfg, discovery, k), name=f"router-{k}", daemon=False)
        p.start()
        procs[k] = p

    def on_signal(signum, frame) -> None:
        nonlocal stopping
        stopping = True
        for p in procs.values():
            if p.is_alive():
                os.kill(p.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for k in range(workers):
        start(k)
    status = 0
    while procs:
        time.sleep(0.2)
        for k, p in list(procs.items()):
            if p.is_alive():
                continue
            p.join()
            del procs[k]
            if not stopping:
                if p.exitcode == 1:  # discovery failed: restarting would fail the same way
                    status = 1
                    on_signal(None, None)
                else:
                    log.warning("router worker %d exited (%s); restarting it", k, p.exitcode)
                    start(k)
    return status


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
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


def run_cli(a: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = config_from_args(a)
    discovery = discovery_from_args(a)
    sys.exit(serve_router(cfg, discovery, a.workers))
