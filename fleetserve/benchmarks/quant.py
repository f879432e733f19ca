"""`fleetserve bench-quant`: which 8-bit matrix product is fastest on this machine,
and what quantization does to the engine's throughput, in one run.

1. The candidate CPU paths of stock PyTorch at the model's own linear shapes, for
   a decode step's rows (one per slot) and a prefill's (50 per slot): float32 and
   bfloat16 `F.linear`, weight-only int8 (`torch._weight_int8pack_mm`), dynamic
   int8 (`torch.ao` quantize_dynamic, per-channel weights, fbgemm) and ours
   (`torch._int_mm` and fbgemm's kernel with per-token activation scales, each where it
   is exact here, 7-bit weights on CPUs without VNNI; and the same 8-bit values
   multiplied in float32).
2. Offline throughput of the reference workload (50 prompt tokens, 50 out, greedy,
   ignore_eos) for each precision variant, interleaved over `rounds` so a host
   whose speed drifts slows every variant alike; the median round counts and each
   variant is a ratio to the faster of float32 and bfloat16.
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings
from typing import Any

import torch
import torch.nn.functional as F

from fleetserve.engine.llm import LLM
from fleetserve.engine.memory import keep_freed_memory
from fleetserve.engine.sampling_params import SamplingParams
from fleetserve.model.config import ModelConfig
from fleetserve.model.quantization import fbgemm_pack, int8_matmul, int8_weight_qmax, product_fails, quantize_weight
from fleetserve.loadtest.workload import reference_prompts

VARIANTS: dict[str, dict[str, Any]] = {
    "float32": {},
    "bfloat16": {"dtype": "bfloat16"},
    "int8 (attention, mlp)": {"quantization": "int8", "quantize_groups": ("attention", "mlp")},
    "int8 (attention, mlp), bfloat16 rest": {"quantization": "int8", "quantize_groups": ("attention", "mlp"),
                                             "dtype": "bfloat16"},
    "int8 (attention, mlp, lm_head: the default)": {"quantization": "int8",
                                                    "quantize_groups": ("attention", "lm_head", "mlp")},
}


def _time_ms(fn, seconds: float = 0.5) -> float:
    fn()
    fn()
    runs, start = 0, time.perf_counter()
    while runs < 3 or time.perf_counter() - start < seconds:
        fn()
        runs += 1
    return (time.perf_counter() - start) / runs * 1e3


def linear_shapes(cfg: ModelConfig) -> list[tuple[str, int, int]]:
    """(name, out, in) of one decoder layer's fused projections, as the engine runs them."""
    h, q, kv, i = cfg.hidden_size, cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim, \
        cfg.intermediate_size
    return [("qkv_proj", q + 2 * kv, h), ("o_proj", h, q), ("gate_up_proj", 2 * i, h), ("down_proj", h, i)]


def _paths(w: torch.Tensor) -> dict[str, Any]:
    """Each candidate as x -> y, its weights prepared once as a server would."""
    q, scale = quantize_weight(w, "int8", int8_weight_qmax())  # 7-bit where the 8-bit product saturates
    wb = w.bfloat16()
    paths: dict[str, Any] = {
        "float32": lambda x: F.linear(x, w),
        "bfloat16": lambda x: F.linear(x.bfloat16(), wb),
        "int8 weight-only (_weight_int8pack_mm, bf16 activations)":
            lambda x: torch._weight_int8pack_mm(x.bfloat16(), q, scale.bfloat16()),
        "int8 per-token, float32 product (ours where _int_mm is not exact)":
            lambda x: int8_matmul(x, q, scale, "float"),
    }
    if product_fails(q, "int-mm") is None:
        paths["int8 per-token (_int_mm, ours)"] = lambda x: int8_matmul(x, q, scale, "int-mm")
    if product_fails(q, "fbgemm") is None:
        packed = fbgemm_pack(q, scale)
        paths["int8 per-token (fbgemm, ours)"] = lambda x: int8_matmul(x, q, scale, "fbgemm", packed)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
            lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
            lin.weight.data = w
            dyn = quantize_dynamic(torch.nn.Sequential(lin), {torch.nn.Linear: per_channel_dynamic_qconfig},
                                   dtype=torch.qint8)
        paths["int8 dynamic (torch.ao quantize_dynamic, per-tensor activations)"] = dyn
    except Exception as e:  # removed in some later torch: say so rather than fail the bench
        print(f"  (torch.ao dynamic quantization unavailable: {e})", file=sys.stderr)
    return paths


def bench_linear_paths(cfg: ModelConfig, rows: list[int]) -> dict[str, Any]:
    """Milliseconds for one layer's four products per path and row count."""
    g = torch.Generator().manual_seed(0)
    weights = [(name, torch.randn(out_f, in_f, generator=g) * 0.02) for name, out_f, in_f in linear_shapes(cfg)]
    prepared = [(name, w, _paths(w)) for name, w in weights]
    result: dict[str, Any] = {}
    for n in rows:
        totals: dict[str, float] = {}
        for _, w, paths in prepared:
            x = torch.randn(n, w.shape[1], generator=g)
            for path, fn in paths.items():
                totals[path] = totals.get(path, 0.0) + _time_ms(lambda: fn(x))
        base = totals["float32"]
        result[str(n)] = {p: {"ms": round(t, 3), "speedup_vs_float32": round(base / t, 2)} for p, t in totals.items()}
    return result


def bench_variants(model: str, load_format: str, max_num_seqs: int, requests: int, rounds: int,
                   variants: dict[str, dict[str, Any]] = VARIANTS, log=print) -> dict[str, Any]:
    cfg = ModelConfig.from_dir(model)
    prompts = [list(p) for p in reference_prompts(requests, 50, min(cfg.vocab_size, 32000))]
    params = SamplingParams(max_tokens=50, temperature=0.0, ignore_eos=True)
    runs: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(rounds):
        for name, kw in variants.items():
            llm = LLM(model, load_format=load_format, max_num_seqs=max_num_seqs, **kw)
            llm.generate(prompts[:max_num_seqs], params)  # warm-up on the real shapes
            start = time.perf_counter()
            llm.generate(prompts, params)
            rate = requests / (time.perf_counter() - start)
            runs[name].append(rate)
            log(f"[round {r + 1}/{rounds}] {name}: {rate:.3f} req/s")
            del llm
    median = {name: statistics.median(v) for name, v in runs.items()}
    best_float = max(median.get("float32", 0.0), median.get("bfloat16", 0.0)) or 1.0
    return {name: {"requests_per_s": round(median[name], 4), "rounds": [round(v, 4) for v in runs[name]],
                   "ratio_to_best_float": round(median[name] / best_float, 3)} for name in variants}


def run_quant_bench(model: str, load_format: str = "auto", max_num_seqs: int = 32, requests: int | None = None,
                    rounds: int = 2, log=print, bfloat16: bool = True) -> dict[str, Any]:
    keep_freed_memory()  # as the engine does: the paths are compared under the engine's allocator settings
    cfg = ModelConfig.from_dir(model)
    rows = [max_num_seqs, max_num_seqs * 50]
    log(f"linear paths at {cfg.architecture} shapes, rows {rows} (decode, prefill) ...")
    paths = bench_linear_paths(cfg, rows)
    for n, res in paths.items():
        log(f"  {n} rows: " + "; ".join(f"{p} {v['ms']:.2f} ms ({v['speedup_vs_float32']:.2f}x)"
                                       for p, v in res.items()))
    chosen = {k: v for k, v in VARIANTS.items() if bfloat16 or v.get("dtype") != "bfloat16"}
    variants = bench_variants(model, load_format, max_num_seqs, requests or max_num_seqs, rounds, chosen, log=log)
    log("engine throughput, median of rounds, as a ratio to the faster float variant:")
    for name, v in variants.items():
        log(f"  {name}: {v['requests_per_s']:.3f} req/s = {v['ratio_to_best_float']:.2f}x")
    return {"model": model, "load_format": load_format, "max_num_seqs": max_num_seqs, "rounds": rounds,
            "threads": torch.get_num_threads(), "linear_paths_ms": paths, "engine": variants}
