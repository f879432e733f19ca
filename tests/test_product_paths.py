"""Each linear product's implementation, chosen by measurement at start-up
(model/product_paths.py), and int8 on CPUs whose 8-bit product saturates.

A CPU without VNNI is SIMULATED here where this one has it: `torch._int_mm` and fbgemm's
kernel are replaced by what their AVX2 kernels compute (activations shifted to u8, u8 x s8
pairs summed into saturating 16-bit lanes, the shift taken back out), so the tests pass, and
check the same thing, on AVX-512 and AVX2-only machines. The real fbgemm product is checked
against the float32 one on whatever CPU runs the tests."""

from __future__ import annotations

import logging
import time

import pytest
import torch
from torch import nn

from fleetserve.engine.llm import LLM
from fleetserve.engine.sampling_params import SamplingParams
from fleetserve.model import quantization
from fleetserve.model.onednn_linear import OneDNNLinear
from fleetserve.model.product_paths import choose_products
from fleetserve.model.timing import fastest, measure
from fleetserve.model.quantization import QuantLinear, int8_matmul, linear_reference

GREEDY = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
PROMPTS = [[(5 * i + j) % 500 + 3 for j in range(10 + 3 * i)] for i in range(4)]


def saturating_int_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a [m, k] int8 x b [k, n] int8 as a pre-VNNI kernel multiplies them (vpmaddubsw)."""
    u = a.int() + 128
    w = b.int()
    pairs = (u[:, 0::2, None] * w[None, 0::2, :] + u[:, 1::2, None] * w[None, 1::2, :]).clamp(-32768, 32767)
    return pairs.sum(1) - 128 * w.sum(0)


def saturating_fbgemm(rounded: torch.Tensor, packed) -> torch.Tensor:
    """`quantization.fbgemm_linear` as a pre-VNNI kernel computes it."""
    qw, _ = torch.ops.quantized.linear_unpack(packed)
    acc = saturating_int_mm(rounded.to(torch.int8), qw.int_repr().t())
    return acc.float() * qw.q_per_channel_scales().float()


def clear_trials() -> None:
    quantization.int8_product_exact.cache_clear()
    quantization.int8_weight_qmax.cache_clear()


@pytest.fixture
def no_vnni(monkeypatch):
    monkeypatch.setattr(torch, "_int_mm", saturating_int_mm)
    monkeypatch.setattr(quantization, "fbgemm_linear", saturating_fbgemm)
    clear_trials()
    yield
    clear_trials()


def test_the_fastest_candidate_wins_and_a_tie_keeps_the_reference():
    assert fastest({"plain": 2.0, "onednn": 1.0}) == "onednn"
    assert fastest({"plain": 1.0, "onednn": 1.0}) == "plain"
    # within the margin the reference stays (start-up timings vary by a few percent)
    assert fastest({"plain": 1.0, "onednn": 0.97}, margin=0.05) == "plain"
    assert fastest({"plain": 1.0, "onednn": 0.90}, margin=0.05) == "onednn"
    assert fastest({"plain": 1.0, "onednn": 0.97, "other": 0.5}, margin=0.05) == "other"
    ticks = iter(range(100))
    calls = []
    timed = measure({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=3,
                    clock=lambda: next(ticks))
    assert timed == {"a": 1, "b": 1} and calls == ["a", "b"] * 4  # one untimed call each, then interleaved
    # a budget the untimed calls (one tick here) say fits two rounds: two rounds, never fewer than one
    ticks, calls = iter(range(100)), []
    measure({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=5,
            clock=lambda: next(ticks), budget=2)
    assert calls == ["a", "b"] * 3
    ticks, calls = iter(range(100)), []
    measure({"a": lambda: calls.append("a")}, rounds=5, clock=lambda: next(ticks), budget=0.1)
    assert calls == ["a"] * 2


def test_the_chosen_float_products_answer_as_plain_linears_and_the_choice_is_logged(tiny_model_dir, caplog):
    with caplog.at_level(logging.INFO, logger="fleetserve.model.product_paths"):
        auto = LLM(tiny_model_dir, max_num_seqs=4)
    assert "linear products at 4 rows (ms: every layer of the shape at a new row count): float" in caplog.text and "plain" in caplog.text
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


def test_each_timed_call_is_a_steps_products_at_a_row_count_new_to_its_candidate(monkeypatch):
    """A serving step's row count is mostly new, and oneDNN builds a kernel for each new one,
    which the step's layers of that shape share: timing one row count over and over hid that
    cost (BENCHMARKS.md, issue 19, fifth part), timing it once per product would overstate it."""
    seen: dict[str, list[int]] = {"plain": [], "onednn": []}
    real = OneDNNLinear.forward

    def counted(self, x):
        seen["onednn"].append(x.shape[0])
        return real(self, x)

    monkeypatch.setattr(OneDNNLinear, "forward", counted)
    layers = [nn.Linear(16, 24), nn.Linear(16, 24), nn.Linear(16, 24)]
    layers[0].register_forward_hook(lambda _m, args, _out: seen["plain"].append(args[0].shape[0]))
    choose_products(nn.Sequential(*layers), rows=8, rounds=3)
    for rows in seen.values():
        counts = rows[::3]
        assert rows == [n for n in counts for _ in range(3)]  # three layers of the shape at each count
        assert len(counts) >= 2 and len(set(counts)) == len(counts) and min(counts) == 8
    assert seen["plain"] == seen["onednn"]  # the same work for each


def test_a_cpu_without_vnni_keeps_7bit_int8_weights_and_its_fast_product_exact(no_vnni, caplog):
    for product in ("int-mm", "fbgemm"):
        assert not quantization.int8_product_exact(127, product) and quantization.int8_product_exact(63, product)
    with caplog.at_level(logging.INFO):
        layer = QuantLinear.from_linear(nn.Linear(256, 96, bias=False), "int8")
    assert int(layer.weight.abs().max()) == 63 and "within [-63, 63]" in caplog.text
    x = torch.randn(5, 256, generator=torch.Generator().manual_seed(1))
    fast = int8_matmul(x, layer.weight, layer.weight_scale, "int-mm")
    assert torch.allclose(fast, int8_matmul(x, layer.weight, layer.weight_scale, "float"), rtol=1e-5, atol=1e-5)
    packed = quantization.fbgemm_pack(layer.weight, layer.weight_scale)
    assert torch.allclose(int8_matmul(x, layer.weight, layer.weight_scale, "fbgemm", packed), fast, rtol=1e-5, atol=1e-5)
    ref = linear_reference(layer, x)
    assert ((fast - ref).norm() / ref.norm()) < 0.02
    # full-range weights (a checkpoint quantized elsewhere) would saturate: never given int-mm
    full = QuantLinear(256, 96, False, "int8")
    full.weight.copy_(torch.randint(-127, 128, (96, 256), dtype=torch.int8))
    model = nn.Sequential(full)
    assert choose_products(model, rows=4)["int8 256x96"]["path"] == "float"
    for product in ("int-mm", "fbgemm"):
        with pytest.raises(ValueError, match=f"int8-product {product} does not run here: .*beyond \\[-63, 63\\]"):
            choose_products(model, rows=4, int8_product=product)


def test_7bit_weights_only_for_a_product_much_faster_than_the_full_range_one(monkeypatch, caplog):
    """As on an AVX2-only EPYC: torch._int_mm exact with full-range weights but slow, fbgemm exact
    only with 7-bit ones (simulated) and faster: 7-bit weights. With _int_mm the faster one,
    full-range weights stay."""
    def slow_exact(a, b):
        time.sleep(0.2)
        return a.int() @ b.int()

    monkeypatch.setattr(torch, "_int_mm", slow_exact)
    monkeypatch.setattr(quantization, "fbgemm_linear", saturating_fbgemm)
    clear_trials()
    try:
        with caplog.at_level(logging.INFO):
            assert quantization.int8_weight_qmax() == 63
        assert "fbgemm's int8 linear, exact only there" in caplog.text and "faster than torch._int_mm" in caplog.text
        monkeypatch.setattr(torch, "_int_mm", lambda a, b: a.int() @ b.int())
        clear_trials()
        assert quantization.int8_weight_qmax() == 127
    finally:
        clear_trials()


def test_int8_serves_the_same_tokens_whichever_product_runs(tiny_model_dir, no_vnni):
    outs = {}
    for product in ("int-mm", "fbgemm", "float", "auto"):
        llm = LLM(tiny_model_dir, max_num_seqs=4, quantization="int8", int8_product=product)
        layers = [m for m in llm.engine.runner.model.modules() if isinstance(m, QuantLinear)]
        assert layers and all(int(m.weight.abs().max()) <= 63 for m in layers)
        if product != "auto":
            assert {m.product for m in layers} == {product}
        outs[product] = [o.token_ids for o in llm.generate(PROMPTS, GREEDY)]
    assert outs["int-mm"] == outs["fbgemm"] == outs["float"] == outs["auto"]


def test_the_real_fbgemm_product_equals_the_float32_one_where_its_trial_passes(tiny_model_dir):
    """Not simulated: this CPU's own fbgemm kernel, given the weights int8 keeps here."""
    clear_trials()
    layer = QuantLinear.from_linear(nn.Linear(256, 96, bias=False), "int8")
    x = torch.randn(7, 256, generator=torch.Generator().manual_seed(2)) * 3
    why = quantization.product_fails(layer.weight, "fbgemm")
    if why is not None:  # e.g. full-range weights where fbgemm has no VNNI kernel: never used, and said why
        with pytest.raises(ValueError, match="int8-product fbgemm does not run here"):
            LLM(tiny_model_dir, max_num_seqs=2, quantization="int8", int8_product="fbgemm")
        return
    packed = quantization.fbgemm_pack(layer.weight, layer.weight_scale)
    got = int8_matmul(x, layer.weight, layer.weight_scale, "fbgemm", packed)
    assert torch.allclose(got, int8_matmul(x, layer.weight, layer.weight_scale, "float"), rtol=1e-5, atol=1e-5)
    want = [o.token_ids for o in LLM(tiny_model_dir, max_num_seqs=4, quantization="int8",
                                     int8_product="float").generate(PROMPTS, GREEDY)]
    fb = LLM(tiny_model_dir, max_num_seqs=4, quantization="int8", int8_product="fbgemm")
    assert {m.product for m in fb.engine.runner.model.modules() if isinstance(m, QuantLinear)} == {"fbgemm"}
    assert [o.token_ids for o in fb.generate(PROMPTS, GREEDY)] == want


def test_a_cpu_whose_8bit_product_does_not_run_multiplies_in_float32(tiny_model_dir, monkeypatch):
    def broken(a, b):
        raise RuntimeError("_int_mm: not implemented for this CPU")

    monkeypatch.setattr(torch, "_int_mm", broken)
    monkeypatch.setattr(quantization, "fbgemm_linear", broken)
    clear_trials()
    try:
        llm = LLM(tiny_model_dir, max_num_seqs=2, quantization="int8")
        layers = [m for m in llm.engine.runner.model.modules() if isinstance(m, QuantLinear)]
        assert {m.product for m in layers} == {"float"} and int(layers[0].weight.abs().max()) == 127
        assert llm.generate("Hello", GREEDY)[0].finish_reason == "length"
        for product in ("int-mm", "fbgemm"):
            with pytest.raises(ValueError, match=f"int8-product {product} does not run here"):
                LLM(tiny_model_dir, max_num_seqs=2, quantization="int8", int8_product=product)
    finally:
        clear_trials()
