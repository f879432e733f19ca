"""Each linear product's implementation, chosen by measurement at start-up
(model/product_paths.py), and int8 on CPUs whose 8-bit product saturates.

A CPU without VNNI is SIMULATED here where this one has it: `torch._int_mm` is replaced by
what oneDNN's AVX2 kernel computes (activations shifted to u8, u8 x s8 pairs summed into
saturating 16-bit lanes, the shift taken back out), so the tests pass, and check the same
thing, on AVX-512 and AVX2-only machines."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from fleetserve.engine.llm import LLM
from fleetserve.engine.sampling_params import SamplingParams
from fleetserve.model import quantization
from fleetserve.model.onednn_linear import OneDNNLinear
from fleetserve.model.product_paths import choose_products, fastest, measure
from fleetserve.model.quantization import QuantLinear, int8_matmul, linear_reference

GREEDY = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
PROMPTS = [[(5 * i + j) % 500 + 3 for j in range(10 + 3 * i)] for i in range(4)]


def saturating_int_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a [m, k] int8 x b [k, n] int8 as a pre-VNNI kernel multiplies them (vpmaddubsw)."""
    u = a.int() + 128
    w = b.int()
    pairs = (u[:, 0::2, None] * w[None, 0::2, :] + u[:, 1::2, None] * w[None, 1::2, :]).clamp(-32768, 32767)
    return pairs.sum(1) - 128 * w.sum(0)


@pytest.fixture
def no_vnni(monkeypatch):
    monkeypatch.setattr(torch, "_int_mm", saturating_int_mm)
    quantization.int8_product_exact.cache_clear()
    quantization.int8_weight_qmax.cache_clear()
    yield
    quantization.int8_product_exact.cache_clear()
    quantization.int8_weight_qmax.cache_clear()


def test_the_fastest_candidate_wins_and_a_tie_keeps_the_reference():
    assert fastest({"plain": 2.0, "onednn": 1.0}) == "onednn"
    assert fastest({"plain": 1.0, "onednn": 1.0}) == "plain"
    ticks = iter(range(100))
    calls = []
    timed = measure({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=3,
                    clock=lambda: next(ticks))
    assert timed == {"a": 1, "b": 1} and calls == ["a", "b"] * 4  # one untimed call each, then interleaved


def test_the_chosen_float_products_answer_as_plain_linears_and_the_choice_is_logged(tiny_model_dir, caplog):
    with caplog.at_level(logging.INFO, logger="fleetserve.model.product_paths"):
        auto = LLM(tiny_model_dir, max_num_seqs=4)
    assert "linear products at 4 rows: float" in caplog.text and "plain" in caplog.text
    plain = LLM(tiny_model_dir, max_num_seqs=4, float_linear="plain")
    assert not any(isinstance(m, OneDNNLinear) for m in plain.engine.runner.model.modules())
    onednn = LLM(tiny_model_dir, max_num_seqs=4, float_linear="onednn")
    assert not any(type(m) is nn.Linear for m in onednn.engine.runner.model.modules())
    want = [o.token_ids for o in plain.generate(PROMPTS, GREEDY)]
    assert [o.token_ids for o in auto.generate(PROMPTS, GREEDY)] == want
    assert [o.token_ids for o in onednn.generate(PROMPTS, GREEDY)] == want


def test_each_float_layer_shape_gets_the_faster_candidate(monkeypatch):
    """With one candidate made slow, every layer of each shape goes the other way."""
    model = nn.Sequential(nn.Linear(32, 48), nn.Linear(48, 32), nn.Linear(32, 48))
    real = OneDNNLinear.forward

    def slow(self, x):
        for _ in range(200):
            real(self, x)
        return real(self, x)

    monkeypatch.setattr(OneDNNLinear, "forward", slow)
    chosen = choose_products(model, rows=8)
    assert {c["path"] for c in chosen.values()} == {"plain"} and chosen["float 32x48"]["layers"] == 2
    assert all(type(m) is nn.Linear for m in model)


def test_a_cpu_without_vnni_keeps_7bit_int8_weights_and_its_fast_product_exact(no_vnni, caplog):
    assert not quantization.int8_product_exact(127) and quantization.int8_product_exact(63)
    with caplog.at_level(logging.INFO):
        layer = QuantLinear.from_linear(nn.Linear(256, 96, bias=False), "int8")
    assert int(layer.weight.abs().max()) == 63 and "within [-63, 63]" in caplog.text
    x = torch.randn(5, 256, generator=torch.Generator().manual_seed(1))
    fast = int8_matmul(x, layer.weight, layer.weight_scale, "int-mm")
    assert torch.allclose(fast, int8_matmul(x, layer.weight, layer.weight_scale, "float"), rtol=1e-5, atol=1e-5)
    ref = linear_reference(layer, x)
    assert ((fast - ref).norm() / ref.norm()) < 0.02
    # full-range weights (a checkpoint quantized elsewhere) would saturate: never given int-mm
    full = QuantLinear(256, 96, False, "int8")
    full.weight.copy_(torch.randint(-127, 128, (96, 256), dtype=torch.int8))
    model = nn.Sequential(full)
    assert choose_products(model, rows=4)["int8 256x96"]["path"] == "float"
    with pytest.raises(ValueError, match="int8-product int-mm does not run here: .*beyond \\[-63, 63\\]"):
        choose_products(model, rows=4, int8_product="int-mm")


def test_int8_serves_the_same_tokens_whichever_product_runs(tiny_model_dir, no_vnni):
    outs = {}
    for product in ("int-mm", "float", "auto"):
        llm = LLM(tiny_model_dir, max_num_seqs=4, quantization="int8", int8_product=product)
        layers = [m for m in llm.engine.runner.model.modules() if isinstance(m, QuantLinear)]
        assert layers and all(int(m.weight.abs().max()) <= 63 for m in layers)
        if product != "auto":
            assert {m.product for m in layers} == {product}
        outs[product] = [o.token_ids for o in llm.generate(PROMPTS, GREEDY)]
    assert outs["int-mm"] == outs["float"] == outs["auto"]


def test_a_cpu_whose_8bit_product_does_not_run_multiplies_in_float32(tiny_model_dir, monkeypatch):
    def broken(a, b):
        raise RuntimeError("_int_mm: not implemented for this CPU")

    monkeypatch.setattr(torch, "_int_mm", broken)
    quantization.int8_product_exact.cache_clear()
    quantization.int8_weight_qmax.cache_clear()
    try:
        llm = LLM(tiny_model_dir, max_num_seqs=2, quantization="int8")
        layers = [m for m in llm.engine.runner.model.modules() if isinstance(m, QuantLinear)]
        assert {m.product for m in layers} == {"float"} and int(layers[0].weight.abs().max()) == 127
        assert llm.generate("Hello", GREEDY)[0].finish_reason == "length"
        with pytest.raises(ValueError, match="int8-product int-mm does not run here"):
            LLM(tiny_model_dir, max_num_seqs=2, quantization="int8", int8_product="int-mm")
    finally:
        quantization.int8_product_exact.cache_clear()
        quantization.int8_weight_qmax.cache_clear()
