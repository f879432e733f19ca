"""`fleetserve bench`: offline throughput on the reference workload.

50 prompt tokens, 50 generated, greedy, ignore_eos, measured for fleetserve's
engine and, in the same run, for the baselines: Hugging Face `generate` at its best
batch size, and CTranslate2 (float32 and int8) converted from the same checkpoint.
Also reports the decode step time against this machine's measured matrix-multiply
rate, so we know how close to the hardware we run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from fleetserve.benchmarks.host import cpu_description
from fleetserve.engine.config import EngineConfig
from fleetserve.engine.llm import LLM
from fleetserve.engine.sampling_params import SamplingParams
from fleetserve.model.config import ModelConfig
from fleetserve.model.device import synchronize


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_description()}; {torch.get_num_threads()} torch threads"


def reference_prompts(n: int, length: int, vocab: int, seed: int = 0) -> list[list[int]]:
    """Fixed-length token-id prompts, the same in every run."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n, length), generator=g).tolist()


def matmul_gflops(dtype: torch.dtype = torch.float32, m: int = 2048, seconds: float = 2.0,
                  device: torch.device | str = "cpu") -> float:
    """The machine's matrix-multiply rate at `dtype` on `device` (on the CPU with torch's current threads)."""
    device = torch.device(device)
    a, b = torch.randn(m, m, dtype=dtype, device=device), torch.randn(m, m, dtype=dtype, device=device)
    a @ b
    synchronize(device)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(8 if device.type == "cuda" else 1):  # a GPU queues products faster than Python loops
            a @ b
            runs += 1
        synchronize(device)
    return 2 * m**3 * runs / (time.perf_counter() - start) / 1e9


def decode_flops_per_token(cfg: ModelConfig, kv_len: int) -> float:
    """Matrix-product FLOPs to decode one token: every linear layer plus attention."""
    h, q, kv = cfg.hidden_size, cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    linear = cfg.num_layers * (h * (q + 2 * kv) + q * h + 3 * h * cfg.intermediate_size) + h * cfg.vocab_size
    attention = cfg.num_layers * 2 * q * kv_len
    return 2.0 * (linear + attention)


def bench_fleetserve(llm: LLM, prompts: list[list[int]], output_len: int, repeat: int) -> dict[str, Any]:
    params = SamplingParams(max_tokens=output_len, temperature=0.0, ignore_eos=True)
    # Warm-up on the real shapes: the first call at each new batch/attention-length
    # bucket pays one-off kernel set-up costs that a long-running server never sees again.
    llm.generate(prompts[: llm.engine.config.max_num_seqs], params)
    best = float("inf")
    for i in range(repeat):
        start = time.perf_counter()
        outs = llm.generate(prompts, params)
        elapsed = time.perf_counter() - start
        assert all(len(o.token_ids) == output_len for o in outs)
        best = min(best, elapsed)
        print(f"  fleetserve run {i + 1}/{repeat}: {len(prompts) / elapsed:.2f} req/s", file=sys.stderr)
    return {"requests": len(prompts), "seconds": best, "requests_per_s": len(prompts) / best,
            "output_tokens_per_s": len(prompts) * output_len / best}


def decode_step_time(llm: LLM, batch: int, input_len: int, steps: int = 10) -> float:
    """Seconds per engine step with `batch` requests decoding (sampling included).

    The same sequence of steps runs twice and only the second is timed, so every
    batch and attention-length bucket it touches has already paid its first-call cost."""
    engine = llm.engine
    vocab = min(engine.model_config.vocab_size, llm.tokenizer.vocab_size)
    prompts = reference_prompts(batch, input_len, vocab, seed=1)
    params = SamplingParams(max_tokens=steps + 2, temperature=0.0, ignore_eos=True)
    for attempt in ("warm", "timed"):
        for i, p in enumerate(prompts):
            engine.add_request(f"step-{attempt}-{i}", p, params)
        engine.step()
        while engine.num_waiting:  # a batch beyond the prefill token budget is admitted over several steps
            engine.step()
        start = time.perf_counter()
        for _ in range(steps):
            engine.step()
        elapsed = (time.perf_counter() - start) / steps
        while engine.has_unfinished():
            engine.step()
    return elapsed


def bench_hf(model_dir: str, load_format: str, dtype: torch.dtype, prompts: list[list[int]], output_len: int,
             batch_sizes: list[int], max_requests: int, batch1_requests: int,
             device: torch.device = torch.device("cpu")) -> dict[str, Any]:
    try:
        import transformers
    except ImportError:
        raise SystemExit("the Hugging Face baseline needs transformers: pip install -r requirements-dev.txt")
    if load_format == "dummy":
        hf_config = transformers.AutoConfig.from_pretrained(model_dir)
        model = transformers.AutoModelForCausalLM.from_config(hf_config, dtype=dtype)
    else:
        model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    model.to(device).eval()
    kwargs = dict(max_new_tokens=output_len, min_new_tokens=output_len, do_sample=False,
                  pad_token_id=0, eos_token_id=None)
    results = {}
    for b in batch_sizes:
        n = batch1_requests if b == 1 else max(b, min(max_requests, len(prompts)))
        n = -(-n // b) * b
        batches = [torch.tensor([prompts[(i + j) % len(prompts)] for j in range(b)], device=device)
                   for i in range(0, n, b)]
        with torch.inference_mode():
            model.generate(batches[0][:, :8], **(kwargs | {"max_new_tokens": 2, "min_new_tokens": 2}))
            start = time.perf_counter()
            for batch in batches:
                out = model.generate(batch, **kwargs)
                assert out.shape[1] == batch.shape[1] + output_len
            synchronize(device)
            elapsed = time.perf_counter() - start
        results[b] = {"requests": n, "seconds": elapsed, "requests_per_s": n / elapsed,
                      "output_tokens_per_s": n * output_len / elapsed}
        print(f"  HF generate batch {b}: {n / elapsed:.2f} req/s", file=sys.stderr)
    best = max(results, key=lambda k: results[k]["requests_per_s"])
    return {"by_batch_size": results, "best_batch_size": best, **results[best]}


def _baselines(spec: str | None, model: Path, load_format: str) -> set[str]:
    if spec is None:  # the default: CTranslate2 where there is a checkpoint to convert
        has_weights = load_format != "dummy" and any(model.glob("*.safetensors"))
        if not has_weights:
            print("CTranslate2 baseline skipped: it converts the checkpoint and this model has no weights "
                  "(fleetserve init-model without --no-weights makes some)", file=sys.stderr)
        return {"hf", "ct2"} if has_weights else {"hf"}
    names = {s.strip() for s in spec.split(",") if s.strip()} - {"none"}
    unknown = names - {"hf", "ct2"}
    if unknown:
        raise SystemExit(f"--baseline: unknown {', '.join(sorted(unknown))}; choose from hf, ct2, none")
    if "ct2" in names and load_format == "dummy":
        raise SystemExit("--baseline ct2 converts the checkpoint: it cannot run with --load-format dummy")
    return names


def run_bench(a: argparse.Namespace, config: EngineConfig) -> dict[str, Any]:
    baselines = _baselines(a.baseline, Path(a.model), a.load_format)
    print(f"fleetserve bench: loading {a.model} ({a.load_format})", file=sys.stderr)
    llm = LLM(a.model, **vars(config))
    mc = llm.engine.model_config
    vocab = min(mc.vocab_size, llm.tokenizer.vocab_size)
    prompts = reference_prompts(a.num_prompts, a.input_len, vocab)
    device = llm.engine.runner.device
    products = {k: v["path"] for k, v in llm.engine.products.items()}
    print("linear products: " + (", ".join(f"{k} {v}" for k, v in products.items()) or "compiled"), file=sys.stderr)
    result: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "machine": machine(device),
        "torch": torch.__version__,
        "model": str(a.model), "parameters": mc.num_parameters, "load_format": a.load_format,
        "workload": {"input_len": a.input_len, "output_len": a.output_len, "greedy": True, "ignore_eos": True},
        "engine": dict(vars(config)),
        "linear_products": products,
    }
    print(f"fleetserve: {a.num_prompts} requests, {config.max_num_seqs} slots", file=sys.stderr)
    result["fleetserve"] = bench_fleetserve(llm, prompts, a.output_len, a.repeat)

    batch = min(config.max_num_seqs, a.num_prompts)
    steps = 10
    step_s = decode_step_time(llm, batch, a.input_len, steps)
    llm_dtype = llm.engine.runner.model.embed_tokens.weight.dtype
    result["dtype"] = str(llm_dtype).removeprefix("torch.")
    peak = matmul_gflops(llm_dtype, device=device)
    # The timed steps decode about positions input_len .. input_len+steps; count attention at their middle.
    flops = decode_flops_per_token(mc, a.input_len + steps // 2) * batch
    result["decode_step"] = {"batch": batch, "seconds": step_s, "achieved_gflops": flops / step_s / 1e9,
                             "matmul_peak_gflops": peak, "fraction_of_peak": flops / step_s / 1e9 / peak}
    del llm

    if "hf" in baselines:
        sizes = [int(s) for s in a.hf_batch_sizes.split(",")]
        print(f"Hugging Face generate: batch sizes {sizes}", file=sys.stderr)
        # The baseline runs at the engine's precision: like for like.
        result["hf"] = bench_hf(a.model, a.load_format, llm_dtype, prompts, a.output_len, sizes,
                                a.hf_max_requests, a.hf_batch1_requests, device)
        result["speedup_vs_hf"] = result["fleetserve"]["requests_per_s"] / result["hf"]["requests_per_s"]

    if "ct2" in baselines:
        from fleetserve.benchmarks.ctranslate2_baseline import bench_ct2

        types = tuple(a.ct2_compute_types.split(","))
        print(f"CTranslate2: {', '.join(types)}", file=sys.stderr)
        result["ct2"] = bench_ct2(Path(a.model), prompts, a.output_len,
                                  [int(s) for s in a.ct2_batch_sizes.split(",")], a.hf_max_requests, types,
                                  torch.get_num_threads())
        result["ratio_to_ct2"] = {t: result["fleetserve"]["requests_per_s"] / result["ct2"][t]["requests_per_s"]
                                  for t in types}

    print(json.dumps(result, indent=2))
    fs, d = result["fleetserve"], result["decode_step"]
    summary = f"fleetserve {fs['requests_per_s']:.2f} req/s ({fs['output_tokens_per_s']:.0f} tok/s)"
    if "hf" in result:
        summary += (f" | HF best (batch {result['hf']['best_batch_size']}) {result['hf']['requests_per_s']:.2f} req/s"
                    f" | speedup {result['speedup_vs_hf']:.2f}x")
    for t, r in result.get("ratio_to_ct2", {}).items():
        summary += f" | CTranslate2 {t} {result['ct2'][t]['requests_per_s']:.2f} req/s ({r:.2f}x)"
    summary += (f" | decode step at batch {d['batch']}: {d['seconds'] * 1e3:.1f} ms, "
                f"{d['achieved_gflops']:.0f} GFLOP/s of {d['matmul_peak_gflops']:.0f} measured matmul peak")
    print(summary, file=sys.stderr)
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2))
    return result
