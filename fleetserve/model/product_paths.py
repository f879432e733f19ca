"""Which implementation runs each linear product, chosen by measurement at start-up.

CPUs of one machine kind differ (AVX-512 with VNNI and BF16, or AVX2 and FMA only), and
which product is fastest differs with them and with the model's shapes: oneDNN's blocked
float layout was 1.4x plain `F.linear` at the 0.5B shape on one CPU and slower on the 5M
model on another; int8's `torch._int_mm` is exact only where the trial in quantization.py
says so. So, for every distinct layer shape of the model, each candidate that runs here and
gives the reference's numbers is timed at about a decode step's rows, interleaved, up to five
rounds within ROUNDS_BUDGET, and the fastest serves every layer of that shape; one log line says
what was chosen. A timed call is what one serving step asks of the shape: every layer of it
once, at a row count the candidate has not run before, as a step's mostly is. oneDNN builds a
kernel (a primitive) for every new row count, 0.4-0.6 ms at the bundled model's shapes where one
product takes 0.1-0.35, shared by the layers of the step, and keeps them (about 0.7 MiB per row
count; 1,024 by default), which the many row counts of a pod's steps overrun. Timed at one row
count over and over, the reordered weights looked as fast as `F.linear` on the bundled model,
and a pod serving its correction traffic on them grew by 800 MiB and held 1.2x fewer requests/s
within p99 < 1 s (BENCHMARKS.md, issue 19, fifth part). Forcing a path (`--float-linear`,
`--int8-product`) skips the timing and fails at start-up when this CPU cannot run it.

Candidates:
- float layers (`nn.Linear`): `plain` (F.linear) and `onednn` (weights reordered once,
  model/onednn_linear.py), the same numbers up to float32 rounding (below 16 rows, and for some
  shapes at any row count, the two libraries sum in another order). bfloat16 and float16 ones are
  served with their rows padded to a multiple of 16 (model/row_buckets.py), and timed so. On the
  CPU the engine also has each shape padded to the row multiple at which a row's numbers do not
  depend on the row count (model/row_invariance.py; float32 with MKL on the AVX2 EPYC measured: 4),
  whichever product serves it.
- int8 layers (`QuantLinear`): `int-mm` (torch._int_mm), `fbgemm` (fbgemm's u8 x s8 kernel) and
  `float` (the same 8-bit values multiplied in float32): the same numbers up to float32 rounding,
  each 8-bit one only where its trial product is exact for the layer's weights.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from fleetserve.model.onednn_linear import OneDNNLinear, onednn_fails
from fleetserve.model.quantization import INT8_PRODUCTS, QuantLinear, product_fails
from fleetserve.model.row_buckets import ROW_MULTIPLE, RowBuckets, pads_rows
from fleetserve.model.row_invariance import MEASURED_COLUMNS, product_multiple
from fleetserve.model.timing import fastest, measure

log = logging.getLogger(__name__)

FLOAT_PATHS = ("plain", "onednn")
CHOICES = {"float_linear": ("auto",) + FLOAT_PATHS, "int8_product": ("auto",) + INT8_PRODUCTS}
ROUNDS_BUDGET = 0.2  # seconds of timed rounds per shape: five for a small model, one for a 0.5B lm_head
# Another candidate replaces the reference (plain F.linear, torch._int_mm) only when this much
# faster. At the bundled model's 768-wide gate/up product the two float paths came within 3% of
# each other, and one start in four chose oneDNN on that noise; an engine so started spent 5% more
# CPU per correction request (8.81 against 8.37 ms, twice each) and held 80 MiB more (its kernels per
# row count: BENCHMARKS.md, issue 19, seventh part). Where oneDNN won, it won by 1.3-1.5x.
MARGIN = 0.05


def _float_candidates(layer: nn.Linear, forced: str) -> dict[str, nn.Module]:
    dtype = layer.weight.dtype
    takes = layer.weight.is_cpu and torch.backends.mkldnn.is_available() and dtype in (torch.float32, torch.bfloat16)
    why = onednn_fails(dtype) if takes else \
        f"oneDNN-layout linears take float32 or bfloat16 weights on the CPU, not {dtype} on {layer.weight.device}"
    runs_onednn = why is None
    if forced == "onednn" and not runs_onednn:
        raise ValueError(f"--float-linear onednn does not run here: {why}")
    out: dict[str, nn.Module] = {}
    if forced in ("auto", "plain"):
        out["plain"] = layer
    if forced in ("auto", "onednn") and runs_onednn:
        out["onednn"] = OneDNNLinear(layer)
    return out


def _int8_candidates(fails: dict[str, list[str | None]], forced: str) -> list[str]:
    """`fails`: per product, why it is not exact for each layer of the shape (None: it is)."""
    if forced != "auto":
        why = next((w for w in fails[forced] if w), None)
        if why:
            raise ValueError(f"--int8-product {forced} does not run here: {why}")
        return [forced]
    return [p for p in INT8_PRODUCTS if fails[p][0] is None]


def choose_products(model: nn.Module, rows: int, float_linear: str = "auto", int8_product: str = "auto",
                    rounds: int = 5, thread_counts: Sequence[int] = ()) -> dict[str, dict[str, Any]]:
    """Give every float and int8 linear layer of `model` its product, in place; returns, per
    shape, {"path", "layers", "rows_padded_to", "ms": {candidate: fastest call}} (ms empty when
    nothing was timed). With `thread_counts` (the engine's), a CPU shape's rows are also padded to
    the multiple at which each row's numbers do not depend on the row count (model/row_invariance.py),
    measured on those thread counts: "same_bits_at" (None: no candidate gave the same bits)."""
    for name, value in (("float_linear", float_linear), ("int8_product", int8_product)):
        if value not in CHOICES[name]:
            raise ValueError(f"{name.replace('_', '-')}: {value!r}; choose from {', '.join(CHOICES[name])}")
    groups: dict[tuple, list[tuple[nn.Module, str, nn.Module]]] = {}
    for parent in list(model.modules()):
        for child_name, child in parent.named_children():
            if type(child) is nn.Linear:
                key = ("float", child.in_features, child.out_features, child.weight.dtype, child.weight.device)
            elif isinstance(child, QuantLinear) and child.scheme == "int8":
                key = ("int8", child.in_features, child.out_features, child.weight.device)
            else:
                continue
            groups.setdefault(key, []).append((parent, child_name, child))
    chosen: dict[str, dict[str, Any]] = {}
    with torch.inference_mode():
        for key, members in groups.items():
            first = members[0][2]
            x = torch.randn(rows + rounds + 1, first.in_features, generator=torch.Generator().manual_seed(0)).to(
                first.weight.dtype if key[0] == "float" else torch.float32).to(first.weight.device)
            padded = key[0] == "float" and pads_rows(first.weight)
            if key[0] == "float":
                candidates = _float_candidates(first, float_linear)
                served = {n: RowBuckets(m) if padded else m for n, m in candidates.items()}
                timed = measure({n: _step_of(m, x, rows, len(members)) for n, m in served.items()}, rounds,
                                budget=ROUNDS_BUDGET) if len(candidates) > 1 else {}
                path = fastest(timed, MARGIN) if timed else next(iter(candidates))
                modules = [child for _, _, child in members]
                if path == "onednn":
                    modules = [candidates["onednn"] if child is first else OneDNNLinear(child) for child in modules]
                # a wide layer's row multiple measured on its first columns, served the same way: a 0.5B
                # lm_head's full width took 2.1 s (oneDNN) or 2.4 s (MKL) of a start, its first columns
                # 0.15 s and 0.13 s, the same multiples
                probe = modules[0]
                if first.out_features > MEASURED_COLUMNS:
                    probe = _first_columns(first)
                    probe = OneDNNLinear(probe) if path == "onednn" else probe
            else:
                # each layer's own weights decide (full-range ones from elsewhere saturate without VNNI)
                fails = {p: [product_fails(layer.weight, p) for _, _, layer in members] for p in INT8_PRODUCTS}
                options = _int8_candidates(fails, int8_product)

                def run(p: str) -> Callable[[], Any]:
                    def product(rows_in: torch.Tensor) -> Any:
                        first.product = p
                        return first(rows_in)
                    return _step_of(product, x, rows, len(members))

                timed = measure({p: run(p) for p in options}, rounds, budget=ROUNDS_BUDGET) \
                    if len(options) > 1 else {}
                path = fastest(timed, MARGIN) if timed else options[0]
                for i, (_, _, layer) in enumerate(members):
                    layer.product = "float" if fails[path][i] else path
                modules = [layer for _, _, layer in members]
                probe = first
            multiple = ROW_MULTIPLE if padded else 1
            measured = bool(thread_counts) and key[-1].type == "cpu"
            same_bits = product_multiple(probe, x.dtype, thread_counts, start=multiple) if measured else None
            multiple = same_bits or multiple
            for (parent, child_name, child), module in zip(members, modules):
                if multiple > 1:
                    module = RowBuckets(module, multiple)
                if module is not child:
                    setattr(parent, child_name, module)
            label = f"{key[0]} {first.in_features}x{first.out_features}"
            forced = (float_linear if key[0] == "float" else int8_product) != "auto"
            chosen[label] = {"path": path, "layers": len(members), "forced": forced,
                             "rows_padded_to": multiple if multiple > 1 else None,
                             "ms": {n: round(t * 1e3, 4) for n, t in timed.items()}}
            if measured:
                chosen[label]["same_bits_at"] = same_bits
    if chosen:
        log.info("linear products at %d rows (ms: every layer of the shape at a new row count): %s", rows,
                 "; ".join(_describe(label, c) for label, c in chosen.items()))
    return chosen


def _first_columns(layer: nn.Linear) -> nn.Linear:
    """A float layer of the first MEASURED_COLUMNS outputs of `layer` (views of its weights)."""
    narrow = nn.Linear(layer.in_features, MEASURED_COLUMNS, bias=layer.bias is not None, device="meta")
    narrow.weight = nn.Parameter(layer.weight.detach()[:MEASURED_COLUMNS], requires_grad=False)
    if layer.bias is not None:
        narrow.bias = nn.Parameter(layer.bias.detach()[:MEASURED_COLUMNS], requires_grad=False)
    return narrow


def _step_of(product: Callable[[torch.Tensor], Any], x: torch.Tensor, rows: int, layers: int) -> Callable[[], Any]:
    """What a step asks of a shape: `layers` products on the first rows, rows + 1, ... of `x`,
    a new row count at each call."""
    counts = itertools.count(rows)

    def step() -> Any:
        rows_in = x[:next(counts)]
        for _ in range(layers):
            out = product(rows_in)
        return out
    return step


def _describe(label: str, c: dict[str, Any]) -> str:
    how = ", ".join(f"{n} {t:.3f} ms" for n, t in c["ms"].items()) if c["ms"] else \
        "forced" if c["forced"] else "the only one that runs here"
    padded = f", rows padded to {c['rows_padded_to']}s" if c.get("rows_padded_to") else ""
    return f"{label} x{c['layers']}: {c['path']} ({how}{padded})"
