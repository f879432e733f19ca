"""`fleetserve bench-slo URL --slo 'p99_e2el<1s'`:
how much load one pod takes while meeting an SLO, which is what the autoscaler's
`target_per_pod` should be.

Open-loop steps of rising rate (each a separate `fleetserve loadtest` run of
`--step-seconds`), growing by `--growth` until a step misses an objective. The
result is the highest rate that met every objective and the concurrency the pod
held there: requests in flight = achieved rate x mean end-to-end latency
(Little's law, which holds for any stable queue). `fleetserve up --target-from
FILE` reads `target_per_pod` from the saved JSON.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from fleetserve.loadtest.runner import LoadTestOptions, run_loadtest
from fleetserve.loadtest.slo import parse_slo


def step(url: str, rate: float, seconds: float, base: dict[str, Any]) -> dict[str, Any]:
    rep, _ = run_loadtest(LoadTestOptions(url=url, profile=f"constant:{rate:g}@{seconds:g}s", window=seconds,
                                          progress=False, **base))
    o = rep["summary"]["overall"]
    mean_s = (o["e2el"]["mean"] or 0.0) / 1e3
    return {"rate": rate, "offered": o["offered_rate"], "achieved": o["request_throughput"],
            "completed": o["completed_requests"], "errors": sum(o["errors"].values()),
            "p50_e2el_ms": o["e2el"]["median"], "p99_e2el_ms": o["e2el"]["p99"], "mean_e2el_ms": o["e2el"]["mean"],
            "concurrency": round(o["request_throughput"] * mean_s, 2), "summary": o}


def run_slo_bench(url: str, slo: str, start_rate: float = 2.0, growth: float = 1.25, max_rate: float = 10_000,
                  step_seconds: float = 10.0, base: dict[str, Any] | None = None, quiet: bool = False) -> dict[str, Any]:
    objectives = parse_slo(slo)
    if not objectives:
        raise ValueError("--slo: give at least one objective, e.g. 'p99_e2el<1s'")
    if growth <= 1 or start_rate <= 0:
        raise ValueError("--growth must be above 1 and --start-rate positive")
    base = base or {}
    steps, best = [], None
    rate = start_rate
    while rate <= max_rate:
        s = step(url, rate, step_seconds, base)
        misses = [o.text for o in objectives if o.met(s["summary"]) is not True]
        # answers are counted where they complete, so a step's achieved rate trails its arrivals by
        # one latency; 80% of what was actually offered (Poisson varies) still means keeping up
        kept_up = s["achieved"] >= 0.8 * s["offered"]
        s["met"] = not misses and kept_up and s["errors"] == 0
        s["missed"] = misses + ([] if kept_up else ["achieved < 80% of offered"]) + \
            ([f"{s['errors']} errors"] if s["errors"] else [])
        del s["summary"]
        steps.append(s)
        if not quiet:
            print(f"{rate:9.2f}/s: achieved {s['achieved']:8.2f}/s, p50 {s['p50_e2el_ms']} ms, p99 "
                  f"{s['p99_e2el_ms']} ms, in flight {s['concurrency']:6.2f} -> "
                  f"{'meets the SLO' if s['met'] else 'misses: ' + '; '.join(s['missed'])}", file=sys.stderr,
                  flush=True)
        if not s["met"]:
            break
        best = s
        rate = round(rate * growth, 2)
    return {"url": url, "slo": slo, "step_seconds": step_seconds, "steps": steps,
            # what was actually sent (Poisson arrivals), not the step's nominal rate
            "max_rate": best["offered"] if best else 0.0,
            "p99_e2el_ms_at_max": best["p99_e2el_ms"] if best else None,
            # the concurrency held while meeting the SLO, rounded down so a fleet sized on it keeps the margin
            "target_per_pod": math.floor(best["concurrency"] * 10) / 10 if best else 0.0}
