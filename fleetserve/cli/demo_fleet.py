"""`fleetserve demo-fleet`: its options and what runs it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from fleetserve.fleet.local_fleet import bundled_model
from fleetserve.benchmarks.fleet_demo import SCENARIOS, run_demo

HELP = ('fleetserve up under a load test: pods added on a ramp and removed '
        'after it, or a pod killed under load (--scenario chaos); plots and checks')


def add_arguments(p) -> None:
    p.add_argument("--scenario", choices=list(SCENARIOS), default="ramp",
                   help="ramp: pods follow a load ramp; chaos: a pod is killed under load; contention: a busy host (default %(default)s)")
    p.add_argument("--out", default="build/demo-fleet", help="where reports go (default %(default)s)")
    p.add_argument("--model", default=None, help="default: the bundled model")
    p.add_argument("--profile", default=None,
                   help="load profile (default: ramp 2..18/s over 60 s, hold 30 s, 2/s for 90 s; chaos: 8/s for 60 s; "
                        "contention: ramp 1..20/s over 20 s, hold 40 s)")
    p.add_argument("--target-per-pod", type=float, default=None,
                   help="default: ramp, sized so that the profile's peak holds 2.5 pods' worth in flight, from one "
                        "pod's latency measured at the profile's first rate; others, fleetserve up's default (16)")
    p.add_argument("--target-from", default=None, metavar="FILE", help="a saved fleetserve bench-slo result")
    p.add_argument("--min", type=int, default=1, dest="min_pods",
                   help="fewest pods (default %(default)s)")
    p.add_argument("--max", type=int, default=None, dest="max_pods",
                   help="most pods (default: ramp and chaos 3; contention: fleetserve up's default)")
    p.add_argument("--serve-args", default=None,
                   help="pod options (default: ramp and chaos '--frontends 0 --threads 1 --max-num-seqs 16', one core "
                        "per pod, so pods add capacity on a small machine; contention: none, the main job's pods)")
    p.add_argument("--scale-down-window", type=float, default=30.0,
                   help="the autoscaler's scale-down window in seconds (default %(default)s)")
    p.add_argument("--scale-down-period", type=float, default=10.0,
                   help="seconds between scale-downs (default %(default)s)")
    p.add_argument("--endpoint", choices=["completions", "chat", "correct"], default=None,
                   help="default: completions (ramp, chaos), correct (contention)")
    p.add_argument("--prompts", default=None,
                   help="one prompt per line (default: the reference workload; contention: the bundled model's "
                        "held-out sentences)")
    p.add_argument("--busy", type=int, default=None,
                   help="busy-loop processes running during the load test (default: 0; contention: one per core)")


def run(a) -> None:
    profile, endpoint, serve_args, max_pods, busy = SCENARIOS[a.scenario]
    if busy is None:
        busy = len(os.sched_getaffinity(0))
    prompts = a.prompts
    if prompts is None and a.scenario == "contention":
        prompts = str(Path(a.model or bundled_model()) / "heldout.txt")
    r = run_demo(a.scenario, Path(a.out), a.model, a.profile or profile, a.target_per_pod, a.target_from, a.min_pods,
                 a.max_pods or max_pods, serve_args if a.serve_args is None else a.serve_args, a.scale_down_window,
                 a.scale_down_period, endpoint=a.endpoint or endpoint, prompts=prompts,
                 busy=busy if a.busy is None else a.busy)
    print(json.dumps(r, indent=1))
    sys.exit(0 if r["passed"] else 1)
