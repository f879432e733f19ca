"""Build a `Transformer` from a Hugging Face model directory.

Weights come from `model.safetensors` or the shards listed in
`model.safetensors.index.json`; `load_format="dummy"` fills random weights at
the real shapes instead (for speed work, no checkpoint needed). Every problem is
reported at start-up with the file and tensor it concerns.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from fleetserve.model import compressed_tensors
from fleetserve.model.config import ModelConfig, ModelLoadError
from fleetserve.model.device import resolve_device
from fleetserve.model.llama import Transformer, random_init
from fleetserve.model.quantization import DEFAULT_GROUPS, QuantSpec, parse_groups, prepare_quantized, quantize_model

LOAD_FORMATS = ("auto", "safetensors", "dummy")
QUANTIZATIONS = ("auto", "none", "int8", "fp8", "fp8-weight")  # auto: as the checkpoint is stored
# Present in some older checkpoints; recomputed by us, never loaded.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str, cfg: ModelConfig, device: torch.device | str = "cpu") -> torch.dtype:
    """`auto` is float32 on CPU (bf16/fp16 matrix products are slower than fp32 on most
    CPUs) and bfloat16 on a GPU (its tensor cores)."""
    if name == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; choose from auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def load_model(
    model_dir: str | Path,
    cfg: ModelConfig | None = None,
    load_format: str = "auto",
    dtype: str = "auto",
    seed: int = 0,
    quantization: str = "auto",
    quantize_groups: str | tuple[str, ...] = DEFAULT_GROUPS,
    device: str = "cpu",
) -> Transformer:
    """`quantization`: int8/fp8 quantizes a float checkpoint's `quantize_groups` as it
    loads; auto serves the checkpoint as stored (quantized when its config.json has a
    compressed-tensors `quantization_config`). The weights are read on the CPU, then
    moved to `device`."""
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
    with torch.device("meta"):
        model = Transformer(cfg)
    # 8-bit layers go in after the dtype cast, which would turn float8 storage into floats.
    model = model.to_empty(device="cpu").to(torch_dtype)
    if stored is not None and load_format != "dummy":
        prepare_quantized(model, stored.scheme, stored.modules)
    model.tie_weights()
    if load_format == "dummy":
        random_init(model, seed)
        if stored is not None:  # random float weights, then the checkpoint's quantization of them
            quantize_model(model, stored.scheme, stored.modules)
    else:
        _load_safetensors(model, model_dir)
    if stored is None and quantization not in ("auto", "none"):
        spec = QuantSpec(quantization, parse_groups(quantize_groups))
        quantize_model(model, spec.scheme, spec.module_names(cfg.num_layers))
    return model.to(target).eval().requires_grad_(False)


def checkpoint_files(model_dir: Path) -> dict[str, Path]:
    """Tensor name -> file holding it."""
    index = model_dir / "model.safetensors.index.json"
    single = model_dir / "model.safetensors"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise ModelLoadError(f"{index}: not a valid safetensors index ({e})") from e
        files = {name: model_dir / f for name, f in weight_map.items()}
        for f in set(files.values()):
            if not f.is_file():
                raise ModelLoadError(f"{index}: lists shard {f.name}, which is missing")
        return files
    if single.is_file():
        with safe_open(single, framework="pt") as f:
            return {name: single for name in f.keys()}
    raise ModelLoadError(
        f"{model_dir}: no model.safetensors or model.safetensors.index.json "
        "(use --load-format dummy for random weights at the config's shape)"
    )


def _load_safetensors(model: Transformer, model_dir: Path) -> None:
    # Quantized layers keep their 8-bit weights and scales as buffers.
    params = {**dict(model.named_parameters(remove_duplicate=False)), **dict(model.named_buffers())}
    fused = model.fused_shards()
    tied = model.cfg.tie_word_embeddings and isinstance(model.lm_head, torch.nn.Linear)
    expected: set[str] = set()
    for name in params:
        if tied and name == "lm_head.weight":
            continue
        module, _, leaf = name.rpartition(".")
        prefix, _, kind = module.rpartition(".")
        parts = [k for k, (fused_name, _, _) in fused.items() if fused_name == kind]
        if parts:
            expected.update(f"{prefix}.{p}.{leaf}" for p in parts)
        else:
            expected.add(name)

    loaded: set[str] = set()
    by_file: dict[Path, list[str]] = {}
    for ckpt_name, path in checkpoint_files(model_dir).items():
        by_file.setdefault(path, []).append(ckpt_name)

    for path, names in sorted(by_file.items()):
        with safe_open(path, framework="pt") as f:
            for ckpt_name in names:
                name = ckpt_name.removeprefix("model.")
                if name.endswith(IGNORED_SUFFIXES) or (tied and name == "lm_head.weight"):
                    continue
                if name not in expected:
                    raise ModelLoadError(f"{path.name}: unexpected tensor {ckpt_name!r} for {model.cfg.architecture}")
                tensor = f.get_tensor(ckpt_name)
                target = _target(params, fused, name)
                if name.endswith(".weight_scale") and tuple(tensor.shape) == (target.shape[0], 1):
                    tensor = tensor.reshape(-1)  # compressed-tensors stores [out, 1]; we keep [out]
                if _is_8bit(tensor) != _is_8bit(target) or (_is_8bit(tensor) and tensor.dtype != target.dtype):
                    raise ModelLoadError(
                        f"{path.name}: tensor {ckpt_name!r} is {tensor.dtype} but config.json implies "
                        f"{target.dtype} (check its quantization_config)"
                    )
                if tuple(tensor.shape) != tuple(target.shape):
                    raise ModelLoadError(
                        f"{path.name}: tensor {ckpt_name!r} has shape {tuple(tensor.shape)}, "
                        f"config.json implies {tuple(target.shape)}"
                    )
                with torch.no_grad():
                    target.copy_(tensor)
                loaded.add(name)

    missing = sorted(expected - loaded)
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise ModelLoadError(f"{model_dir}: checkpoint lacks tensors {', '.join(missing[:5])}{more}")


def _is_8bit(t: torch.Tensor) -> bool:
    return t.dtype in (torch.int8, torch.float8_e4m3fn)


def _target(params: dict[str, torch.nn.Parameter], fused: dict, name: str) -> torch.Tensor:
    """The parameter, or the rows of a fused parameter, that checkpoint tensor `name` fills."""
    module, _, leaf = name.rpartition(".")
    prefix, _, proj = module.rpartition(".")
    if proj in fused:
        fused_name, offset, rows = fused[proj]
        return params[f"{prefix}.{fused_name}.{leaf}"].data.narrow(0, offset, rows)
    return params[name].data
