"""`fleetserve eval`: score a correction system and, with a baseline, gate it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fleetserve.quality.evaluate import EvalResult, copy_source, corrector_for, evaluate, load_eval_set
from fleetserve.quality.gate import check, disagreements
from fleetserve.shared_data import default_eval_set

HELP = 'score a correction model or server (GLEU on JFLEG dev); with --baseline, the quality gate'


def _line(label: str, r: EvalResult) -> str:
    speed = f", {r.sentences / r.seconds:.1f} sentences/s" if r.seconds else ""
    return (f"{label:<10} GLEU {r.gleu:6.2f} (±{r.gleu_std:.2f})  sentence GLEU {r.sentence_gleu:6.2f}  "
            f"unchanged {r.unchanged:6.1%}  {r.seconds:.0f} s{speed}  [{r.system}]")


def run(a: argparse.Namespace) -> int:
    """Returns the exit status: 1 when a gate objective fails."""
    from fleetserve.cli.engine_args import quantize_groups

    gating = a.max_gleu_drop is not None or a.min_agreement is not None
    if gating and a.baseline is None:
        raise ValueError("--max-gleu-drop and --min-agreement need --baseline to compare against")
    eval_set = load_eval_set(a.set or default_eval_set()).head(a.limit)
    engine = dict(max_num_seqs=a.max_num_seqs, max_model_len=a.max_model_len, device=a.device)
    print(f"evaluating on {eval_set.name}: {len(eval_set.sources)} sentences, "
          f"{len(eval_set.references)} references each", file=sys.stderr)

    copy = copy_source(eval_set)
    candidate = evaluate(corrector_for(a.system, dtype=a.dtype, quantization=a.quantization,
                                       quantize_groups=quantize_groups(a.quantize_groups), **engine),
                         eval_set, progress=True)
    baseline = None
    if a.baseline is not None:
        baseline = evaluate(corrector_for(a.baseline, dtype=a.baseline_dtype, quantization=a.baseline_quantization,
                                          quantize_groups=quantize_groups(a.baseline_quantize_groups), **engine),
                            eval_set, progress=True)

    print(_line("copy", copy))
    print(_line("candidate", candidate))
    report = {"eval_set": eval_set.name, "copy_source": copy.summary(), "candidate": candidate.summary()}
    status = 0
    if baseline is not None:
        print(_line("baseline", baseline))
        gate = check(candidate, baseline, a.max_gleu_drop, a.min_agreement)
        print(f"agreement with the baseline: {gate.agreement:.1%} of sentences identical; "
              f"GLEU change {-gate.gleu_drop:+.2f}")
        report |= {"baseline": baseline.summary(), "agreement": gate.agreement, "gleu_drop": gate.gleu_drop,
                   "gate": {"max_gleu_drop": a.max_gleu_drop, "min_agreement": a.min_agreement,
                            "failures": gate.failures}}
        if gating:
            if gate.passed:
                print("quality gate: PASSED")
            else:
                status = 1
                print("quality gate: FAILED")
                for f in gate.failures:
                    print(f"  - {f}")
                print("\nSentences where the candidate and the baseline disagree:\n")
                print(disagreements(eval_set.sources, candidate, baseline, a.show))
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=2) + "\n")
    if a.outputs:
        Path(a.outputs).write_text("\n".join(candidate.outputs) + "\n")
    return status


def add_arguments(p: argparse.ArgumentParser) -> None:
    from fleetserve.model.quant_groups import AUTO_HELP

    p.add_argument("system", help="model directory, server URL (http://host:port) or a file of outputs")
    p.add_argument("--set", default=None, help="evaluation set directory: *.src and *.ref0.. (default: ../shared/data/jfleg-dev)")
    p.add_argument("--limit", type=int, default=None, help="only the first N sentences")
    p.add_argument("--baseline", default=None, help="another system to compare with (directory, URL or outputs file)")
    p.add_argument("--max-gleu-drop", type=float, default=None, help="gate: fail when GLEU falls more than this below the baseline")
    p.add_argument("--min-agreement", type=float, default=None, help="gate: fail when fewer than this share of outputs (0..1) equal the baseline's")
    p.add_argument("--show", type=int, default=20, help="disagreements printed when the gate fails (default %(default)s)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"], help="candidate model dtype")
    p.add_argument("--baseline-dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"], help="baseline model dtype")
    for who, prefix in (("candidate", ""), ("baseline", "baseline-")):
        p.add_argument(f"--{prefix}quantization", default="auto", choices=["auto", "none", "int8", "fp8", "fp8-weight"],
                       help=f"{who} model: quantize a float checkpoint's weights as it loads (as `serve`; "
                            "default %(default)s: as stored)")
        p.add_argument(f"--{prefix}quantize-groups", default="auto", metavar="GROUPS",
                       help=f"{who} model: groups for --{prefix}quantization, or {AUTO_HELP} (default %(default)s)")
    p.add_argument("--max-num-seqs", type=int, default=64, help="slots when running a model directory (default %(default)s)")
    p.add_argument("--max-model-len", type=int, default=256, help="context per slot, as `serve` (default %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N for model directories, as `serve`")
    p.add_argument("--json", default=None, help="write every figure here")
    p.add_argument("--outputs", default=None, help="write the candidate's (tokenised) outputs here, one per line")
