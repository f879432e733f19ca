"""`fleetserve train-demo`: train the bundled grammar-correction model from the corpus."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "train the bundled grammar-correction model from the corpus (CPU, about an hour)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--corpus", default=None, help="clean sentences, one per line (default: ../shared/data/corpus/wordnet-examples.txt)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps of the main phase (default: the recipe's, 6000)")
    p.add_argument("--batch-size", type=int, default=None, help="pairs per step (default: the recipe's, 32)")
    p.add_argument("--conservative-steps", type=int, default=None,
                   help="steps of the second, conservative phase (more clean pairs, fewer errors; "
                        "default: the recipe's, 1500)")
    p.add_argument("--from-main-phase", default=None, metavar="DIR",
                   help="skip the main phase: start from a model this command wrote with --conservative-steps 0")
    p.add_argument("--seed", type=int, default=0, help="seed of the pairs, the initial weights and the batches")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--eval-set", default=None, help="score the model on this set for its model card (default: JFLEG dev)")
    p.add_argument("--no-eval", action="store_true", help="skip scoring")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def run(a: argparse.Namespace) -> None:
    from fleetserve.shared_data import default_corpus, default_eval_set
    from fleetserve.training.demo import train_demo
    from fleetserve.training.recipe import Recipe

    given = {"steps": a.steps, "batch_size": a.batch_size, "conservative_steps": a.conservative_steps}
    recipe = Recipe(seed=a.seed, threads=a.threads, **{k: v for k, v in given.items() if v is not None})
    eval_set = None if a.no_eval else (a.eval_set or default_eval_set())
    if eval_set is not None and not Path(eval_set).is_dir():
        print(f"fleetserve: note: no evaluation set at {eval_set}; the model card will have no scores", file=sys.stderr)
        eval_set = None
    train_demo(a.out, a.corpus or default_corpus(), recipe, eval_set, progress=not a.quiet,
               from_main_phase=a.from_main_phase)
