"""Write a `Transformer` back out as a Hugging Face checkpoint (the inverse of `loader`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from fleetserve.model.llama import Transformer

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


def hf_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """Tensors under Hugging Face names: fused projections split again, a tied lm_head left out."""
    fused: dict[str, list[tuple[str, int, int]]] = {}
    for shard, (module, offset, rows) in model.fused_shards().items():
        fused.setdefault(module, []).append((shard, offset, rows))
    out = {}
    tied = model.cfg.tie_word_embeddings and isinstance(model.lm_head, torch.nn.Linear)
    for name, tensor in model.state_dict().items():
        if name.startswith("lm_head."):
            if not tied:
                out[name] = tensor
            continue
        parent, module, kind = name.rsplit(".", 2) if name.count(".") >= 2 else ("", *name.split("."))
        if module in fused:
            for shard, offset, rows in fused[module]:
                out[f"model.{parent}.{shard}.{kind}"] = tensor[offset:offset + rows]
        else:
            out[f"model.{name}"] = tensor
    # compressed-tensors keeps one scale per output channel as a column, [out, 1]
    out = {k: v.reshape(-1, 1) if k.endswith(".weight_scale") else v for k, v in out.items()}
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in out.items()}


def save_model(model: Transformer, out_dir: str | Path) -> Path:
    """Write `model.safetensors` (config and tokenizer files are the caller's)."""
    path = Path(out_dir) / "model.safetensors"
    save_file(hf_state_dict(model), str(path), metadata={"format": "pt"})
    return path


def write_quantized(in_dir: Path, out_dir: Path, scheme: str, groups: frozenset[str]) -> Path:
    """Quantize `in_dir` into `out_dir` (created; must not exist or be empty). Returns out_dir."""
    from fleetserve.model import compressed_tensors
    from fleetserve.model.config import ModelConfig
    from fleetserve.model.loader import DTYPES, load_model
    from fleetserve.model.quantization import QuantSpec

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
