"""Active health checks: `GET /ready` on every endpoint, every interval.

A pod that answers anything but 200 (503 while loading or draining), or does
not answer in time, is not picked until a later check sees it ready again.
Checks run on their own short-lived connections so they never queue behind
requests on the pooled ones.
"""

from __future__ import annotations

import asyncio
import logging

from fleetserve.fleet.http_probe import http_get
from fleetserve.fleet.router.proxy import Router

log = logging.getLogger("fleetserve.router")


async def check_ready(url: str, timeout: float) -> int:
    """The status of GET /ready, 0 when there was no answer in time."""
    status, _ = await http_get(url, "/ready", timeout)
    return status


async def health_loop(router: Router, unreachable_after: int = 2) -> None:
    """A pod that answers /ready with anything but 200 is out at once (it says so: loading or
    draining); one that does not answer is out after `unreachable_after` checks in a row, so one
    slow answer on a busy machine does not take the only pod out of rotation."""
    cfg = router.cfg
    misses: dict[str, int] = {}
    while True:
        try:
            urls = list(router.balancer.endpoints)
            results = await asyncio.gather(*(check_ready(u, cfg.health_timeout) for u in urls))
            now = router.loop.time()
            for url, status in zip(urls, results):
                misses[url] = 0 if status else misses.get(url, 0) + 1
                ok = status == 200 or (status == 0 and misses[url] < unreachable_after)
                ep = router.balancer.endpoints.get(url)
                if ep is not None and ep.ready != ok:
                    log.warning("%s is %s", url, "ready again" if ok else
                                f"not ready (GET /ready: {status or 'no answer'})")
                router.balancer.set_ready(url, ok, now, unanswered=status == 0)
            for url in [u for u in misses if u not in router.balancer.endpoints]:
                del misses[url]
        except Exception:  # a bug here must not silently stop health checking
            log.exception("health check round failed")
        await asyncio.sleep(cfg.health_interval)
