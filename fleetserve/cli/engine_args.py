"""The engine's options, shared by the commands that run an engine (serve, bench)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the engine imports torch: only the commands that run it pay for that
    from fleetserve.engine.config import EngineConfig


def add_engine_arguments(p: argparse.ArgumentParser, max_num_seqs: int = 64) -> None:
    g = p.add_argument_group("engine")
    g.add_argument("--max-num-seqs", type=int, default=max_num_seqs, help="slots: requests decoded together (default %(default)s)")
    g.add_argument("--max-model-len", type=int, default=256, help="prompt + completion tokens per slot (default %(default)s)")
    g.add_argument("--max-prefill-tokens", type=int, default=4096, help="prompt tokens admitted per step (default %(default)s)")
    g.add_argument("--load-format", choices=["auto", "safetensors", "dummy"], default="auto",
                   help="'dummy': random weights at the config's shape, no checkpoint needed")
    g.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                   help="weights and activations (auto: float32 on CPU, bfloat16 on a GPU)")
    g.add_argument("--device", default="cpu",
                   help="cpu (default), cuda or cuda:N: where the weights, KV cache and products live")
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                   help="torch.compile the decode step (see BENCHMARKS.md for when it helps)")
    g.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: torch's choice; fleetserve serve: every core, its OpenMP threads "
                        "spinning only briefly before they sleep: GOMP_SPINCOUNT=10000)")
    g.add_argument("--thread-choice", choices=["measured", "fixed"], default="measured",
                   help="measured: each step runs on one thread or on --threads, whichever the engine measures "
                        "faster for steps of its size on this host right now (small steps and a busy host favour "
                        "one); fixed: always --threads (default %(default)s)")
    g.add_argument("--float-linear", choices=["auto", "plain", "onednn"], default="auto",
                   help="float linear products: plain F.linear, or weights reordered once into oneDNN's layout; "
                        "auto times both at the model's shapes at start-up and keeps the faster (default %(default)s)")
    g.add_argument("--int8-product", choices=["auto", "int-mm", "fbgemm", "float"], default="auto",
                   help="int8 layers' products: torch._int_mm or fbgemm's int8 kernel (each where a trial shows it "
                        "exact on this CPU), or the same 8-bit values multiplied in float32; auto times them at "
                        "start-up (default %(default)s)")
    g.add_argument("--async-scheduling", action=argparse.BooleanOptionalAction, default=False,
                   help="launch each step before the previous one's bookkeeping, on a worker thread "
                        "(same outputs; see BENCHMARKS.md for when it pays)")
    g.add_argument("--speculative", choices=["input", "ngram", "off"], default="input",
                   help="speculative decoding of greedy requests: 'input' proposes the tokens that follow the "
                        "output's latest ones in the prompt (a correction copies its source), 'ngram' looks in the "
                        "output too; the model checks every proposal, so outputs are the same as 'off' "
                        "(default %(default)s; see BENCHMARKS.md)")
    g.add_argument("--speculative-max-tokens", type=int, default=8,
                   help="most tokens proposed per request and step (default %(default)s)")
    g.add_argument("--seed", type=int, default=0, help="seed for dummy weights")
    add_quantization_arguments(g)
    s = p.add_argument_group("object storage (a model given as s3://BUCKET/PREFIX or an http(s):// URL)")
    s.add_argument("--cache-dir", default=None,
                   help="where fetched weight blocks and model files are kept for the next start (default "
                        "$FLEETSERVE_CACHE_DIR, else ~/.cache/fleetserve)")
    s.add_argument("--cache-size", type=float, default=20.0,
                   help="GiB the block cache may hold; the least recently used blocks go first (default "
                        "%(default)s; 0: no cache)")
    s.add_argument("--fetch-inflight", type=int, default=8,
                   help="4 MiB blocks fetched at once (default %(default)s)")


def add_quantization_arguments(g, prefix: str = "", what: str = "") -> None:
    from fleetserve.model.quant_groups import AUTO_HELP

    g.add_argument(f"--{prefix}quantization", choices=["auto", "none", "int8", "fp8", "fp8-weight"], default="auto",
                   help=f"{what}8-bit weights with one scale per output channel: int8 (CPU) or fp8 (GPU; emulated "
                        "on CPU) with activations quantized per token, or fp8-weight (float8 weights only, "
                        "activations unquantized) quantize a float checkpoint as it loads; auto serves the "
                        "checkpoint as stored (default %(default)s)")
    g.add_argument(f"--{prefix}quantize-groups", default="auto", metavar="GROUPS",
                   help=f"{what}layer groups to quantize with --{prefix}quantization: attention, mlp, lm_head, "
                        "comma-separated, or auto, each scheme's groups as the quality gate chose them "
                        f"({AUTO_HELP}) (default %(default)s; embeddings and the KV cache never are)")


def engine_config(a: argparse.Namespace) -> EngineConfig:
    from fleetserve.engine.config import EngineConfig

    if a.cache_size < 0 or a.fetch_inflight < 1:
        raise ValueError("--cache-size must not be negative and --fetch-inflight must be at least 1")

    return EngineConfig(max_num_seqs=a.max_num_seqs, max_model_len=a.max_model_len,
                        max_prefill_tokens=a.max_prefill_tokens, load_format=a.load_format, dtype=a.dtype,
                        compile=a.compile, seed=a.seed, threads=a.threads, thread_choice=a.thread_choice, async_scheduling=a.async_scheduling,
                        quantization=a.quantization, quantize_groups=quantize_groups(a.quantize_groups),
                        float_linear=a.float_linear, int8_product=a.int8_product, device=a.device, speculative=a.speculative,
                        speculative_max_tokens=a.speculative_max_tokens, cache_dir=a.cache_dir,
                        cache_bytes=int(a.cache_size * 2**30), fetch_inflight=a.fetch_inflight)


def quantize_groups(text: str) -> tuple[str, ...] | str:
    """The groups named, checked; "auto" stays so until the scheme is known."""
    from fleetserve.model.quant_groups import parse_groups

    return text if text == "auto" else tuple(sorted(parse_groups(text)))
