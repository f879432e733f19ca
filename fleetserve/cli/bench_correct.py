"""`fleetserve bench-correct`: correction traffic offline and at the SLO, speculation off and on."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from fleetserve.cli.engine_args import add_engine_arguments, engine_config

HELP = ("the real workload: sentences corrected offline and by each pod layout at rising rates until "
        "the SLO is missed, speculative decoding off and on side by side")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="models/correct-6m", help="model directory (default %(default)s)")
    p.add_argument("--sentences", type=int, default=None,
                   help="use the first N sentences (default: all held-out lines and JFLEG dev)")
    p.add_argument("--max-num-seqs", type=int, default=64, help="slots of the offline engine (default %(default)s)")
    p.add_argument("--speculative", default="off,input", help="settings compared (default %(default)s)")
    p.add_argument("--frontends", default="0,1",
                   help="pod layouts ramped over HTTP, comma-separated: F (F frontend processes, 0 the one-process "
                        "pod, the pod's default engine cores) or F/E (and E engine cores); empty: offline only "
                        "(default %(default)s)")
    p.add_argument("--slo", default="p99_e2el<1s", help="objectives every step must meet (default %(default)s)")
    p.add_argument("--start-rate", type=float, default=4.0, help="first step's requests/s (default %(default)s)")
    p.add_argument("--growth", type=float, default=1.3, help="each step's rate over the last (default %(default)s)")
    p.add_argument("--step-seconds", type=float, default=8.0, help="seconds per step (default %(default)s)")
    p.add_argument("--busy", default="0",
                   help="busy-loop processes spinning during each ramp, comma-separated: 0,2 ramps every pod on a "
                        "quiet host and with two busy loops (default %(default)s)")
    p.add_argument("--serve-args", default="",
                   help="more `fleetserve serve` options for the pods; its engine options (--dtype, --device, "
                        "--quantization ...) apply to the offline engine too, except --max-num-seqs and --speculative")
    p.add_argument("--json", default=None, help="write the results as JSON here")


def run(a: argparse.Namespace) -> None:
    from fleetserve.benchmarks.correct import run_bench_correct

    modes = [m for m in a.speculative.split(",") if m]
    layouts = [f for f in a.frontends.split(",") if f]
    serve_args = a.serve_args.split()
    result = run_bench_correct(a.model, a.sentences, a.max_num_seqs, modes, layouts, a.slo, a.start_rate,
                               a.growth, a.step_seconds, serve_args, [int(n) for n in a.busy.split(",") if n],
                               offline_engine_args(serve_args))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(result, indent=1) + "\n")


def offline_engine_args(serve_args: list[str]) -> dict[str, Any]:
    """The engine settings `serve_args` give, for the offline engine (the pods take them all, so
    both parts run the same engine: `--serve-args '--device cuda'` benchmarks a GPU)."""
    parser = argparse.ArgumentParser(prog="fleetserve bench-correct --serve-args", add_help=False)
    add_engine_arguments(parser)
    known, _ = parser.parse_known_args(serve_args)  # the pod's own options (--frontends, --port ...) are not the engine's
    settings = dataclasses.asdict(engine_config(known))
    for own in ("max_num_seqs", "speculative"):  # the offline part's, from bench-correct's own options
        del settings[own]
    return settings
