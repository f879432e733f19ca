"""Active health checks: `GET /ready` on every endpoint, every interval.

A pod that answers anything but 200 (503 while loading or draining), or does
not answer in time, is not picked until a later check sees it ready again.
Checks run on their own short-lived connections so they never queue behind
requests on the pooled ones.
"""

from __future__ import annotations

import asyncio
import logging

from fleetserve.fleet.discovery import host_port
from fleetserve.fleet.router.proxy import Router

log = logging.getLogger("fleetserve.router")


async def check_ready(url: str, timeout: float) -> bool:
    host, port = host_port(url)
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"GET /ready HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n" % (host.encode(), port))
            line = await reader.readline()
        parts = line.split()
        return len(parts) >= 2 and parts[1] == b"200"
    except (OSError, asyncio.TimeoutError, ValueError):
        return False
    finally:
        if writer is not None:
            writer.close()


async def health_loop(router: Router) -> None:
    cfg = router.cfg
    while True:
        urls = list(router.balancer.endpoints)
        results = await asyncio.gather(*(check_ready(u, cfg.health_timeout) for u in urls))
        now = router.loop.time()
        for url, ok in zip(urls, results):
            ep = router.balancer.endpoints.get(url)
            if ep is not None and ep.ready != ok:
                log.warning("%s is %s", url, "ready again" if ok else "not ready (GET /ready)")
            router.balancer.set_ready(url, ok, now)
        await asyncio.sleep(cfg.health_interval)
