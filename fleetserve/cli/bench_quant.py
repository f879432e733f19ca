"""`fleetserve bench-quant`: 8-bit product paths and engine throughput per precision."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = ("8-bit matrix-product paths at the model's shapes, and engine throughput per precision "
        "(float32, bfloat16, int8 by group)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--load-format", choices=["auto", "safetensors", "dummy"], default="auto",
                   help="'dummy': random weights at the config's shape")
    p.add_argument("--max-num-seqs", type=int, default=32, help="slots (default %(default)s)")
    p.add_argument("--requests", type=int, default=None, help="requests per timed run (default: one per slot)")
    p.add_argument("--rounds", type=int, default=2,
                   help="every variant this many times, interleaved; the median counts (default %(default)s)")
    p.add_argument("--no-bfloat16", action="store_true",
                   help="leave out the bfloat16 engine variants (on a CPU without bfloat16 hardware they run at "
                        "about a third of float32's speed and take most of the run)")
    p.add_argument("--json", default=None, help="write the results as JSON here")


def run(a: argparse.Namespace) -> None:
    from fleetserve.benchmarks.quant import run_quant_bench

    result = run_quant_bench(a.model, a.load_format, a.max_num_seqs, a.requests, a.rounds,
                             bfloat16=not a.no_bfloat16)
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")
