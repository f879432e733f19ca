"""The engine's settings: one dataclass, no torch, so that processes which only pass it on
(the pod's supervisor, the CLI) start without loading torch."""

from __future__ import annotations

from dataclasses import dataclass



@dataclass
class EngineConfig:
    max_num_seqs: int = 64
    max_model_len: int = 256
    max_prefill_tokens: int = 4096
    load_format: str = "auto"
    dtype: str = "auto"
    compile: bool = False
    seed: int = 0
    threads: int | None = None  # torch intra-op threads; None keeps torch's default
    # "measured": each step runs on 1 thread or all of them, whichever measures faster for
    # steps of its size (engine/thread_choice.py); "fixed": always all of them.
    thread_choice: str = "measured"
    # Overlap: launch step N+1 on a worker thread before appending step N's tokens,
    # sending its outputs and admitting new requests (see EngineCore.step).
    async_scheduling: bool = False
    # 8-bit weights: "auto" serves the checkpoint as stored; int8/fp8 quantize a float
    # checkpoint's `quantize_groups` as it loads (see model/quantization.py; "auto": the
    # scheme's default groups, model/quant_groups.py).
    quantization: str = "auto"
    quantize_groups: tuple[str, ...] | str = "auto"
    # Float linear products: "auto" (measured at start-up), "plain" (F.linear) or "onednn"
    # (weights reordered once, model/onednn_linear.py); not with compile, whose graphs expect
    # dense weights.
    float_linear: str = "auto"
    # int8 layers' product: "auto" (measured), "int-mm" (torch._int_mm), "fbgemm" (fbgemm's int8
    # kernel) or "float" (the same 8-bit values multiplied in float32; model/product_paths.py).
    int8_product: str = "auto"
    # cpu, cuda or cuda:N: where the weights, the KV cache and each step's products live.
    device: str = "cpu"
    # Seconds a request may wait for a slot; beyond it the engine refuses it (REJECTED, a 429)
    # rather than hold a queue it cannot serve in time. 0: wait for ever (offline work).
    max_queue_time: float = 0.0
    # Speculative decoding of greedy requests (engine/speculative.py): "input" proposes the
    # tokens that follow the output's latest ones in the prompt, "ngram" in the prompt and the
    # output, "off" none. Outputs are the same either way (default input: BENCHMARKS.md). Not with
    # async_scheduling.
    speculative: str = "input"
    speculative_max_tokens: int = 8  # most tokens proposed per request and step
    # Weights streamed from object storage (s3://BUCKET/PREFIX or an http(s) URL; the model
    # directory then holds only its config and tokenizer: engine/model_location.py), in 4 MiB
    # blocks, `fetch_inflight` at a time, kept in a block cache of at most `cache_bytes` under
    # `cache_dir` (None: ~/.cache/fleetserve) for the next start on this machine (0: no cache).
    weights_from: str | None = None
    cache_dir: str | None = None
    cache_bytes: int = 20 << 30
    fetch_inflight: int = 8
