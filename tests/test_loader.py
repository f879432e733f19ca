"""Start-up failures name the file and tensor at fault."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from fleetserve.engine.llm import LLM
from fleetserve.model.config import ModelConfig, ModelLoadError
from fleetserve.model.loader import load_model
from fleetserve.training.init_model import init_model


@pytest.fixture()
def model_dir(tmp_path):
    return init_model(tmp_path / "m", "tiny-qwen2", seed=0)


def test_missing_config(tmp_path):
    with pytest.raises(ModelLoadError, match="config.json: missing"):
        ModelConfig.from_dir(tmp_path)
    with pytest.raises(ModelLoadError, match="does not exist"):
        ModelConfig.from_dir(tmp_path / "nowhere")


def test_unknown_architecture(model_dir):
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg["architectures"] = ["GPT2LMHeadModel"]
    (model_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="unsupported architecture.*GPT2LMHeadModel"):
        ModelConfig.from_dir(model_dir)


def test_missing_weights_file(model_dir):
    (model_dir / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="no model.safetensors"):
        load_model(model_dir)


def test_missing_tokenizer(model_dir):
    (model_dir / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError, match="tokenizer.json: missing"):
        LLM(model_dir)


def test_shape_mismatch_names_file_and_tensor(model_dir):
    sd = load_file(model_dir / "model.safetensors")
    sd["model.layers.1.mlp.up_proj.weight"] = torch.zeros(3, 3)
    save_file(sd, model_dir / "model.safetensors")
    with pytest.raises(ModelLoadError, match=r"model.safetensors: tensor 'model.layers.1.mlp.up_proj.weight' has shape \(3, 3\)"):
        load_model(model_dir)


def test_missing_tensor_is_named(model_dir):
    sd = load_file(model_dir / "model.safetensors")
    del sd["model.layers.0.self_attn.k_proj.bias"]
    save_file(sd, model_dir / "model.safetensors")
    with pytest.raises(ModelLoadError, match="lacks tensors layers.0.self_attn.k_proj.bias"):
        load_model(model_dir)


def test_missing_shard_is_named(model_dir, tmp_path):
    index = {"weight_map": {"model.norm.weight": "model-00002-of-00002.safetensors"}}
    (model_dir / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelLoadError, match="model-00002-of-00002.safetensors, which is missing"):
        load_model(model_dir)


def test_dummy_load_needs_no_weights(model_dir):
    (model_dir / "model.safetensors").unlink()
    model = load_model(model_dir, load_format="dummy")
    assert model.lm_head.weight is model.embed_tokens.weight  # tied, as the config says
    assert float(model.layers[0].mlp.gate_up_proj.weight.std()) > 0


def test_transformers_v4_rope_fields(model_dir):
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg["rope_theta"] = 500000.0
    cfg["rope_scaling"] = {"type": "linear", "factor": 2.0}
    c = ModelConfig.from_dict(cfg)
    assert c.rope_theta == 500000.0 and c.rope_scaling["rope_type"] == "linear"
    cfg["rope_scaling"] = {"rope_type": "yarn", "factor": 2.0}
    with pytest.raises(ModelLoadError, match="rope type 'yarn' is not supported"):
        ModelConfig.from_dict(cfg)


def test_loading_a_model_imports_neither_torch_dynamo_nor_sympy():
    """Building the model left nn.Embedding to initialise its weight on the meta device, which
    imported torch._dynamo (1.5 s of every pod's start, for weights about to be overwritten), and
    `to_empty` imported torch's meta registrations and sympy (0.35 s)."""
    import subprocess
    import sys
    from pathlib import Path

    bundled = Path(__file__).resolve().parents[1] / "models" / "correct-6m"
    code = ("import sys; from fleetserve.model.loader import load_model; "
            f"load_model({str(bundled)!r}); print('torch._dynamo' in sys.modules, 'sympy' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "False False", r.stderr[-2000:]


def test_shard_names_outside_the_model_are_refused(model_dir):
    index = {"weight_map": {"model.norm.weight": "../elsewhere/model.safetensors"}}
    (model_dir / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelLoadError, match="shard names must be paths inside the model"):
        load_model(model_dir)
