"""`fleetserve bench-simulate`: the simulator against the real local fleet.

1. `fleetserve demo-fleet --scenario ramp` runs the real fleet (router, supervisor, autoscaler,
   pods as processes) under its load test, and records every autoscaler decision and the load
   test's latency per window.
2. `fleetserve simulate calibrate` measures one pod of the same kind alone.
3. The same scenario is simulated: the load test's own send times (redrawn from its profile and
   seed), the demo's autoscaler settings and target, the
   calibrated pod, the cold starts measured in the demo (from a scale-up decision to the pod's
   readiness; the simulated pods take them in the same order), the cores a starting pod takes from
   the host (the calibrated pod's CPU seconds over its start's seconds: the demo's pods share one
   machine), the router's endpoint-file poll as the discovery delay; several seeds, since one run
   of either kind is one draw.

Reported side by side: when pods were asked for and when they were ready or removed (the median
of the simulated runs, their range, and whether each moment lies within one decision interval
plus the longest measured cold start of the real one), and p99 per load-test window (the median
simulated / measured).
"""

from __future__ import annotations

import json
import math
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from fleetserve.benchmarks.fleet_demo import SCENARIOS, read_events, run_demo
from fleetserve.benchmarks.procs import pod, pod_cpu
from fleetserve.fleet.local_fleet import bundled_model
from fleetserve.loadtest.profile import parse_profile
from fleetserve.simulate.calibrate import calibrate
from fleetserve.simulate.scenario import from_dict
from fleetserve.simulate.simulator import simulate

RAMP, _, SERVE_ARGS, _, _ = SCENARIOS["ramp"]  # demo-fleet's ramp, as `fleetserve demo-fleet` runs it


def _moments(rows: list[dict[str, Any]], key: str, t0: float) -> tuple[list[float], list[float]]:
    """When (from t0) rows[key] first reached each level above its first value, and after its
    peak first fell to each level down to its last: a jump of two counts at both levels, so
    runs that took the steps one by one and at once line up."""
    values = [r[key] for r in rows]
    if not values:
        return [], []
    peak = max(values)
    top = values.index(peak)
    ups = [next(round(r["t"] - t0, 1) for r in rows if r[key] >= k) for k in range(values[0] + 1, peak + 1)]
    downs = [next(round(r["t"] - t0, 1) for r in rows[top:] if r[key] <= k)
             for k in range(peak - 1, values[-1] - 1, -1)]
    return ups, downs


def _median(values: list[float]) -> float:
    v = sorted(values)
    return round((v[(len(v) - 1) // 2] + v[len(v) // 2]) / 2, 1)


def _across(moments: list[list[float]]) -> tuple[list[float], list[list[float]]]:
    """Per level: the median over the simulated runs that reached it, and its range."""
    levels = max(map(len, moments), default=0)
    at = [[m[k] for m in moments if len(m) > k] for k in range(levels)]
    return [_median(v) for v in at], [[min(v), max(v)] for v in at]


def cold_starts(events: list[dict[str, Any]]) -> list[float]:
    """Seconds from each scale-up decision to the next rise of the ready count."""
    out = []
    for a, b in zip(events, events[1:]):
        if b["desired"] > a["desired"]:
            later = [e for e in events if e["t"] >= b["t"] and e["ready"] > b["ready"]]
            if later:
                out.append(later[0]["t"] - b["t"])
    return out


def run_sim_vs_fleet(out: Path, model: str | None = None, profile: str = RAMP, serve_args: str = SERVE_ARGS,
                     calibration_rates: tuple[float, ...] = (2, 4, 8, 12, 16, 24), seconds: float = 8.0,
                     seed: int = 0, host_cores: float | None = None, demo_dir: Path | None = None,
                     seeds: int = 8) -> dict[str, Any]:
    """`host_cores`: the cores the pods' engines share (default: this machine's; at this demo's few
    requests per second the router and the load generator take little). `demo_dir`: a finished
    demo-fleet ramp to compare with instead of running one. `seeds`: simulated runs (seeds
    `seed`, `seed` + 1, ...), compared by their median."""
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {seeds}")
    out.mkdir(parents=True, exist_ok=True)
    fresh = demo_dir is None
    if fresh:
        demo_dir = out / "fleet"
        run_demo("ramp", demo_dir, model, profile, None, None, 1, 3, serve_args, 30.0, 10.0)
    demo = json.loads((demo_dir / "summary.json").read_text())
    if "autoscaler" not in demo or "load_t0" not in demo:
        raise ValueError(f"{demo_dir}/summary.json lacks the autoscaler settings: an older demo-fleet wrote it; "
                         "run fleetserve demo-fleet --scenario ramp again")
    events = read_events(demo_dir / "fleet-events.jsonl")
    report = json.loads((demo_dir / "report.json").read_text())
    if fresh or not (out / "calibration.json").exists():
        print("calibrating one pod alone ...", file=sys.stderr, flush=True)
        launched = time.monotonic()
        with pod(model or bundled_model(), shlex.split(serve_args)) as (url, pid):
            # what the pod's start took from the host: on a shared host a starting pod slows the others
            start = {"seconds": round(time.monotonic() - launched, 3), "cpu_seconds": round(sum(pod_cpu(pid).values()), 3)}
            cal = calibrate(url, list(calibration_rates), seconds)
        cal["start"] = start
        (out / "calibration.json").write_text(json.dumps(cal, indent=1) + "\n")
    cal = json.loads((out / "calibration.json").read_text())
    if host_cores is None:
        host_cores = float(os.cpu_count() or 1)
    starts = cold_starts(events)
    start = cal.get("start")  # older calibrations lack it: starting pods then take no cores
    start_cores = round(min(start["cpu_seconds"] / start["seconds"], host_cores), 3) if start else 0.0
    # The real autoscaler ran (reading no load) from the fleet's start, load_t0 seconds before the
    # load: so does the simulated one, for whole load-test windows (5 s) so that windows line up.
    window = 5.0
    lead = window * math.ceil(demo["load_t0"] / window)
    # The load test's own send times, replayed: it draws them from its seed, so every real run of the
    # ramp sends the same sequence, and that draw (its quiet and busy seconds) moves the scale moments.
    sent = parse_profile(report.get("profile", profile)).arrivals(report.get("arrival", "poisson"),
                                                                  report.get("seed", 0))
    replayed = len(sent) == report["summary"]["overall"].get("sent_requests")
    if replayed:
        (out / "arrivals.txt").write_text("".join(f"{lead + t:.6f}\n" for t in sent))
    else:
        print(f"the load test's send times cannot be redrawn ({len(sent)} drawn, "
              f"{report['summary']['overall'].get('sent_requests')} sent): simulating fresh Poisson arrivals",
              file=sys.stderr, flush=True)
    traffic = {"profile": f"constant:0@{lead:g}s+{profile}"} | \
        ({"arrival_times_file": str(out / "arrivals.txt")} if replayed else {})
    data = {"name": "demo-fleet ramp", "traffic": traffic,
            "pods": {"calibration": str(out / "calibration.json"), "count": 1,
                     # the run's own starts, in order: which pod came up fast moves the later scale-ups
                     "cold_start": (",".join(f"{s:.2f}s" for s in starts) + "," if starts else "5s"),
                     "host_cores": host_cores, "start_cores": start_cores},
            "routers": {"replicas": 1, "policy": "p2c", "discovery_delay": "0.5s"},
            "autoscaler": {"target_per_pod": demo["target_per_pod"], **demo["autoscaler"]},
            "interval": 1.0, "window": window}
    # One simulated run is one draw, as one real run is: its scale moments move by several seconds
    # with the seed. The comparison takes the median over `seeds` runs, and shows their range.
    sims = [simulate(from_dict(data | {"seed": seed + k})) for k in range(seeds)]
    skip = round(lead / window)
    measured_windows = report["summary"]["windows"]
    rows = []
    for i, m in enumerate(measured_windows[:min(len(x["windows"]) for x in sims) - skip]):
        mp = m["e2el"]["p99"]
        sp = _median([x["windows"][skip + i]["p99_ms"] or 0.0 for x in sims]) or None
        rows.append({"start_s": i * window, "measured_p99_ms": mp, "simulated_p99_ms": sp,
                     "ratio": round(sp / mp, 3) if mp and sp else None})
    ratios = [r["ratio"] for r in rows if r["ratio"] is not None]
    after = [e for e in events if e["t"] >= demo["load_t0"]]
    measured = {key: _moments(after, key, demo["load_t0"]) for key in ("desired", "ready")}
    simulated = {key: [_moments([r for r in x["timeline"] if r["t"] >= lead], field, lead)[k] for x in sims]
                 for key, field, k in (("ups", "desired", 0), ("downs", "desired", 1), ("ready", "ready", 0))}
    bound = data["interval"] + (max(starts) if starts else 5.0)

    def compare(mine: list[float], theirs: list[list[float]]) -> dict[str, Any]:
        median, spread = _across(theirs)
        return {"measured": mine, "simulated": median, "simulated_range": spread,
                "within_bound": len(mine) == len(median) and all(abs(a - b) <= bound for a, b in zip(mine, median))}

    result = {
        "profile": profile, "serve_args": serve_args, "target_per_pod": demo["target_per_pod"], "host_cores": host_cores,
        "measured_cold_starts_s": [round(x, 2) for x in starts], "start_cores": start_cores,
        "arrivals_replayed": replayed,
        "calibration": cal["pods"],
        "calibration_fit": cal["fit"], "seeds": seeds, "bound_s": round(bound, 2),
        "scale_ups_at_s": compare(measured["desired"][0], simulated["ups"]),
        "scale_downs_at_s": compare(measured["desired"][1], simulated["downs"]),
        "ready_rises_at_s": compare(measured["ready"][0], simulated["ready"]),
        "p99_per_window": rows,
        "windows_within_25pct": sum(1 for r in ratios if abs(r - 1) <= 0.25), "windows_compared": len(ratios),
        "overall_p99_ms": {"measured": report["summary"]["overall"]["e2el"]["p99"],
                           "simulated": _median([x["overall"]["p99_ms"] for x in sims])},  # the lead has no requests
        "simulation": {k: sims[0][k] for k in ("overall", "pods", "littles_law")},
    }
    (out / "sim-vs-fleet.json").write_text(json.dumps(result, indent=1) + "\n")
    return result
