"""`fleetserve bench-simulate`: the simulator against the real local fleet.

1. `fleetserve demo-fleet --scenario ramp` runs the real fleet (router, supervisor, autoscaler,
   pods as processes) under its load test, and records every autoscaler decision and the load
   test's latency per window.
2. `fleetserve simulate calibrate` measures one pod of the same kind alone.
3. The same scenario is simulated: the demo's profile, autoscaler settings and target, the
   calibrated pod, the cold start measured in the demo (from a scale-up decision to the pod's
   readiness), the router's endpoint-file poll as the discovery delay.

Reported side by side: when pods were asked for and when they were ready or removed, and p99 per
load-test window (simulated / measured).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from fleetserve.benchmarks.fleet_demo import SCENARIOS, read_events, run_demo
from fleetserve.benchmarks.procs import pod
from fleetserve.fleet.local_fleet import bundled_model
from fleetserve.simulate.calibrate import calibrate
from fleetserve.simulate.scenario import from_dict
from fleetserve.simulate.simulator import simulate

RAMP, _, SERVE_ARGS, _, _ = SCENARIOS["ramp"]  # demo-fleet's ramp, as `fleetserve demo-fleet` runs it


def _moments(rows: list[dict[str, Any]], key: str, t0: float) -> tuple[list[float], list[float]]:
    """Times (from t0) at which rows[key] went up, and went down."""
    ups = [round(b["t"] - t0, 1) for a, b in zip(rows, rows[1:]) if b[key] > a[key]]
    downs = [round(b["t"] - t0, 1) for a, b in zip(rows, rows[1:]) if b[key] < a[key]]
    return ups, downs


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
                     seed: int = 0, host_cores: float | None = None, demo_dir: Path | None = None) -> dict[str, Any]:
    """`host_cores`: the cores the pods' engines share (default: this machine's; at this demo's few
    requests per second the router and the load generator take little). `demo_dir`: a finished
    demo-fleet ramp to compare with instead of running one."""
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
        with pod(model or bundled_model(), shlex.split(serve_args)) as (url, _):
            cal = calibrate(url, list(calibration_rates), seconds)
        (out / "calibration.json").write_text(json.dumps(cal, indent=1) + "\n")
    cal = json.loads((out / "calibration.json").read_text())
    if host_cores is None:
        host_cores = float(os.cpu_count() or 1)
    starts = cold_starts(events)
    data = {"name": "demo-fleet ramp", "traffic": {"profile": profile},
            "pods": {"calibration": str(out / "calibration.json"), "count": 1,
                     "cold_start": (f"{min(starts):.2f}s..{max(starts):.2f}s" if starts else "5s"),
                     "host_cores": host_cores},
            "routers": {"replicas": 1, "policy": "p2c", "discovery_delay": "0.5s"},
            "autoscaler": {"target_per_pod": demo["target_per_pod"], **demo["autoscaler"]},
            "interval": 1.0, "window": 5.0, "seed": seed}
    sim = simulate(from_dict(data))
    measured_windows = report["summary"]["windows"]
    rows = []
    for m, s in zip(measured_windows, sim["windows"]):
        mp, sp = m["e2el"]["p99"], s["p99_ms"]
        rows.append({"start_s": s["start_s"], "measured_p99_ms": mp, "simulated_p99_ms": sp,
                     "ratio": round(sp / mp, 3) if mp and sp else None})
    ratios = [r["ratio"] for r in rows if r["ratio"] is not None]
    result = {
        "profile": profile, "serve_args": serve_args, "target_per_pod": demo["target_per_pod"], "host_cores": host_cores,
        "measured_cold_starts_s": [round(x, 2) for x in starts], "calibration": cal["pods"],
        "calibration_fit": cal["fit"],
        "scale_ups_at_s": {"measured": demo["scale_ups_at_s"], "simulated": _moments(sim["timeline"], "desired", 0)[0]},
        "scale_downs_at_s": {"measured": demo["scale_downs_at_s"],
                             "simulated": _moments(sim["timeline"], "desired", 0)[1]},
        "ready_rises_at_s": {"measured": _moments(events, "ready", demo["load_t0"])[0],
                             "simulated": _moments(sim["timeline"], "ready", 0)[0]},
        "p99_per_window": rows,
        "windows_within_25pct": sum(1 for r in ratios if abs(r - 1) <= 0.25), "windows_compared": len(ratios),
        "overall_p99_ms": {"measured": report["summary"]["overall"]["e2el"]["p99"], "simulated": sim["overall"]["p99_ms"]},
        "simulation": {k: sim[k] for k in ("overall", "pods", "littles_law")},
    }
    (out / "sim-vs-fleet.json").write_text(json.dumps(result, indent=1) + "\n")
    return result
