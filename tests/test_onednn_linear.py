"""Float linear layers in oneDNN's layout compute what `nn.Linear` does, and the engine
answers the same with them as without. Which dtypes run this way depends on the CPU
(oneDNN's bf16 product needs AVX-512 BW/VL/DQ or AVX-NE-CONVERT): the expectations
here follow this CPU's features, so the tests pass on AVX2-only and AVX-512 machines."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fleetserve.engine.llm import LLM
from fleetserve.engine.sampling_params import SamplingParams
from fleetserve.model.onednn_linear import OneDNNLinear, onednn_fails
from fleetserve.model.product_paths import choose_products
from fleetserve.model.quantization import QuantLinear

BF16_ONEDNN = torch.ops.mkldnn._is_mkldnn_bf16_supported()  # what this CPU offers, read from its features


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_onednn_linear_matches_nn_linear(dtype, tol):
    if dtype == torch.bfloat16 and not BF16_ONEDNN:
        assert onednn_fails(dtype) is not None  # the start-up probe finds out, and nothing is swapped
        model = nn.Sequential(nn.Linear(8, 8).to(dtype))
        assert choose_products(model, rows=2)["float 8x8"]["path"] == "plain" and type(model[0].inner) is nn.Linear
        return
    torch.manual_seed(0)
    lin = nn.Linear(64, 96).to(dtype)
    x = torch.randn(3, 5, 64).to(dtype)
    got, want = OneDNNLinear(lin)(x), lin(x)
    assert got.shape == want.shape and got.dtype == want.dtype
    assert torch.allclose(got.float(), want.float(), rtol=tol, atol=tol)


def test_only_plain_float_linears_are_swapped():
    model = nn.Sequential(nn.Linear(8, 8), QuantLinear.from_linear(nn.Linear(8, 8), "int8"), nn.Embedding(4, 8))
    choose_products(model, rows=2, float_linear="onednn")
    assert isinstance(model[0], OneDNNLinear) and isinstance(model[1], QuantLinear)


def test_bfloat16_serves_on_this_cpu_with_the_linears_it_can_run(tiny_model_dir):
    llm = LLM(tiny_model_dir, max_num_seqs=2, dtype="bfloat16", float_linear="onednn" if BF16_ONEDNN else "auto")
    swapped = any(isinstance(m, OneDNNLinear) for m in llm.engine.runner.model.modules())
    assert swapped == BF16_ONEDNN
    out = llm.generate("The weather", SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True))[0]
    assert out.finish_reason == "length" and len(out.token_ids) == 6


def test_a_dtype_whose_onednn_linear_fails_keeps_plain_linears(tiny_model_dir, monkeypatch, caplog):
    """As on an AVX2-only CPU (simulated here by making oneDNN's bf16 product raise the
    error such a CPU gives): the engine starts, says so once, and serves with F.linear;
    forcing the oneDNN layout fails at start-up saying why."""
    real = OneDNNLinear.forward

    def forward(self, x):
        if x.dtype == torch.bfloat16:
            raise RuntimeError("mkldnn_linear: bf16 path needs the cpu support avx_ne_convert or avx512bw, "
                               "avx512vl and avx512dq")
        return real(self, x)

    monkeypatch.setattr(OneDNNLinear, "forward", forward)
    onednn_fails.cache_clear()
    try:
        llm = LLM(tiny_model_dir, max_num_seqs=2, dtype="bfloat16")
        plain = LLM(tiny_model_dir, max_num_seqs=2, dtype="bfloat16", float_linear="plain")
        with pytest.raises(ValueError, match="--float-linear onednn does not run here: .*avx512bw"):
            LLM(tiny_model_dir, max_num_seqs=2, dtype="bfloat16", float_linear="onednn")
    finally:
        onednn_fails.cache_clear()
    assert not any(isinstance(m, OneDNNLinear) for m in llm.engine.runner.model.modules())
    assert "do not run on this CPU" in caplog.text and "avx512bw" in caplog.text
    params = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
    assert llm.generate("Hello", params)[0].token_ids == plain.generate("Hello", params)[0].token_ids


def test_a_model_that_cannot_run_here_fails_at_start_up_naming_the_setting(tiny_model_dir, monkeypatch):
    from fleetserve.engine.model_runner import ModelRunner

    def check(self):
        raise RuntimeError("some kernel: not implemented for this CPU")

    monkeypatch.setattr(ModelRunner, "check", check)
    with pytest.raises(ValueError, match=r"dtype bfloat16.*not implemented for this CPU.*--dtype float32"):
        LLM(tiny_model_dir, max_num_seqs=2, dtype="bfloat16")
