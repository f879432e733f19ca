"""`fleetserve bench-slo`: its options and what runs it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from fleetserve.benchmarks.slo import run_slo_bench

HELP = ('ramp one pod and report the highest rate and '
        "concurrency that meet an SLO: the autoscaler's target_per_pod")


def add_arguments(p) -> None:
    p.add_argument("url", help="a pod's base URL, e.g. http://127.0.0.1:8100")
    p.add_argument("--slo", default="p99_e2el<1s", help="objectives every step must meet (default %(default)s)")
    p.add_argument("--start-rate", type=float, default=2.0, help="first step's requests/s (default %(default)s)")
    p.add_argument("--growth", type=float, default=1.25, help="each step's rate over the last (default %(default)s)")
    p.add_argument("--max-rate", type=float, default=10_000.0,
                   help="stop ramping at this rate (default %(default)s)")
    p.add_argument("--step-seconds", type=float, default=10.0, help="seconds per step (default %(default)s)")
    p.add_argument("--endpoint", choices=["completions", "chat", "correct"], default="completions",
                   help="API the requests go to (default %(default)s)")
    p.add_argument("--prompts", default=None, help="one prompt per line (default: the reference workload)")
    p.add_argument("--max-tokens", type=int, default=50,
                   help="completion tokens asked for (default %(default)s)")
    p.add_argument("--json", default=None, help="save the result here (fleetserve up --target-from reads it)")


def run(a) -> None:
    base = {"endpoint": a.endpoint, "prompts": a.prompts, "max_tokens": a.max_tokens}
    out = run_slo_bench(a.url, a.slo, a.start_rate, a.growth, a.max_rate, a.step_seconds, base)
    text = json.dumps(out, indent=1)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(text + "\n")
    print(f"highest rate meeting {a.slo}: {out['max_rate']:g}/s with {out['target_per_pod']:g} in flight "
          f"(target_per_pod)", file=sys.stderr)
    print(text)
