"""Write a `Transformer` back out as a Hugging Face checkpoint (the inverse of `loader`)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from fleetserve.model.llama import Transformer


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
