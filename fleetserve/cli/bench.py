"""`fleetserve bench`: offline engine throughput on the reference workload, vs Hugging Face."""

from __future__ import annotations

import argparse

from fleetserve.cli.engine_args import add_engine_arguments, engine_config

HELP = "offline throughput on the reference workload, vs Hugging Face generate"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--num-prompts", type=int, default=64, help="requests for fleetserve (default %(default)s)")
    p.add_argument("--input-len", type=int, default=50, help="prompt tokens per request (default %(default)s)")
    p.add_argument("--output-len", type=int, default=50, help="tokens generated per request (default %(default)s)")
    p.add_argument("--baseline", choices=["hf", "none"], default="hf", help="also run Hugging Face generate")
    p.add_argument("--hf-batch-sizes", default="1,16,64", help="batch sizes tried for the baseline; the best counts")
    p.add_argument("--hf-max-requests", type=int, default=64,
                   help="requests per baseline batch size (fewer for batch 1 on big models: see --hf-batch1-requests)")
    p.add_argument("--hf-batch1-requests", type=int, default=8, help="requests for the batch-size-1 baseline")
    p.add_argument("--repeat", type=int, default=1, help="timed runs of fleetserve; the best counts")
    p.add_argument("--json", default=None, help="write the results as JSON here")
    add_engine_arguments(p)


def run(a: argparse.Namespace) -> None:
    from fleetserve.benchmarks.offline import run_bench

    run_bench(a, engine_config(a))
