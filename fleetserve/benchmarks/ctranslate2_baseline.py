"""CTranslate2, the generator a user would pick for CPU inference, as a baseline to beat.

The same checkpoint is converted (float32, and int8 with CTranslate2's own per-channel
weights) and run on the same prompts, greedy, exactly `output_len` new tokens each (end of
sequence suppressed until then, as `ignore_eos` does for our engine), at several batch sizes;
the best counts, as for Hugging Face `generate`. Conversions are kept next to the model
(`<model>/ctranslate2-<type>`) and redone when the checkpoint is newer.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

COMPUTE_TYPES = ("float32", "int8")


def _import() -> Any:
    try:
        import ctranslate2
    except ImportError:
        raise SystemExit("the CTranslate2 baseline needs ctranslate2: pip install -r requirements-dev.txt") from None
    return ctranslate2


def converted(model_dir: Path, compute_type: str, out_root: Path | None = None) -> Path:
    """The CTranslate2 conversion of `model_dir` stored as `compute_type`, made if missing or stale."""
    ctranslate2 = _import()
    weights = sorted(model_dir.glob("*.safetensors"))
    if not weights:
        raise SystemExit(f"the CTranslate2 baseline converts the checkpoint, and {model_dir} has no weights: "
                         "make one with `fleetserve init-model` (without --no-weights)")
    out = (out_root or model_dir) / f"ctranslate2-{compute_type}"
    newest = max(p.stat().st_mtime for p in weights + [model_dir / "config.json"])
    if (out / "model.bin").is_file() and (out / "model.bin").stat().st_mtime >= newest:
        return out
    print(f"converting {model_dir} to CTranslate2 ({compute_type}) ...", file=sys.stderr, flush=True)
    conv = ctranslate2.converters.TransformersConverter(str(model_dir), low_cpu_mem_usage=True)
    conv.convert(str(out), quantization=compute_type, force=True)
    config = json.loads((out / "config.json").read_text())
    if config.get("bos_token") is None:
        # CTranslate2 refuses a model without a bos token name, which ours lack; every prompt here
        # comes with its own start tokens, so naming the eos token changes nothing generated.
        (out / "config.json").write_text(json.dumps({**config, "bos_token": config["eos_token"]}, indent=2))
    return out


def bench_ct2(model_dir: Path, prompts: list[list[int]], output_len: int, batch_sizes: list[int],
              max_requests: int, compute_types: tuple[str, ...] = COMPUTE_TYPES,
              threads: int | None = None) -> dict[str, Any]:
    """Requests per second of CTranslate2 on `prompts` (token ids of the model's vocabulary), per
    compute type: {type: {"by_batch_size", "best_batch_size", "requests_per_s", ...}}."""
    ctranslate2 = _import()
    threads = threads or len(os.sched_getaffinity(0))
    out: dict[str, Any] = {"version": ctranslate2.__version__, "threads": threads}
    for ct in compute_types:
        path = converted(model_dir, ct)
        vocab = json.loads((path / "vocabulary.json").read_text())
        tokens = [[vocab[i] for i in p] for p in prompts]
        gen = ctranslate2.Generator(str(path), device="cpu", compute_type=ct, intra_threads=threads, inter_threads=1)
        kwargs = dict(max_length=output_len, min_length=output_len, sampling_topk=1, beam_size=1,
                      include_prompt_in_result=False)
        gen.generate_batch(tokens[:2], **(kwargs | {"max_length": 2, "min_length": 2}))  # warm-up
        results = {}
        for b in batch_sizes:
            n = -(-max(b, min(max_requests, len(tokens))) // b) * b
            batch = [tokens[i % len(tokens)] for i in range(n)]
            start = time.perf_counter()
            res = gen.generate_batch(batch, max_batch_size=b, **kwargs)
            elapsed = time.perf_counter() - start
            lengths = {len(r.sequences_ids[0]) for r in res}
            if lengths != {output_len}:
                raise RuntimeError(f"CTranslate2 generated {sorted(lengths)} tokens, not {output_len}")
            results[b] = {"requests": n, "seconds": elapsed, "requests_per_s": n / elapsed,
                          "output_tokens_per_s": n * output_len / elapsed}
            print(f"  CTranslate2 {ct} batch {b}: {n / elapsed:.2f} req/s", file=sys.stderr, flush=True)
        best = max(results, key=lambda k: results[k]["requests_per_s"])
        out[ct] = {"by_batch_size": results, "best_batch_size": best, **results[best]}
        del gen
    return out
