"""Reduced-precision products with their row counts rounded up (model/row_buckets.py): oneDNN
builds a kernel per new row count of a bfloat16 product, which a pod's steps ran into by the
thousand (BENCHMARKS.md, issue 19, seventh part)."""

from __future__ import annotations

import torch
from torch import nn

from fleetserve.engine.llm import LLM
from fleetserve.engine.sampling_params import SamplingParams
from fleetserve.model.product_paths import choose_products
from fleetserve.model.row_buckets import RowBuckets


class RowWise(nn.Module):
    """A product whose rows do not depend on each other, recording the row counts it sees."""

    def __init__(self):
        super().__init__()
        self.seen: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.shape[0])
        return torch.cat([x * 2, x[:, :1]], dim=1)


def test_rows_are_padded_to_the_multiple_and_only_the_real_rows_come_back():
    inner = RowWise()
    padded = RowBuckets(inner, multiple=16)
    for rows in (1, 15, 16, 17, 40):
        x = torch.randn(rows, 8, dtype=torch.bfloat16)
        assert torch.equal(padded(x), inner(x))  # the second call unpadded
    assert inner.seen[0::2] == [16, 16, 16, 32, 48]
    x = torch.randn(3, 5, 8, dtype=torch.bfloat16)  # leading dimensions kept
    assert torch.equal(padded(x), inner(x.reshape(15, 8)).reshape(3, 5, 9))


def test_bfloat16_layers_are_served_padded_and_float32_ones_are_not():
    model = nn.Sequential(nn.Linear(32, 48), nn.Linear(48, 32))
    choose_products(model, rows=8)
    assert not any(isinstance(m, RowBuckets) for m in model)
    half = nn.Sequential(nn.Linear(32, 48), nn.Linear(48, 32)).to(torch.bfloat16)
    x = torch.randn(5, 32, dtype=torch.bfloat16)
    with torch.inference_mode():
        want = half(x)
        chosen = choose_products(half, rows=8)
        assert all(isinstance(m, RowBuckets) for m in half)
        assert all(c["rows_padded_to"] == 16 for c in chosen.values())
        torch.testing.assert_close(half(x), want)


def test_a_bfloat16_engine_runs_every_product_at_a_multiple_of_16_rows(tiny_model_dir):
    llm = LLM(tiny_model_dir, max_num_seqs=4, dtype="bfloat16")
    seen: list[int] = []
    for module in llm.engine.runner.model.modules():
        if isinstance(module, RowBuckets):
            module.inner.register_forward_hook(lambda _m, args, _out: seen.append(args[0].shape[0]))
    prompts = [[(3 * i + j) % 200 + 3 for j in range(5 + 7 * i)] for i in range(3)]
    outs = llm.generate(prompts, SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True))
    assert [len(o.token_ids) for o in outs] == [6, 6, 6]
    assert seen and all(rows % 16 == 0 for rows in seen)

