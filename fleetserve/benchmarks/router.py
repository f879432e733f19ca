"""`fleetserve bench-router`: is the router ever the bottleneck, and does P2C pay?

(a) Throughput and added latency in front of fast stand-in upstreams (stub
servers that answer at once), for the fleetserve router, an aiohttp proxy (the
stack one would reach for by habit) and HAProxy from Debian's packages
(`balance random(2)`, installed with apt-get if missing, one thread). The proxy
under test is pinned to one core, the load generator to another, the upstreams
to the remaining cores (on a 2-core machine they share the generator's). Each proxy's requests/s is divided by the CPU it used in the same
window (from /proc), so "per core" holds even when the load side, not the
proxy, limits the rate. Added latency: open-loop p99 through the proxy minus
p99 straight to the upstream, at shares of the router's measured capacity (half
is the target's point), median of alternating rounds.

(b) Tail latency with 4 upstreams where one is 3x slower (each with a fixed
number of slots, as a pod has, and a queue behind them), offered 85% of their
total capacity through the router with `p2c` and with `round_robin`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from fleetserve.http_common import free_port
from fleetserve.loadtest.client import Call, Pool
from fleetserve.loadtest.runner import LoadTestOptions, run_loadtest
from fleetserve.loadtest.workload import Workload, reference_prompts
from fleetserve.benchmarks.procs import start_announcing, stop

STACKS = ("fleetserve", "aiohttp", "haproxy")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_listening(port: int, proc: subprocess.Popen, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the proxy exited with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {seconds}s")


# --- cores: the proxy alone on the first; the load generator on the second; the upstreams on the
# rest where there are more than two (else they share the generator's) ---------------------------
CORES = sorted(os.sched_getaffinity(0))


def upstream_core(k: int) -> int | None:
    if len(CORES) < 2:
        return None
    spare = CORES[2:] or CORES[1:2]
    return spare[k % len(spare)]


# --- a CPU cap, so every proxy saturates below what the load side can offer ---------------
CGROUP_CPU = Path("/sys/fs/cgroup/cpu")


def cap_cpu(pid: int, share: float) -> Path | None:
    """Put a process in a CFS-quota cgroup (v1 or v2) limited to `share` of one core; None if not
    possible here (no permission, no cpu controller)."""
    period = 10_000  # us: a short period, so throttling comes in small slices
    quota = int(share * period)
    try:
        if (CGROUP_CPU / "cpu.cfs_quota_us").exists():
            group = CGROUP_CPU / f"fleetserve-bench-{pid}"
            group.mkdir(exist_ok=True)
            (group / "cpu.cfs_period_us").write_text(str(period))
            (group / "cpu.cfs_quota_us").write_text(str(quota))
        elif Path("/sys/fs/cgroup/cgroup.controllers").exists():
            group = Path("/sys/fs/cgroup") / f"fleetserve-bench-{pid}"
            group.mkdir(exist_ok=True)
            (group / "cpu.max").write_text(f"{quota} {period}")
        else:
            return None
        (group / "cgroup.procs").write_text(str(pid))
        return group
    except OSError:
        return None


def uncap(group: Path | None) -> None:
    if group is not None:
        try:
            group.rmdir()
        except OSError:
            pass


# --- HAProxy ------------------------------------------------------------------------------
def ensure_haproxy(log) -> str | None:
    """The haproxy binary, installed from Debian's packages if missing (needs root)."""
    path = shutil.which("haproxy") or (Path("/usr/sbin/haproxy").exists() and "/usr/sbin/haproxy")
    if path:
        return path
    if not shutil.which("apt-get") or os.geteuid() != 0:
        log("haproxy is not installed and cannot be (needs apt-get as root): skipping it")
        return None
    log("installing haproxy from Debian's packages (apt-get install haproxy) ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "haproxy"]
    if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            log(f"apt-get install haproxy failed: {r.stderr.strip()[-500:]}")
            return None
    return shutil.which("haproxy") or "/usr/sbin/haproxy"


def haproxy_config(port: int, upstreams: list[str]) -> str:
    servers = "\n".join(f"    server s{i} {u.removeprefix('http://')} maxconn 10000"
                        for i, u in enumerate(upstreams))
    return f"""global
    nbthread 1
    maxconn 8000
defaults
    mode http
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
frontend bench
    bind 127.0.0.1:{port}
    default_backend pods
backend pods
    balance random(2)
    http-reuse always
{servers}
"""


def start_proxy(stack: str, upstreams: list[str], core: int | None, haproxy: str | None,
                workdir: Path) -> tuple[subprocess.Popen, str]:
    if stack == "fleetserve":
        return start_announcing(["router", "--port", "0", "--endpoints", ",".join(upstreams),
                                 "--max-inflight-per-endpoint", "0"], core)
    port = free_port()
    pin = (lambda: os.sched_setaffinity(0, {core})) if core is not None else None
    if stack == "aiohttp":
        return start_announcing([str(port), *upstreams], core, module="fleetserve.benchmarks.aiohttp_proxy")
    cfg = workdir / "haproxy.cfg"
    cfg.write_text(haproxy_config(port, upstreams))
    proc = subprocess.Popen([haproxy, "-f", str(cfg), "-db"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, preexec_fn=pin)
    wait_listening(port, proc)
    return proc, f"http://127.0.0.1:{port}"


# --- load -----------------------------------------------------------------------------------
async def _closed_loop(url: str, concurrency: int, warmup: float, seconds: float, pid: int | None) -> dict[str, Any]:
    """`concurrency` requests always outstanding; counts what completes in the window after warm-up."""
    bodies = Workload("completions", tuple(reference_prompts(64)), "stub", max_tokens=16).bodies()
    loop = asyncio.get_running_loop()
    t_start = time.perf_counter()
    t0, t1 = t_start + warmup, t_start + warmup + seconds
    lat: list[float] = []
    errors = 0
    outstanding = 0
    done = loop.create_future()
    k = 0

    def submit() -> None:
        nonlocal k, outstanding
        outstanding += 1
        pool.submit(Call(k, k % len(bodies), 0.0, time.perf_counter()))
        k += 1

    def on_done(call: Call) -> None:
        nonlocal errors, outstanding
        outstanding -= 1
        if t0 <= call.end < t1:
            if call.error:
                errors += 1
            else:
                lat.append(call.end - call.start)
        if call.end < t1:
            submit()
        elif outstanding == 0 and not done.done():
            done.set_result(None)

    pool = Pool(url, "/v1/completions", bodies, "completions", False, on_done)
    for _ in range(concurrency):
        submit()
    await asyncio.sleep(max(0.0, t0 - time.perf_counter()))
    cpu0 = cpu_seconds(pid) if pid else 0.0
    await asyncio.sleep(max(0.0, t1 - time.perf_counter()))
    cpu1 = cpu_seconds(pid) if pid else 0.0
    await asyncio.wait_for(done, 30)
    pool.close()
    a = np.asarray(lat) * 1e3
    rps = len(lat) / seconds
    util = (cpu1 - cpu0) / seconds if pid else None
    return {"requests_per_s": round(rps, 1), "errors": errors, "proxy_cpu_util": util and round(util, 3),
            "requests_per_cpu_s": round(rps / util, 1) if util else None,
            "latency_p50_ms": round(float(np.percentile(a, 50)), 3) if len(a) else None,
            "latency_p99_ms": round(float(np.percentile(a, 99)), 3) if len(a) else None}


def closed_loop(url: str, concurrency: int, seconds: float, pid: int | None = None,
                warmup: float = 1.0) -> dict[str, Any]:
    import uvloop

    return uvloop.run(_closed_loop(url, concurrency, warmup, seconds, pid))


def open_loop(url: str, rate: float, seconds: float) -> dict[str, Any]:
    rep, _ = run_loadtest(LoadTestOptions(url=url, profile=f"constant:{rate:g}@{seconds:g}s", model="stub",
                                          max_tokens=16, progress=False, window=seconds))
    o = rep["summary"]["overall"]
    return {"offered": o["offered_rate"], "achieved": o["request_throughput"], "errors": sum(o["errors"].values()),
            "late_share": o["client_lag"]["late_share"], "p50_ms": o["e2el"]["median"], "p99_ms": o["e2el"]["p99"]}


# --- the two parts ----------------------------------------------------------------------------
def throughput_part(stacks: list[str], seconds: float, concurrency: int, n_upstreams: int, cpu_cap: float | None,
                    haproxy: str | None, proxy_core: int | None, load_core: int | None, log) -> dict[str, Any]:
    stubs = [start_announcing(["stub-server", "--port", "0"], upstream_core(k)) for k in range(n_upstreams)]
    upstreams = [u for _, u in stubs]
    out: dict[str, Any] = {"upstreams": n_upstreams, "concurrency": concurrency, "seconds": seconds}
    try:
        out["direct"] = closed_loop(upstreams[0], concurrency, seconds)
        log(f"{'direct':10s} {out['direct']['requests_per_s']:9.1f} req/s (load side's own limit, one upstream)")
        with tempfile.TemporaryDirectory() as tmp:
            for stack in stacks:
                if stack == "haproxy" and haproxy is None:
                    out[stack] = {"skipped": "haproxy could not be installed"}
                    continue
                proc, url = start_proxy(stack, upstreams, proxy_core, haproxy, Path(tmp))
                group = None
                try:
                    r = closed_loop(url, concurrency, seconds, pid=proc.pid)
                    log(f"{stack:10s} {r['requests_per_s']:9.1f} req/s at {r['proxy_cpu_util'] or 0:5.2f} of a core "
                        f"-> {r['requests_per_cpu_s'] or 0:9.1f} req per CPU-second; errors {r['errors']}")
                    if cpu_cap:
                        group = cap_cpu(proc.pid, cpu_cap)
                        if group is None:
                            log("  (cannot cap the proxy's CPU here: no writable cgroup; capped figures left out)")
                        else:
                            c = closed_loop(url, concurrency, seconds, pid=proc.pid)
                            c["cpu_cap"] = cpu_cap
                            c["requests_per_core"] = round(c["requests_per_s"] / cpu_cap, 1)
                            r["capped"] = c
                            log(f"{'':10s} capped at {cpu_cap:.2f} of a core: {c['requests_per_s']:9.1f} req/s "
                                f"(used {c['proxy_cpu_util'] or 0:.2f}) -> {c['requests_per_core']:9.1f} req/s per core")
                    out[stack] = r
                finally:
                    stop(proc)
                    uncap(group)
    finally:
        for proc, _ in stubs:
            stop(proc)
    if "requests_per_cpu_s" in out.get("haproxy", {}):
        out["fleetserve_vs_haproxy_per_cpu_second"] = round(
            out["fleetserve"]["requests_per_cpu_s"] / out["haproxy"]["requests_per_cpu_s"], 3)
        if "capped" in out["haproxy"] and "capped" in out["fleetserve"]:
            out["fleetserve_vs_haproxy_per_core_capped"] = round(
                out["fleetserve"]["capped"]["requests_per_core"] / out["haproxy"]["capped"]["requests_per_core"], 3)
    return out


def _median(values) -> float | None:
    vals = [v for v in values if v is not None]
    return round(float(np.median(vals)), 3) if vals else None


def latency_part(stacks: list[str], throughput: dict[str, Any], shares: tuple[float, ...], rounds: int,
                 seconds: float, haproxy: str | None, proxy_core: int | None, load_core: int | None,
                 log) -> list[dict[str, Any]]:
    """Open-loop p99 through each proxy minus p99 straight to the upstream, at shares of the router's
    measured capacity. One upstream process only: every extra process on the load side's core adds
    scheduler stalls to every path's tail, the direct one included. The median over `rounds`
    alternating runs, since a p99 of a few seconds on a shared core is noisy."""
    fs = throughput["fleetserve"]
    capacity = min(fs["requests_per_s"], fs["requests_per_cpu_s"] or 1e12)
    stub, upstream = start_announcing(["stub-server", "--port", "0"], upstream_core(0))
    points = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for share in shares:
                rate = round(capacity * share, -1)
                paths = ["direct"] + [s for s in stacks if "skipped" not in throughput[s]
                                      and rate <= 0.8 * throughput[s]["requests_per_s"]]
                runs: dict[str, list[dict[str, Any]]] = {p: [] for p in paths}
                for _ in range(rounds):
                    runs["direct"].append(open_loop(upstream, rate, seconds))
                    for stack in paths[1:]:
                        proc, url = start_proxy(stack, [upstream], proxy_core, haproxy, Path(tmp))
                        try:
                            closed_loop(url, 8, 1.0, warmup=0.2)  # warm the pools
                            runs[stack].append(open_loop(url, rate, seconds))
                        finally:
                            stop(proc)
                point: dict[str, Any] = {"share_of_router_capacity": share, "rate": rate, "rounds": rounds}
                for path, rs in runs.items():
                    point[path] = {"p50_ms": _median(r["p50_ms"] for r in rs),
                                   "p99_ms": _median(r["p99_ms"] for r in rs),
                                   "p99_each_ms": [r["p99_ms"] for r in rs],
                                   "achieved_each": [r["achieved"] for r in rs],
                                   "errors": sum(r["errors"] for r in rs)}
                d = point["direct"]
                log(f"open loop at {rate:g}/s ({share:.0%} of the router's capacity), median of {rounds}: "
                    f"direct p50 {d['p50_ms']} p99 {d['p99_ms']} ms")
                for stack in paths[1:]:
                    r = point[stack]
                    ok = None not in (r["p50_ms"], r["p99_ms"], d["p50_ms"], d["p99_ms"])
                    r["added_p50_ms"] = round(r["p50_ms"] - d["p50_ms"], 3) if ok else None
                    r["added_p99_ms"] = round(r["p99_ms"] - d["p99_ms"], 3) if ok else None
                    log(f"  {stack:10s} p50 {r['p50_ms']} p99 {r['p99_ms']} ms: added p50 {r['added_p50_ms']} "
                        f"p99 {r['added_p99_ms']} ms, errors {r['errors']}")
                for stack in stacks:
                    if stack not in point:
                        point[stack] = {"skipped": "over 80% of this proxy's measured throughput, or not run"}
                points.append(point)
    finally:
        stop(stub)
    return points


def tail_part(seconds: float, slots: int, delay_ms: float, load_share: float, proxy_core: int | None,
              load_core: int | None, log) -> dict[str, Any]:
    delays = [delay_ms] * 3 + [3 * delay_ms]
    capacity = sum(slots / (d / 1e3) for d in delays)
    rate = round(load_share * capacity, 1)
    out: dict[str, Any] = {"delays_ms": delays, "slots_per_upstream": slots, "capacity_per_s": round(capacity, 1),
                           "offered_per_s": rate, "seconds": seconds}
    for policy in ("round_robin", "p2c"):
        stubs = [start_announcing(["stub-server", "--port", "0", "--delay", f"exp:{d:g}ms", "--concurrency",
                                   str(slots), "--seed", str(i)], upstream_core(i)) for i, d in enumerate(delays)]
        try:
            proc, url = start_announcing(["router", "--port", "0", "--policy", policy, "--endpoints",
                                          ",".join(u for _, u in stubs), "--max-inflight-per-endpoint", "0"],
                                         proxy_core)
            try:
                r = open_loop(url, rate, seconds)
            finally:
                stop(proc)
            from urllib.request import urlopen
            import json

            counts = [json.loads(urlopen(u + "/stats", timeout=5).read())["requests"] for _, u in stubs]
        finally:
            for p, _ in stubs:
                stop(p)
        r["share_to_slow"] = round(counts[-1] / max(1, sum(counts)), 3)
        out[policy] = r
        log(f"{policy:12s} p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms  errors {r['errors']}  "
            f"share sent to the slow upstream {r['share_to_slow']:.3f}")
    out["p2c_p99_over_round_robin_p99"] = round(out["p2c"]["p99_ms"] / out["round_robin"]["p99_ms"], 4)
    return out


def run_router_bench(stacks: list[str], seconds: float = 8.0, concurrency: int = 64, n_upstreams: int = 4,
                     tail: bool = True, tail_seconds: float = 20.0, slots: int = 4, delay_ms: float = 20.0,
                     load_share: float = 0.85, latency_shares: tuple[float, ...] = (0.1, 0.25, 0.5),
                     latency_rounds: int = 3, cpu_cap: float | None = 0.4, quiet: bool = False) -> dict[str, Any]:
    def log(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr, flush=True)

    for s in stacks:
        if s not in STACKS:
            raise ValueError(f"unknown stack {s!r}: choose from {', '.join(STACKS)}")
    if "fleetserve" not in stacks:
        raise ValueError("--stacks must include fleetserve (the others are compared with it)")
    cores = CORES
    proxy_core, load_core = (cores[0], cores[1]) if len(cores) > 1 else (None, None)
    if load_core is not None:
        os.sched_setaffinity(0, {load_core})
    try:
        out: dict[str, Any] = {"proxy_core": proxy_core, "load_core": load_core,
                               "upstream_cores": sorted({upstream_core(k) for k in range(n_upstreams)}),
                               "cpu_count": os.cpu_count(),
                               "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        log(f"(a) throughput: proxy on core {proxy_core}, load generator on core {load_core}, "
            f"upstreams on {sorted({upstream_core(k) for k in range(n_upstreams)})}")
        haproxy = ensure_haproxy(log) if "haproxy" in stacks else None
        out["throughput"] = throughput_part(stacks, seconds, concurrency, n_upstreams, cpu_cap, haproxy,
                                            proxy_core, load_core, log)
        if latency_shares:
            out["latency"] = latency_part(stacks, out["throughput"], latency_shares, latency_rounds, seconds,
                                          haproxy, proxy_core, load_core, log)
        if tail:
            log(f"(b) tail latency: 4 upstreams, one 3x slower, {load_share:.0%} of their capacity")
            out["tail"] = tail_part(tail_seconds, slots, delay_ms, load_share, proxy_core, load_core, log)
    finally:
        if load_core is not None:
            os.sched_setaffinity(0, set(cores))
    return out
