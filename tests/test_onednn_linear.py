"""Float linear layers in oneDNN's layout compute what `nn.Linear` does, and the engine
answers the same with them as without."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fleetserve.engine.llm import LLM
from fleetserve.engine.sampling_params import SamplingParams
from fleetserve.model.onednn_linear import OneDNNLinear, use_onednn_linears
from fleetserve.model.quantization import QuantLinear


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_onednn_linear_matches_nn_linear(dtype, tol):
    torch.manual_seed(0)
    lin = nn.Linear(64, 96).to(dtype)
    x = torch.randn(3, 5, 64).to(dtype)
    got, want = OneDNNLinear(lin)(x), lin(x)
    assert got.shape == want.shape and got.dtype == want.dtype
    assert torch.allclose(got.float(), want.float(), rtol=tol, atol=tol)


def test_only_plain_float_linears_are_swapped():
    model = nn.Sequential(nn.Linear(8, 8), QuantLinear.from_linear(nn.Linear(8, 8), "int8"), nn.Embedding(4, 8))
    assert use_onednn_linears(model) == 1
    assert isinstance(model[0], OneDNNLinear) and isinstance(model[1], QuantLinear)


def test_engine_outputs_are_the_same_with_and_without(tiny_model_dir):
    prompts = [[(5 * i + j) % 500 + 3 for j in range(10 + 3 * i)] for i in range(4)]
    params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
    on = LLM(tiny_model_dir, max_num_seqs=4)
    assert any(isinstance(m, OneDNNLinear) for m in on.engine.runner.model.modules())
    off = LLM(tiny_model_dir, max_num_seqs=4, onednn_linear=False)
    assert not any(isinstance(m, OneDNNLinear) for m in off.engine.runner.model.modules())
    assert [o.token_ids for o in on.generate(prompts, params)] == [o.token_ids for o in off.generate(prompts, params)]
