"""`fleetserve bench`: offline engine throughput on the reference workload, vs Hugging Face and CTranslate2."""

from __future__ import annotations

import argparse

from fleetserve.cli.engine_args import add_engine_arguments, engine_config

HELP = "offline throughput on the reference workload, vs Hugging Face generate and CTranslate2"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--num-prompts", type=int, default=64, help="requests for fleetserve (default %(default)s)")
    p.add_argument("--input-len", type=int, default=50, help="prompt tokens per request (default %(default)s)")
    p.add_argument("--output-len", type=int, default=50, help="tokens generated per request (default %(default)s)")
    p.add_argument("--baseline", default=None, metavar="LIST",
                   help="baselines run in the same run, comma-separated: hf (Hugging Face generate), ct2 "
                        "(CTranslate2, converted from the same checkpoint), none (default: hf,ct2; ct2 only "
                        "when the model has weight files)")
    p.add_argument("--ct2-compute-types", default="float32,int8",
                   help="CTranslate2 compute types run (default %(default)s)")
    p.add_argument("--ct2-batch-sizes", default="16,64", help="batch sizes tried for CTranslate2; the best counts")
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
