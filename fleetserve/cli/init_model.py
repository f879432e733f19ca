"""`fleetserve init-model`: a model directory with random weights at a preset shape."""

from __future__ import annotations

import argparse

HELP = "write a model directory with random weights at a preset shape"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="directory to write")
    p.add_argument("--preset", default="5m", help="tiny-llama, tiny-qwen2, 5m, qwen2.5-0.5b (default %(default)s)")
    p.add_argument("--no-weights", action="store_true", help="config and tokenizer only (serve with --load-format dummy)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (default %(default)s)")


def run(a: argparse.Namespace) -> None:
    from fleetserve.training.init_model import init_model

    out = init_model(a.out, a.preset, weights=not a.no_weights, seed=a.seed)
    print(f"wrote {a.preset} model to {out}" + (" (config and tokenizer only)" if a.no_weights else ""))
