"""`fleetserve router`: run the router, as one process or several on one port.

Each process binds the port with SO_REUSEPORT (the kernel spreads connections
over them), runs its own discovery, health checks and balancer, and counts its
own in-flight requests; a parent process restarts a worker that dies and passes
SIGTERM on. On SIGTERM a worker stops accepting, answers requests still
arriving on open connections with 503, finishes those in flight (up to
`--drain-timeout`) and exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import sys
import time

from fleetserve.fleet.balancer import Balancer
from fleetserve.fleet.discovery import Discovery
from fleetserve.fleet.outlier import OutlierDetector
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
