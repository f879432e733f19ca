"""`fleetserve train-demo`: train the demo correction model, score it, write its model card."""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

from fleetserve.training import model_card
from fleetserve.training.recipe import Recipe, train


def train_demo(out: str | Path, corpus: str | Path, recipe: Recipe, eval_set: str | Path | None,
               progress: bool = True, from_main_phase: str | Path | None = None) -> dict:
    """Train into `out`; with `eval_set`, score the result on it and put the scores in the model card."""
    figures = train(out, corpus, recipe, progress, from_main_phase)
    scores = score_and_describe(out, figures, eval_set, progress)
    return {"training": figures, "scores": scores}


def score_and_describe(out: str | Path, figures: dict, eval_set: str | Path | None, progress: bool = True) -> dict | None:
    """Score the trained model on `eval_set` (if given) and (re)write its model card."""
    scores = None
    if eval_set is not None:
        from fleetserve.quality.evaluate import ModelCorrector, copy_source, evaluate, load_eval_set

        data = load_eval_set(eval_set)
        if progress:
            print(f"scoring on {data.name} ({len(data.sources)} sentences)", file=sys.stderr)
        result = evaluate(ModelCorrector(out), data, progress=progress)
        copy = copy_source(data)
        scores = {"eval_set": data.name, "model": str(out), "candidate": result.summary(),
                  "copy_source": copy.summary(), "machine": f"{platform.machine()}, {figures['threads']} threads"}
        (Path(out) / "eval.json").write_text(json.dumps(scores, indent=2) + "\n")
        if progress:
            print(f"GLEU {result.gleu:.2f} (copying the source: {copy.gleu:.2f})", file=sys.stderr)
    model_card.write(out, figures, scores)
    return scores
