"""8-bit channel-wise weights: numerics, the quantized layer, compressed-tensors
checkpoints (ours and ones written the way llm-compressor writes them), and the
`fleetserve quantize` command with its quality gate.

The fp8 path runs emulated here (float8 values and scales multiplied in float32):
these machines have no GPU, so `torch._scaled_mm` itself is not exercised."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from fleetserve.engine.llm import LLM
from fleetserve.engine.sampling_params import SamplingParams
from fleetserve.model import compressed_tensors
from fleetserve.model.config import ModelConfig, ModelLoadError
from fleetserve.model.loader import load_model
from fleetserve.model.quant_groups import parse_groups
from fleetserve.model.quantization import (QMAX, QuantLinear, QuantSpec, dequantize_weight, linear_reference,
                                           quantize_tokens, quantize_weight)
from fleetserve.model.saver import write_quantized
from tests.conftest import make_hf_checkpoint

BUNDLED = Path(__file__).resolve().parents[1] / "models" / "correct-6m"


def _weights(out_f=96, in_f=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out_f, in_f, generator=g) * torch.logspace(-3, 0, out_f)[:, None]  # rows of very different size
    w[5] = 0.0  # an all-zero row must not divide by zero
    return w


@pytest.mark.parametrize("scheme", ["int8", "fp8"])
def test_round_trip_error_is_bounded_per_channel(scheme):
    w = _weights()
    q, scale = quantize_weight(w, scheme)
    assert q.dtype == {"int8": torch.int8, "fp8": torch.float8_e4m3fn}[scheme] and scale.shape == (w.shape[0],)
    err = (dequantize_weight(q, scale) - w).abs()
    if scheme == "int8":  # rounding to the nearest step of each row's own scale
        bound = scale[:, None] / 2 * (1 + 1e-5)
    else:  # e4m3: 3 mantissa bits (relative 2^-4), subnormal steps of 2^-9 scale near zero
        bound = w.abs() * 2.0 ** -4 + scale[:, None] * 2.0 ** -10 + 1e-12
    assert (err <= bound).all(), float((err - bound).max())
    # each row's largest weight maps to the format's largest value: the whole range is used
    nonzero = w.abs().amax(1) > 0
    assert torch.allclose(q.float().abs().amax(1)[nonzero], torch.full((int(nonzero.sum()),), QMAX[scheme]))
    assert (dequantize_weight(q, scale)[5] == 0).all()


@pytest.mark.parametrize("scheme", ["int8", "fp8"])
def test_quantized_linear_matches_its_dequantized_float_reference(scheme):
    lin = torch.nn.Linear(64, 96)
    lin.weight.data = _weights()
    layer = QuantLinear.from_linear(lin, scheme)
    x = torch.randn(3, 7, 64, generator=torch.Generator().manual_seed(1))
    y = layer(x)
    ref = linear_reference(layer, x)
    assert y.shape == (3, 7, 96) and y.dtype == x.dtype
    # the only extra error is each token's activations rounded to 8 bits with its own scale:
    # steps of max|x|/127 for int8 (~0.5% of the output), 2^-4 relative for e4m3 (~3%)
    rel = (y - ref).norm() / ref.norm()
    assert rel < (0.01 if scheme == "int8" else 0.05), float(rel)
    # a token's result does not depend on the other rows of its batch
    assert torch.equal(layer(x[0, :1]), y[0, :1])
    # and the layer computes exactly what its 8-bit parts say
    xq, xs = quantize_tokens(x.reshape(-1, 64), scheme)
    exact = (xq.double() @ layer.weight.double().t()) * xs.double() * layer.weight_scale.double() + lin.bias.double()
    assert torch.allclose(y.reshape(-1, 96).double(), exact, rtol=1e-5, atol=1e-6)


def test_groups_and_spec_reject_unknown_names():
    assert parse_groups("attention, mlp") == {"attention", "mlp"} and parse_groups("none") == frozenset()
    with pytest.raises(ValueError, match="unknown quantization group.*embeddings"):
        parse_groups("attention,embeddings")
    with pytest.raises(ValueError, match="unknown quantization scheme 'int4'"):
        QuantSpec("int4")
    assert QuantSpec("int8", frozenset({"lm_head"})).module_names(2) == ["lm_head"]


@pytest.mark.parametrize("scheme,lm_head", [("int8", True), ("fp8", False), ("fp8-weight", False)])
def test_auto_groups_are_each_schemes_own(tiny_model_dir, scheme, lm_head):
    """int8 covers the lm_head by default (it passed the quality gate with it), fp8 does not."""
    assert ("lm_head" in parse_groups("auto", scheme)) == lm_head == ("lm_head" in QuantSpec(scheme).groups)
    assert parse_groups("auto", scheme) >= {"attention", "mlp"} and parse_groups("auto") == frozenset()
    model = load_model(tiny_model_dir, quantization=scheme)  # the loader's default: auto
    assert isinstance(model.lm_head, QuantLinear) == lm_head
    assert isinstance(model.layers[0].mlp.down_proj, QuantLinear)


def _greedy(model_dir, n=6, **kw):
    llm = LLM(model_dir, max_num_seqs=4, **kw)
    prompts = [[(7 * i + j) % 500 + 3 for j in range(12 + i)] for i in range(4)]
    return [o.token_ids for o in llm.generate(prompts, SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True))]


def test_every_group_off_is_the_unquantized_model_exactly(tiny_model_dir):
    base = load_model(tiny_model_dir)
    off = load_model(tiny_model_dir, quantization="int8", quantize_groups=())
    assert not any(isinstance(m, QuantLinear) for m in off.modules())
    tokens = torch.randint(0, 500, (2, 9))
    assert torch.equal(base(tokens), off(tokens))
    assert _greedy(tiny_model_dir, quantization="fp8", quantize_groups=()) == _greedy(tiny_model_dir)


@pytest.mark.parametrize("scheme", ["int8", "fp8", "fp8-weight"])
def test_written_checkpoint_loads_as_quantization_at_load_time(tiny_model_dir, tmp_path, scheme):
    out = write_quantized(Path(tiny_model_dir), tmp_path / "q", scheme, frozenset({"attention", "mlp", "lm_head"}))
    raw = json.loads((out / "config.json").read_text())["quantization_config"]
    assert raw["quant_method"] == "compressed-tensors" and raw["ignore"] == []
    # fp8-weight is the weight-only layout: no input_activations, as vLLM reads W8A16 float8
    assert (raw["config_groups"]["group_0"]["input_activations"] is None) == (scheme == "fp8-weight")
    tensors = load_file(out / "model.safetensors")
    assert tensors["model.layers.0.self_attn.k_proj.weight"].dtype == {"int8": torch.int8}.get(scheme, torch.float8_e4m3fn)
    assert tensors["model.layers.0.mlp.up_proj.weight_scale"].shape[1] == 1
    assert tensors["model.embed_tokens.weight"].dtype == torch.float32
    stored = load_model(out)
    on_the_fly = load_model(tiny_model_dir, quantization=scheme, quantize_groups=("attention", "lm_head", "mlp"))
    a, b = dict(stored.named_buffers()), dict(on_the_fly.named_buffers())
    assert set(a) == set(b) and all(torch.equal(a[k].float(), b[k].float()) for k in a)
    assert _greedy(out) == _greedy(tiny_model_dir, quantization=scheme, quantize_groups=("attention", "mlp", "lm_head"))
    with pytest.raises(ValueError, match="holds .* weights; it cannot be served as --quantization none"):
        load_model(out, quantization="none")


def _foreign_checkpoint(src: Path, dst: Path, quantization_config: dict, targets) -> Path:
    """Quantized the way llm-compressor lays it out: separate q/k/v and gate/up
    projections, bfloat16 scales of shape [out, 1], our code not involved."""
    dst.mkdir()
    tensors = load_file(src / "model.safetensors")
    for name in list(tensors):
        if name.endswith(".weight") and targets(name):
            w = tensors[name].float()
            scale = w.abs().amax(1, keepdim=True) / 127
            tensors[name] = torch.round(w / scale).clamp(-127, 127).to(torch.int8)
            tensors[name.replace(".weight", ".weight_scale")] = scale.to(torch.bfloat16)
    save_file(tensors, dst / "model.safetensors")
    raw = json.loads((src / "config.json").read_text())
    raw["quantization_config"] = quantization_config
    (dst / "config.json").write_text(json.dumps(raw))
    for f in src.iterdir():
        if f.name not in ("model.safetensors", "config.json"):
            (dst / f.name).write_bytes(f.read_bytes())
    return dst


W8A8 = {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel", "dynamic": False}
TOKEN = {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "token", "dynamic": True}


def test_loads_a_compressed_tensors_checkpoint_written_by_other_tools(tmp_path):
    src, _ = make_hf_checkpoint(tmp_path / "qwen2", "qwen2")  # q/k/v bias, tied embeddings
    qc = {"quant_method": "compressed-tensors", "format": "int-quantized", "ignore": ["lm_head"],
          "config_groups": {"group_0": {"targets": ["Linear"], "weights": W8A8, "input_activations": TOKEN}}}
    dst = _foreign_checkpoint(src, tmp_path / "w8a8", qc, lambda n: ".layers." in n and "_proj" in n)
    model = load_model(dst)
    assert isinstance(model.layers[1].self_attn.qkv_proj, QuantLinear)
    assert isinstance(model.lm_head, torch.nn.Linear) and model.lm_head.weight is model.embed_tokens.weight
    # same scales as written, bf16 -> float32, in the fused layer's rows
    k_scale = load_file(dst / "model.safetensors")["model.layers.1.self_attn.k_proj.weight_scale"].float().reshape(-1)
    q_rows = model.cfg.num_heads * model.cfg.head_dim
    assert torch.equal(model.layers[1].self_attn.qkv_proj.weight_scale[q_rows:q_rows + k_scale.numel()], k_scale)
    # close to the float model it came from
    tokens = torch.randint(0, 500, (2, 10))
    ref, got = load_model(src)(tokens), model(tokens)
    assert ((got - ref).norm() / ref.norm()) < 0.05
    spec = compressed_tensors.read(qc, ModelConfig.from_dir(dst))
    assert sorted(spec.modules) == sorted(QuantSpec("int8", frozenset({"attention", "mlp"})).module_names(2))


def test_fp8_weight_only_layer_is_its_dequantized_reference_without_activation_rounding():
    lin = torch.nn.Linear(64, 96)
    lin.weight.data = _weights()
    layer = QuantLinear.from_linear(lin, "fp8-weight")
    assert layer.weight.dtype == torch.float8_e4m3fn
    assert torch.equal(layer.weight, QuantLinear.from_linear(lin, "fp8").weight)  # the same stored values
    x = torch.randn(3, 7, 64, generator=torch.Generator().manual_seed(1))
    y, ref = layer(x), linear_reference(layer, x)
    assert torch.allclose(y, ref, rtol=1e-6, atol=1e-6)  # fp32: exactly the reference product
    # strictly closer to the float layer than fp8 with activations rounded per token
    w8a8 = QuantLinear.from_linear(lin, "fp8")(x)
    exact = lin(x)
    assert (y - exact).norm() < (w8a8 - exact).norm()
    yb = layer.to(torch.bfloat16)(x.bfloat16())
    assert yb.dtype == torch.bfloat16 and ((yb.float() - ref).norm() / ref.norm()) < 0.01


@pytest.mark.parametrize("change, message", [
    (dict(input_activations=None), "int8 weight-only checkpoints are not supported"),
    (dict(weights={**W8A8, "strategy": "block"}), "weight strategy 'block'"),
    (dict(weights={**W8A8, "num_bits": 4}), "4-bit int weights are not supported"),
    (dict(targets=["re:.*q_proj$"]), "quantizes only some of layers.0.self_attn.q_proj"),
])
def test_unsupported_quantization_configs_fail_at_start_up_naming_the_problem(tiny_model_dir, change, message):
    group = {"targets": ["Linear"], "weights": W8A8, "input_activations": TOKEN, **change}
    qc = {"quant_method": "compressed-tensors", "config_groups": {"group_0": group}, "ignore": ["lm_head"]}
    with pytest.raises(ModelLoadError, match=message):
        compressed_tensors.read(qc, ModelConfig.from_dir(tiny_model_dir))
    with pytest.raises(ModelLoadError, match="quant_method 'gptq'"):
        compressed_tensors.read({"quant_method": "gptq"}, ModelConfig.from_dir(tiny_model_dir))


def test_a_config_that_does_not_match_the_tensors_fails_naming_the_tensor(tiny_model_dir, tmp_path):
    # config says float checkpoint; the tensors are int8
    qc = {"quant_method": "compressed-tensors", "ignore": ["lm_head"],
          "config_groups": {"group_0": {"targets": ["re:.*mlp.*"], "weights": W8A8, "input_activations": TOKEN}}}
    dst = _foreign_checkpoint(Path(tiny_model_dir), tmp_path / "bad", qc, lambda n: "self_attn.o_proj" in n)
    with pytest.raises(ModelLoadError, match=r"tensor '\S+(mlp\.\w+|o)_proj\.weight(_scale)?' "
                                             r"(is torch\.\w+ but config.json implies|unexpected)"):
        load_model(dst)


def _quantize_cli(*args):
    return subprocess.run([sys.executable, "-m", "fleetserve", "quantize", *args],
                          capture_output=True, text=True, timeout=600)


# A small evaluation set of our own, so the gate runs wherever the repository does (the
# shared JFLEG data may not sit beside a clone).
MINI_SET = [
    ("She go to school every day .", "She goes to school every day ."),
    ("I has a apple .", "I have an apple ."),
    ("He don't like the cold weather .", "He doesn't like the cold weather ."),
    ("They was at home yesterday .", "They were at home yesterday ."),
    ("We enjoyed the trip to mountains .", "We enjoyed the trip to the mountains ."),
    ("My brother have two cat .", "My brother has two cats ."),
    ("The childs are playing outside .", "The children are playing outside ."),
    ("I am agree with you .", "I agree with you ."),
]


def _mini_set(path: Path) -> Path:
    path.mkdir()
    (path / "mini.src").write_text("\n".join(src for src, _ in MINI_SET) + "\n")
    (path / "mini.ref0").write_text("\n".join(ref for _, ref in MINI_SET) + "\n")
    return path


@pytest.mark.slow
def test_quantize_gate_passes_and_writes_or_fails_and_writes_nothing(tmp_path):
    mini = str(_mini_set(tmp_path / "mini"))
    ok = _quantize_cli(str(BUNDLED), str(tmp_path / "int8"), "--gate", "--eval-set", mini, "--max-gleu-drop", "5")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "quality gate: PASSED" in ok.stdout and (tmp_path / "int8" / "model.safetensors").is_file()
    # an objective no model can meet: the gate fails, says why, and leaves nothing behind
    bad = _quantize_cli(str(BUNDLED), str(tmp_path / "fp8"), "--scheme", "fp8-channel", "--gate", "--eval-set", mini,
                        "--max-gleu-drop", "-50")
    assert bad.returncode == 1, bad.stderr[-2000:]
    assert "quality gate: FAILED" in bad.stdout and "GLEU dropped by" in bad.stdout
    assert not (tmp_path / "fp8").exists() and not (tmp_path / "fp8.partial").exists()
    again = _quantize_cli(str(tmp_path / "int8"), str(tmp_path / "twice"))
    assert again.returncode != 0 and "already quantized" in again.stderr


@pytest.mark.slow
def test_a_pod_serves_a_quantized_checkpoint_as_the_offline_engine_does(tiny_model_dir, tmp_path):
    import httpx
    from serving import server_process

    out = write_quantized(Path(tiny_model_dir), tmp_path / "q", "int8", frozenset({"attention", "mlp"}))
    llm = LLM(tiny_model_dir, max_num_seqs=4, quantization="int8")
    prompts = ["The quick brown fox", "Once upon a time"]
    params = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
    offline = [o.text for o in llm.generate(prompts, params)]
    for model, args in ((out, ()), (Path(tiny_model_dir), ("--quantization", "int8"))):
        with server_process(model, "--frontends", "1", "--max-num-seqs", "4", *args) as (url, _):
            served = [httpx.post(url + "/v1/completions", timeout=30, json={
                "prompt": p, "max_tokens": 8, "temperature": 0, "ignore_eos": True}).json()["choices"][0]["text"]
                for p in prompts]
        assert served == offline, model


@pytest.mark.slow
def test_bench_quant_times_every_path_and_variant(tiny_model_dir, tmp_path):
    out = tmp_path / "bq.json"
    r = subprocess.run([sys.executable, "-m", "fleetserve", "bench-quant", "--model", str(tiny_model_dir),
                        "--max-num-seqs", "4", "--rounds", "2", "--json", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(out.read_text())
    assert set(result["linear_paths_ms"]) == {"4", "200"}  # decode rows, prefill rows
    for paths in result["linear_paths_ms"].values():
        assert paths["float32"]["speedup_vs_float32"] == 1.0
        assert all(v["ms"] > 0 for v in paths.values()) and any(p.startswith("int8 per-token") for p in paths)
    engine = result["engine"]
    best = max(engine["float32"]["requests_per_s"], engine["bfloat16"]["requests_per_s"])
    for v in engine.values():
        assert len(v["rounds"]) == 2 and abs(v["ratio_to_best_float"] - v["requests_per_s"] / best) <= 1e-3
