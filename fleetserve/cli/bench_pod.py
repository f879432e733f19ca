"""`fleetserve bench-pod`: a pod over HTTP at saturation, per layout, against the offline engine."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "HTTP throughput at saturation per pod layout, as a ratio to the offline engine in the same run"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="models/correct-6m", help="model directory (default %(default)s)")
    p.add_argument("--frontends", default="0,1,2", help="--frontends settings to compare (default %(default)s)")
    p.add_argument("--async-scheduling", default="both", choices=["off", "on", "both"],
                   help="run each --frontends setting with the overlapped step loop off, on or both (default both)")
    p.add_argument("--rate", type=float, default=None,
                   help="offered requests/s, above what the pod can do (default: 1.25x the offline throughput)")
    p.add_argument("--seconds", type=float, default=20.0, help="measured seconds per layout (default %(default)s)")
    p.add_argument("--warmup", type=float, default=None,
                   help="seconds before measuring (default: time for 1.5 batches at the offline rate, at least 5)")
    p.add_argument("--max-num-seqs", type=int, default=64, help="slots of the pod and the offline engine "
                                                                "(default %(default)s)")
    p.add_argument("--serve-args", default="", help="more `fleetserve serve` options, e.g. '--load-format dummy'")
    p.add_argument("--profile", default=None, metavar="DIR",
                   help="sample every pod process with py-spy while measuring (first round); write per-layout "
                        "summaries here")
    p.add_argument("--rounds", type=int, default=1,
                   help="repeat offline + every layout this many times and report the median of the per-round "
                        "ratios, for shared hosts whose speed drifts (default %(default)s)")
    p.add_argument("--json", default=None, help="write the results as JSON here")


def run(a: argparse.Namespace) -> None:
    from fleetserve.benchmarks.pod import run_pod_bench

    frontends = [int(n) for n in a.frontends.split(",")]
    result = run_pod_bench(a.model, frontends, a.rate, a.seconds, a.max_num_seqs, a.serve_args.split(),
                           a.async_scheduling, a.warmup, a.profile, a.rounds)
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")
