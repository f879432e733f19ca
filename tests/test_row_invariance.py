"""Rows padded so that a row's numbers do not depend on the rows computed with it: the measuring
policy on made-up kernels, the measured paddings on this CPU's real ones, and a token's logits
with speculation (verified among its draft tokens) bit for bit those of decoding it alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from fleetserve.engine.config import EngineConfig
from fleetserve.engine.engine_core import EngineCore
from fleetserve.engine.model_runner import Sequence
from fleetserve.model.row_buckets import RowBuckets
from fleetserve.model.row_invariance import (CHECKED_ROWS, attention_floor, describe,
                                             product_multiple, smallest_invariant, threads)

BUNDLED = Path(__file__).resolve().parents[1] / "models" / "correct-6m"
THREAD_COUNTS = sorted({1, torch.get_num_threads()})


def test_the_smallest_candidate_whose_every_size_matches_the_reference_on_every_thread_count():
    # a made-up kernel that gives other bits below 4 rows, and on two threads at 5 and 6 rows
    def run(n: int) -> torch.Tensor:
        off = n < 4 or (torch.get_num_threads() > 1 and n in (5, 6))
        return torch.tensor([1.0 + (1e-7 if off else 0.0)])

    assert smallest_invariant(run, lambda c: range(c, 17, c), [1]) == 4
    assert smallest_invariant(run, lambda c: range(c, 17), [1]) == 4  # a floor: every size from c
    assert smallest_invariant(run, lambda c: range(c, 17), [1, 2]) == 8  # the candidates: 1, 2, 4, 8, 16
    assert smallest_invariant(run, lambda c: range(c, 17, c), [1, 2]) == 4  # multiples of 4 skip 5 and 6
    assert smallest_invariant(lambda n: torch.tensor([float(n)]), lambda c: range(c, 17, c), [1]) is None
    assert describe({"Linear 2x3": 4, "Linear 3x2": 4}, 4) == \
        "products to multiples of 4 (every shape), attention to at least 4 queries"
    assert describe({"Linear 2x3": 4, "QuantLinear 3x2": None}, None) == \
        "products to multiples of 4 (Linear 2x3), none found (QuantLinear 3x2), attention unpadded (no query count found)"


def test_a_product_padded_to_its_measured_multiple_gives_a_row_the_same_bits_at_every_row_count():
    torch.manual_seed(0)
    linear = nn.Linear(256, 768, bias=False)
    multiple = product_multiple(linear, torch.float32, THREAD_COUNTS)
    assert multiple is not None, "no row multiple gives this CPU's float32 product the same bits"
    served = RowBuckets(linear, multiple)
    x = torch.randn(40, 256)
    with torch.inference_mode():
        reference = served(x)
        for n in THREAD_COUNTS:
            with threads(n):
                for rows in range(1, 41):
                    assert torch.equal(served(x[:rows]), reference[:rows]), (rows, n, multiple)


def test_attention_padded_to_its_measured_floor_gives_a_query_the_same_bits_at_every_query_count():
    floor = attention_floor(4, 4, 64, torch.float32, THREAD_COUNTS)
    assert floor is not None and floor <= CHECKED_ROWS
    q, k, v = torch.randn(2, 4, 24, 64), torch.randn(2, 4, 48, 64), torch.randn(2, 4, 48, 64)
    outs = []
    for t in range(1, 25):
        rows = max(t, floor)
        mask = torch.zeros(rows, 48).masked_fill_(torch.arange(48)[None, :] > 20 + torch.arange(rows)[:, None],
                                                  float("-inf"))
        outs.append(torch.nn.functional.scaled_dot_product_attention(q[:, :, :rows], k, v, attn_mask=mask)[:, :, 0])
    assert all(torch.equal(o, outs[-1]) for o in outs)


@pytest.mark.parametrize("quantization", ["auto", "int8"])
def test_a_token_verified_among_drafts_gets_the_logits_it_gets_decoded_alone(quantization):
    """What speculation's identity to greedy decoding rests on: the bundled model's logits for a
    token run with three proposed tokens after it equal, bit for bit, those of the token run
    alone (one row in its step), and so do the next token's."""
    torch.set_num_threads(1)
    try:
        engine = EngineCore(BUNDLED, EngineConfig(max_num_seqs=2, max_model_len=64, quantization=quantization))
        runner = engine.runner
        prompt, follow = [5, 40, 41, 42, 43, 44, 45, 46, 47, 9], [40, 41, 42, 43]
        n = len(prompt)

        def run(bucket: list[Sequence], seqs: list[Sequence] = ()) -> torch.Tensor:
            return runner.run(runner.build(bucket, [0] if bucket else [], list(seqs))).clone()

        run([], [Sequence(0, prompt, 0)])
        alone = [run([Sequence(0, [tok], n + i, 1)])[0] for i, tok in enumerate(follow[:2])]
        run([], [Sequence(0, prompt, 0)])  # the same slot again: its cache rewritten
        verified = run([Sequence(0, follow, n, len(follow))])
        assert torch.equal(verified[0], alone[0]) and torch.equal(verified[1], alone[1])
    finally:
        torch.set_num_threads(THREAD_COUNTS[-1])


@pytest.mark.parametrize("float_linear", ["plain", "onednn"])
def test_a_wide_layer_is_measured_on_its_first_columns_served_as_the_layer_is(float_linear, monkeypatch):
    """A 0.5B lm_head measured at full width took 2.1-2.4 s of a start; its first columns, served the
    same way (MKL or oneDNN), give the multiple the whole layer has."""
    import fleetserve.model.product_paths as product_paths
    probes = []
    real = product_paths.product_multiple

    def recorded(product, *args, **kwargs):
        probes.append((type(product).__name__, product.out_features))
        return real(product, *args, **kwargs)

    monkeypatch.setattr(product_paths, "product_multiple", recorded)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, product_paths.MEASURED_COLUMNS + 8, bias=False))
    full = model[0] if float_linear == "plain" else product_paths.OneDNNLinear(model[0])
    chosen = product_paths.choose_products(model, rows=4, float_linear=float_linear, thread_counts=THREAD_COUNTS)
    kind = "Linear" if float_linear == "plain" else "OneDNNLinear"
    assert probes == [(kind, product_paths.MEASURED_COLUMNS)]
    label = f"float 64x{product_paths.MEASURED_COLUMNS + 8}"
    assert chosen[label]["same_bits_at"] == real(full, torch.float32, THREAD_COUNTS)
