"""How fast is the load tester itself? `fleetserve bench-loadtest` steps the
offered rate up against the stub server (which answers at once) and reports
the highest rate one sender process sustains with under 1% of requests sent
late, and, as the baseline in the same run, what an open-loop sender written
the usual way (httpx.AsyncClient, one task per request) sustains.

Sender and stub are pinned to different cores where the machine has two, so
the figure is per core of client.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np

from fleetserve.loadtest.runner import LoadTestOptions, run_loadtest
from fleetserve.benchmarks.procs import start_announcing

LATE_LIMIT = 0.01  # share of requests sent late that still counts as sustained


def start_stub(core: int | None) -> tuple[subprocess.Popen, str]:
    return start_announcing(["stub-server", "--port", "0"], core)


def fleetserve_point(url: str, rate: float, seconds: float) -> dict[str, Any]:
    rep, _ = run_loadtest(LoadTestOptions(url=url, profile=f"constant:{rate:g}@{seconds:g}s", model="stub",
                                          progress=False, window=seconds))
    o = rep["summary"]["overall"]
    return {"offered": o["offered_rate"], "achieved": o["request_throughput"],
            "late_share": o["client_lag"]["late_share"], "errors": sum(o["errors"].values()),
            "lag_p99_ms": o["client_lag"]["p99_ms"]}


async def _httpx_open_loop(url: str, rate: float, seconds: float) -> dict[str, Any]:
    """The baseline: what one would write by hand with a popular async client."""
    import httpx

    from fleetserve.loadtest.profile import parse_profile
    from fleetserve.loadtest.workload import Workload, reference_prompts

    due = parse_profile(f"constant:{rate:g}@{seconds:g}s").arrivals("poisson", 0)
    bodies = Workload("completions", tuple(reference_prompts(64)), "stub").bodies()
    lags, errors = [], 0
    limits = httpx.Limits(max_connections=10_000, max_keepalive_connections=10_000)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        async def one(i: int, t0: float) -> None:
            nonlocal errors
            lags.append(time.perf_counter() - t0 - due[i])
            try:
                r = await client.post("/v1/completions", content=bodies[i % len(bodies)],
                                      headers={"content-type": "application/json"})
                r.json()
                errors += r.status_code != 200
            except httpx.HTTPError:
                errors += 1

        t0 = time.perf_counter() + 0.05
        tasks = []
        for i, d in enumerate(due):
            wait = d - (time.perf_counter() - t0)
            if wait > 0:
                await asyncio.sleep(wait)
            tasks.append(asyncio.ensure_future(one(i, t0)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t0
    lag = np.asarray(lags)
    return {"offered": round(len(due) / seconds, 1), "achieved": round(len(due) / max(elapsed, seconds), 1),
            "late_share": round(float((lag > 0.010).mean()), 6), "errors": errors,
            "lag_p99_ms": round(float(np.percentile(lag, 99)) * 1e3, 3)}


def httpx_point(url: str, rate: float, seconds: float) -> dict[str, Any]:
    import uvloop

    return uvloop.run(_httpx_open_loop(url, rate, seconds))


def sustained(point: dict[str, Any]) -> bool:
    return point["late_share"] < LATE_LIMIT and point["errors"] == 0 and point["achieved"] >= 0.97 * point["offered"]


def sweep(name: str, measure, url: str, rates: list[float], seconds: float, log) -> dict[str, Any]:
    points, best = [], 0.0
    for rate in rates:
        p = {"rate": rate, **measure(url, rate, seconds)}
        p["sustained"] = sustained(p)
        points.append(p)
        log(f"{name:10s} {rate:8.0f}/s offered {p['offered']:8.1f} achieved {p['achieved']:8.1f} "
            f"late {p['late_share'] * 100:6.2f}%  lag p99 {p['lag_p99_ms']:8.2f} ms  errors {p['errors']}"
            f"  {'ok' if p['sustained'] else 'NOT sustained'}")
        if not p["sustained"]:
            break
        best = rate
    return {"points": points, "highest_sustained_rate": best}


def run_self_bench(rates: list[float], seconds: float, baseline: bool = True, quiet: bool = False) -> dict[str, Any]:
    def log(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr, flush=True)

    cores = sorted(os.sched_getaffinity(0))
    client_core, stub_core = (cores[0], cores[1]) if len(cores) > 1 else (None, None)
    if client_core is not None:
        os.sched_setaffinity(0, {client_core})
    proc, url = start_stub(stub_core)
    try:
        out: dict[str, Any] = {"client_core": client_core, "stub_core": stub_core, "seconds_per_rate": seconds,
                               "late_limit": LATE_LIMIT}
        out["fleetserve"] = sweep("fleetserve", fleetserve_point, url, rates, seconds, log)
        if baseline:
            out["httpx_baseline"] = sweep("httpx", httpx_point, url, rates, seconds, log)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if client_core is not None:
            os.sched_setaffinity(0, set(cores))
    return out
