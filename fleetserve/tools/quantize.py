"""`fleetserve quantize IN_DIR OUT_DIR`: write a compressed-tensors checkpoint with
8-bit channel-wise weights, optionally refusing to finish when the quantized model
corrects worse than the original (`--gate`).

The weights are those `--quantization` gives at load time (the same function makes
them), so serving the written checkpoint and quantizing on the fly agree exactly.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

SCHEMES = {"int8-channel": "int8", "fp8-channel": "fp8", "fp8-weight-channel": "fp8-weight"}
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


def write_quantized(in_dir: Path, out_dir: Path, scheme: str, groups: frozenset[str]) -> Path:
    """Quantize `in_dir` into `out_dir` (created; must not exist or be empty). Returns out_dir."""
    from fleetserve.model import compressed_tensors
    from fleetserve.model.config import ModelConfig
    from fleetserve.model.loader import DTYPES, load_model
    from fleetserve.model.quantization import QuantSpec
    from fleetserve.model.saver import save_model

    cfg = ModelConfig.from_dir(in_dir)
    if cfg.quantization_config:
        raise ValueError(f"{in_dir} is already quantized; quantize its float original")
    spec = QuantSpec(scheme, groups)
    # Unquantized tensors (embeddings, norms, any group left out) keep the checkpoint's dtype.
    dtype = cfg.torch_dtype if cfg.torch_dtype in DTYPES else "auto"
    model = load_model(in_dir, cfg, dtype=dtype, quantization=scheme, quantize_groups=tuple(groups))
    out_dir.mkdir(parents=True, exist_ok=True)
    save_model(model, out_dir)
    raw = json.loads((in_dir / "config.json").read_text())
    raw["quantization_config"] = compressed_tensors.quantization_config(spec)
    (out_dir / "config.json").write_text(json.dumps(raw, indent=2) + "\n")
    for f in in_dir.iterdir():  # tokenizer, generation config, chat template, model card
        if f.is_file() and f.name not in (*WEIGHT_FILES, "config.json") and not f.name.startswith("."):
            shutil.copy2(f, out_dir / f.name)
    return out_dir


def run_quantize(a: argparse.Namespace) -> int:
    """Returns the exit status: 1 when the gate fails (and nothing is left at OUT_DIR)."""
    from fleetserve.model.quantization import parse_groups

    in_dir, out_dir = Path(a.in_dir), Path(a.out_dir)
    if a.scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {a.scheme!r}; choose from {', '.join(SCHEMES)}")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(f"{out_dir} exists and is not empty; choose a new directory")
    groups = parse_groups(a.groups)
    if not groups:
        raise ValueError("--groups names no layer group; nothing would be quantized")
    # Written beside the destination first, so a failed gate leaves no checkpoint behind.
    work = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    print(f"quantizing {in_dir} -> {out_dir}: {a.scheme}, groups {','.join(sorted(groups))}", file=sys.stderr)
    try:
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
    p.add_argument("in_dir", help="float checkpoint (a Hugging Face model directory)")
    p.add_argument("out_dir", help="where to write the quantized checkpoint (new or empty directory)")
    p.add_argument("--scheme", default="int8-channel", choices=list(SCHEMES),
                   help="int8-channel for CPUs, fp8-channel for GPUs with float8, fp8-weight-channel for float8 "
                        "weights with unquantized activations (default %(default)s)")
    p.add_argument("--groups", default="attention,mlp",
                   help="layer groups to quantize: attention, mlp, lm_head (default %(default)s)")
    p.add_argument("--gate", action="store_true",
                   help="evaluate the result against the original and fail (exit 1, nothing written) when it "
                        "corrects worse")
    p.add_argument("--max-gleu-drop", type=float, default=0.5, help="gate: most GLEU points lost (default %(default)s)")
    p.add_argument("--min-agreement", type=float, default=None,
                   help="gate: least share (0..1) of outputs identical to the original's (default: not checked)")
    p.add_argument("--eval-set", default=None, help="gate: evaluation set directory (default ../shared/data/jfleg-dev)")
    p.add_argument("--limit", type=int, default=None, help="gate: only the first N sentences")
    p.add_argument("--show", type=int, default=20, help="disagreements printed when the gate fails (default %(default)s)")
