"""`fleetserve quantize IN_DIR OUT_DIR`: write a compressed-tensors checkpoint with
8-bit channel-wise weights, optionally refusing to finish when the quantized model
corrects worse than the original (`--gate`).

The weights are those `--quantization` gives at load time (the same function makes
them), so serving the written checkpoint and quantizing on the fly agree exactly.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

HELP = ('write a compressed-tensors checkpoint with 8-bit channel-wise '
        'weights; --gate refuses one that corrects worse than the original')

SCHEMES = {"int8-channel": "int8", "fp8-channel": "fp8", "fp8-weight-channel": "fp8-weight"}


def run(a: argparse.Namespace) -> int:
    """Returns the exit status: 1 when the gate fails (and nothing is left at OUT_DIR)."""
    from fleetserve.model.quant_groups import parse_groups

    in_dir, out_dir = Path(a.in_dir), Path(a.out_dir)
    if a.scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {a.scheme!r}; choose from {', '.join(SCHEMES)}")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(f"{out_dir} exists and is not empty; choose a new directory")
    groups = parse_groups(a.groups, SCHEMES[a.scheme])
    if not groups:
        raise ValueError("--groups names no layer group; nothing would be quantized")
    # Written beside the destination first, so a failed gate leaves no checkpoint behind.
    work = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    print(f"quantizing {in_dir} -> {out_dir}: {a.scheme}, groups {','.join(sorted(groups))}", file=sys.stderr)
    try:
        from fleetserve.model.saver import write_quantized

        write_quantized(in_dir, work, SCHEMES[a.scheme], groups)
        if a.gate and not _gate(work, in_dir, a):
            shutil.rmtree(work, ignore_errors=True)
            return 1
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if out_dir.exists():
        out_dir.rmdir()
    work.rename(out_dir)
    print(f"wrote {out_dir}", file=sys.stderr)
    return 0


def _gate(candidate_dir: Path, baseline_dir: Path, a: argparse.Namespace) -> bool:
    from fleetserve.quality.evaluate import corrector_for, evaluate, load_eval_set
    from fleetserve.quality.gate import check, disagreements
    from fleetserve.shared_data import default_eval_set

    eval_set = load_eval_set(a.eval_set or default_eval_set()).head(a.limit)
    print(f"quality gate on {eval_set.name} ({len(eval_set.sources)} sentences): quantized vs original",
          file=sys.stderr)
    candidate = evaluate(corrector_for(str(candidate_dir)), eval_set, progress=True)
    baseline = evaluate(corrector_for(str(baseline_dir)), eval_set, progress=True)
    gate = check(candidate, baseline, a.max_gleu_drop, a.min_agreement)
    print(f"GLEU {baseline.gleu:.2f} -> {candidate.gleu:.2f} (change {-gate.gleu_drop:+.2f}); "
          f"{gate.agreement:.1%} of outputs identical")
    if gate.passed:
        print("quality gate: PASSED")
        return True
    print("quality gate: FAILED; no checkpoint written")
    for f in gate.failures:
        print(f"  - {f}")
    print("\nSentences where the quantized model and the original disagree:\n")
    print(disagreements(eval_set.sources, candidate, baseline, a.show))
    return False


def add_arguments(p: argparse.ArgumentParser) -> None:
    from fleetserve.model.quant_groups import AUTO_HELP

    p.add_argument("in_dir", help="float checkpoint (a Hugging Face model directory)")
    p.add_argument("out_dir", help="where to write the quantized checkpoint (new or empty directory)")
    p.add_argument("--scheme", default="int8-channel", choices=list(SCHEMES),
                   help="int8-channel for CPUs, fp8-channel for GPUs with float8, fp8-weight-channel for float8 "
                        "weights with unquantized activations (default %(default)s)")
    # Not `auto` (serve's int8 default adds the lm_head): vLLM does not load a quantized lm_head
    # from a compressed-tensors checkpoint, and this file is meant to be served there too.
    p.add_argument("--groups", default="attention,mlp",
                   help=f"layer groups to quantize: attention, mlp, lm_head, comma-separated, or {AUTO_HELP} "
                        "(default %(default)s: what vLLM also loads; with lm_head only fleetserve serves it)")
    p.add_argument("--gate", action="store_true",
                   help="evaluate the result against the original and fail (exit 1, nothing written) when it "
                        "corrects worse")
    p.add_argument("--max-gleu-drop", type=float, default=0.5, help="gate: most GLEU points lost (default %(default)s)")
    p.add_argument("--min-agreement", type=float, default=None,
                   help="gate: least share (0..1) of outputs identical to the original's (default: not checked)")
    p.add_argument("--eval-set", default=None, help="gate: evaluation set directory (default ../shared/data/jfleg-dev)")
    p.add_argument("--limit", type=int, default=None, help="gate: only the first N sentences")
    p.add_argument("--show", type=int, default=20, help="disagreements printed when the gate fails (default %(default)s)")
