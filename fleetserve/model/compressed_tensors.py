"""The `quantization_config` of compressed-tensors checkpoints (what vLLM reads and
llm-compressor writes), for channel-wise 8-bit weights with dynamic per-token
8-bit activations, or (fp8-weight) float8 weights alone with the activations left
unquantized: write it for a `QuantSpec`, and read one back into the scheme and
the list of our layers it quantizes.

Tensors follow the same convention: `<module>.weight` holds the int8 or
float8_e4m3fn values and `<module>.weight_scale` the float scales, shape [out, 1].
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fleetserve.model.config import ModelConfig, ModelLoadError
from fleetserve.model.quant_groups import GROUPS
from fleetserve.model.quantization import QuantSpec

FORMATS = {"int8": "int-quantized", "fp8": "float-quantized", "fp8-weight": "float-quantized"}
TYPES = {"int8": "int", "fp8": "float", "fp8-weight": "float"}
# Hugging Face projection names behind each of our layers (ours fuse q/k/v and gate/up).
HF_PARTS = {
    "self_attn.qkv_proj": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "self_attn.o_proj": ("self_attn.o_proj",),
    "mlp.gate_up_proj": ("mlp.gate_proj", "mlp.up_proj"),
    "mlp.down_proj": ("mlp.down_proj",),
}
GROUP_TARGETS = {
    "attention": r"re:.*self_attn\.(q|k|v|o)_proj$",
    "mlp": r"re:.*mlp\.(gate|up|down)_proj$",
    "lm_head": "lm_head",
}


def _args(scheme: str, strategy: str, dynamic: bool) -> dict[str, Any]:
    return {"num_bits": 8, "type": TYPES[scheme], "symmetric": True, "strategy": strategy, "dynamic": dynamic,
            "group_size": None, "block_structure": None, "actorder": None,
            "observer": None if dynamic else "minmax", "observer_kwargs": {}}


def quantization_config(spec: QuantSpec) -> dict[str, Any]:
    """config.json's `quantization_config` for a checkpoint quantized as `spec`."""
    targets = [GROUP_TARGETS[g] for g in GROUPS if g in spec.groups]
    return {
        "quant_method": "compressed-tensors",
        "format": FORMATS[spec.scheme],
        "quantization_status": "compressed",
        "config_groups": {"group_0": {
            "targets": targets,
            "weights": _args(spec.scheme, "channel", False),
            "input_activations": None if spec.scheme == "fp8-weight" else _args(spec.scheme, "token", True),
            "output_activations": None,
            "format": FORMATS[spec.scheme],
        }},
        "ignore": [] if "lm_head" in spec.groups else ["lm_head"],
        "kv_cache_scheme": None,
    }


@dataclass(frozen=True)
class CheckpointQuantization:
    scheme: str
    modules: tuple[str, ...]  # our module names, as in Transformer.named_modules


def _matches(pattern: str, name: str) -> bool:
    if pattern.startswith("re:"):
        return re.match(pattern[3:], name) is not None
    return pattern in ("Linear", name)


def _scheme_of(group_name: str, group: dict[str, Any], source: str) -> str:
    w = group.get("weights") or {}
    where = f"{source}: quantization_config group {group_name!r}"
    if w.get("num_bits") != 8 or w.get("type") not in ("int", "float"):
        raise ModelLoadError(f"{where}: {w.get('num_bits')}-bit {w.get('type')} weights are not supported "
                             "(fleetserve serves 8-bit int or float weights)")
    if w.get("strategy") != "channel" or not w.get("symmetric", True):
        raise ModelLoadError(f"{where}: weight strategy {w.get('strategy')!r} (symmetric={w.get('symmetric')}) "
                             "is not supported; fleetserve serves symmetric channel-wise weights")
    a = group.get("input_activations")
    if a is None:
        if w["type"] == "float":
            return "fp8-weight"
        raise ModelLoadError(f"{where}: int8 weight-only checkpoints are not supported; fleetserve multiplies int8 "
                             "weights in 8 bits with activations quantized per token (input_activations dynamic, "
                             "strategy token)")
    if a.get("num_bits") != 8 or a.get("type") != w.get("type") or not a.get("dynamic") \
            or a.get("strategy") not in ("token", "tensor"):
        raise ModelLoadError(f"{where}: input activations {a!r} are not supported; fleetserve quantizes "
                             "activations dynamically per token, as the weights' type")
    return "int8" if w["type"] == "int" else "fp8"


def read(raw: dict[str, Any] | None, cfg: ModelConfig, source: str = "config.json") -> CheckpointQuantization | None:
    """The quantization a checkpoint's config.json declares, or None for a float checkpoint."""
    if not raw:
        return None
    if raw.get("quant_method") != "compressed-tensors":
        raise ModelLoadError(f"{source}: quantization_config quant_method {raw.get('quant_method')!r} is not "
                             "supported (fleetserve reads compressed-tensors checkpoints)")
    ignore = raw.get("ignore") or []
    hf_names = [f"model.layers.{i}.{part}" for i in range(cfg.num_layers)
                for parts in HF_PARTS.values() for part in parts] + ["lm_head"]
    chosen: dict[str, str] = {}  # HF module name -> scheme
    for group_name, group in (raw.get("config_groups") or {}).items():
        scheme = _scheme_of(group_name, group, source)
        for name in hf_names:
            if name in chosen or any(_matches(p, name) for p in ignore):
                continue
            if any(_matches(t, name) for t in group.get("targets") or []):
                chosen[name] = scheme
    if not chosen:
        return None
    schemes = set(chosen.values())
    if len(schemes) > 1:
        raise ModelLoadError(f"{source}: quantization_config mixes {' and '.join(sorted(schemes))} layers; "
                             "fleetserve serves one scheme per model")
    modules = ["lm_head"] if "lm_head" in chosen else []
    for i in range(cfg.num_layers):
        for ours, parts in HF_PARTS.items():
            hit = [f"model.layers.{i}.{p}" in chosen for p in parts]
            if all(hit):
                modules.append(f"layers.{i}.{ours}")
            elif any(hit):
                raise ModelLoadError(f"{source}: quantization_config quantizes only some of "
                                     f"{', '.join(f'layers.{i}.{p}' for p in parts)}; they run as one matrix here "
                                     "and must be quantized together")
    return CheckpointQuantization(schemes.pop(), tuple(modules))
