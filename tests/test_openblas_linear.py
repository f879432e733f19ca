"""Float32 products through numpy's OpenBLAS (`--float-linear openblas`): the same numbers as
`F.linear` up to float32 rounding, greedy output equal to transformers, OpenBLAS held to one
thread, and a clear start-up error where it cannot serve."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_info
from torch import nn

from fleetserve.engine.llm import LLM
from fleetserve.engine.sampling_params import SamplingParams
from fleetserve.model.openblas_linear import OpenBLASLinear
from fleetserve.model.product_paths import choose_products
from tests.test_hf_equivalence import MAX_NEW, hf_greedy, prompts


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_an_openblas_layer_answers_as_f_linear_and_holds_openblas_to_one_thread():
    torch.manual_seed(0)
    linear = nn.Linear(96, 40)
    layer = OpenBLASLinear(linear)
    assert all(lib["num_threads"] == 1 for lib in threadpool_info() if lib.get("internal_api") == "openblas")
    for shape in [(1, 96), (7, 96), (3, 5, 96)]:
        x = torch.randn(shape)
        with torch.inference_mode():
            got = layer(x)
        assert got.shape == (*shape[:-1], 40) and got.dtype == torch.float32
        assert torch.allclose(got, F.linear(x, linear.weight, linear.bias), rtol=1e-5, atol=1e-6)


def test_an_engine_on_openblas_products_matches_transformers(hf_checkpoint, one_thread):
    path, hf = hf_checkpoint
    llm = LLM(path, max_num_seqs=4, max_model_len=64, float_linear="openblas")
    model = llm.engine.runner.model
    assert not any(type(m) is nn.Linear for m in model.modules())
    assert any(isinstance(m, OpenBLASLinear) for m in model.modules())
    batch = prompts(0, [9, 4, 13])
    outs = llm.generate(batch, SamplingParams(max_tokens=MAX_NEW, temperature=0, ignore_eos=True))
    assert [o.token_ids for o in outs] == [hf_greedy(hf, p) for p in batch]


def test_openblas_forced_where_it_cannot_serve_fails_at_start_up_saying_why():
    model = nn.Sequential(nn.Linear(16, 24))
    with pytest.raises(ValueError, match="--float-linear openblas does not run here: .*one thread; .* on 2"):
        choose_products(model, rows=4, float_linear="openblas", thread_counts=(1, 2))
    with pytest.raises(ValueError, match="--float-linear openblas does not run here: .*float32 .*bfloat16"):
        choose_products(nn.Sequential(nn.Linear(16, 24).to(torch.bfloat16)), rows=4, float_linear="openblas",
                        thread_counts=(1,))
    # auto never picks it (forced only)
    assert choose_products(model, rows=4, thread_counts=(1,))["float 16x24"]["path"] in ("plain", "onednn")
