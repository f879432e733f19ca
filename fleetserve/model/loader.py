"""Build a `Transformer` from a Hugging Face model directory.

Weights come from `model.safetensors` or the shards listed in
`model.safetensors.index.json`, in the directory or streamed from object storage
(`weights_from`, see model/checkpoint.py); `load_format="dummy"` fills random weights
at the real shapes instead (for speed work, no checkpoint needed). Every problem is
reported at start-up with the file and tensor it concerns.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from fleetserve.model import compressed_tensors
from fleetserve.model.checkpoint import load_weights
from fleetserve.model.config import ModelConfig, ModelLoadError
from fleetserve.model.quant_groups import parse_groups
from fleetserve.model.device import resolve_device
from fleetserve.model.llama import Transformer, random_init
from fleetserve.model.quantization import QuantSpec, prepare_quantized, quantize_model
from fleetserve.storage.block_cache import BlockCache
from fleetserve.storage.sources import Source

LOAD_FORMATS = ("auto", "safetensors", "dummy")
QUANTIZATIONS = ("auto", "none", "int8", "fp8", "fp8-weight")  # auto: as the checkpoint is stored

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str, cfg: ModelConfig, device: torch.device | str = "cpu") -> torch.dtype:
    """`auto` is float32 on CPU and bfloat16 on a GPU (its tensor cores). On a CPU float32 is
    what matches the transformers reference token for token and what runs well on every CPU of
    the kind; bfloat16 is faster only with AVX512-BF16/AMX (1.8-2.1x the bundled model's pod
    there: BENCHMARKS.md, issue 19, seventh part) and slower without, and changes some outputs,
    so it is a setting to choose after the quality gate, not a default."""
    if name == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; choose from auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def bfloat16_hint(name: str, device: torch.device | str = "cpu") -> str | None:
    """A line for a pod's start where `--dtype auto` gave float32 on a CPU that multiplies
    bfloat16 in hardware (AMX), oneDNN not told to stay below it: the largest speed-up left to
    the operator, and not taken by default (see resolve_dtype)."""
    if name != "auto" or torch.device(device).type != "cpu":
        return None
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL"
    if not amx or not (isa.upper() == "ALL" or "AMX" in isa.upper()):
        return None
    return ("this CPU multiplies bfloat16 in hardware (AMX): --dtype bfloat16 may serve much faster (the bundled "
            "model's pod: 1.8-2.1x) but changes some outputs; check a model first with fleetserve eval MODEL "
            "--dtype bfloat16 --baseline MODEL --baseline-dtype float32")


def empty_model(cfg: ModelConfig, dtype: torch.dtype, device: torch.device | str = "cpu") -> Transformer:
    """The model with memory on `device` allocated in `dtype` and nothing written to it. Built on the
    meta device, then each tensor given fresh memory directly: not `nn.Module.to_empty`, whose
    `empty_like` of a meta tensor imports torch's meta registrations and sympy (0.35 s of every
    start), nor a cast afterwards (converting 2 GB of uninitialised float32 to bfloat16 took a
    second at the 0.5B shape)."""
    with torch.device("meta"):
        model = Transformer(cfg)
    return model._apply(lambda t: torch.empty(t.shape, dtype=dtype if t.is_floating_point() else t.dtype,
                                              device=device))


def load_model(
    model_dir: str | Path,
    cfg: ModelConfig | None = None,
    load_format: str = "auto",
    dtype: str = "auto",
    seed: int = 0,
    quantization: str = "auto",
    quantize_groups: str | tuple[str, ...] = "auto",
    device: str = "cpu",
    weights_from: Source | None = None,
    cache: BlockCache | None = None,
) -> Transformer:
    """`quantization`: int8/fp8 quantizes a float checkpoint's `quantize_groups` as it
    loads ("auto": the scheme's default groups); auto serves the checkpoint as stored (quantized when its config.json has a
    compressed-tensors `quantization_config`). A checkpoint served as stored is streamed into
    the model on `device`; one quantized as it loads, or dummy weights, are made on the CPU and
    then moved there. `weights_from`: where the checkpoint's files are when not in
    `model_dir` (which then holds the config, tokenizer and index); `cache`: blocks kept
    on local disk for the next load."""
    model_dir = Path(model_dir)
    cfg = cfg or ModelConfig.from_dir(model_dir)
    if load_format not in LOAD_FORMATS:
        raise ValueError(f"unknown load format {load_format!r}; choose from {', '.join(LOAD_FORMATS)}")
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"unknown quantization {quantization!r}; choose from {', '.join(QUANTIZATIONS)}")
    target = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, cfg, target)
    stored = compressed_tensors.read(cfg.quantization_config, cfg, str(model_dir / "config.json"))
    if stored is not None and quantization not in ("auto", stored.scheme):
        raise ValueError(f"{model_dir} holds {stored.scheme} weights; it cannot be served as "
                         f"--quantization {quantization} (quantize its float original instead)")
    quantize_on_load = stored is None and quantization not in ("auto", "none")
    streamed = load_format != "dummy" and not quantize_on_load
    model = empty_model(cfg, torch_dtype, target if streamed else "cpu")
    # 8-bit layers go in after the model has its float memory (a dtype cast would turn float8 storage into floats).
    if stored is not None and load_format != "dummy":
        prepare_quantized(model, stored.scheme, stored.modules)
    model.tie_weights()
    if load_format == "dummy":
        random_init(model, seed)
        if stored is not None:  # random float weights, then the checkpoint's quantization of them
            quantize_model(model, stored.scheme, stored.modules)
    else:
        load_weights(model, model_dir, weights_from, cache)
    if quantize_on_load:
        spec = QuantSpec(quantization, parse_groups(quantize_groups, quantization))
        quantize_model(model, spec.scheme, spec.module_names(cfg.num_layers))
    return model.to(target).eval().requires_grad_(False)
