"""Per-output-channel 8-bit weights: the numbers, the layer, and which layers get them.

Only the weights of the chosen linear layers are stored in 8 bits, with one float
scale per output channel (row). Embeddings, norms and the KV cache stay in the
model's dtype. Where the matrix product itself runs in 8 bits, each row of the
activations (one token) is quantized on the fly with its own scale, so a token's
result never depends on which other requests share its batch.

- int8: three products of the same 8-bit numbers, each used only where a trial
  product at start-up shows it exact, the fastest chosen by measurement
  (model/product_paths.py): `torch._int_mm` (int8 x int8 -> int32, oneDNN), fbgemm's
  u8 x s8 kernel (the rounded activations handed over with a zero point of 128, so
  its own quantization step is exact), or the 8-bit values multiplied in float32.
  Kernels for CPUs without VNNI (oneDNN's and fbgemm's) multiply u8 x s8 pairs into
  saturating 16-bit sums (vpmaddubsw): wrong by thousands for full-range weights,
  exact for weights within [-63, 63] (2 x 255 x 63 < 32768). Where the fastest
  exact product needs it, int8 layers quantized here keep 7-bit weights
  (`int8_weight_qmax`): on an AMD EPYC with AVX2 only, `_int_mm` was exact with
  full-range weights but ran 14x slower than float32, and fbgemm, exact with 7-bit
  weights, 3.8x faster (BENCHMARKS.md, "Every CPU of the kind").
- fp8 (float8 e4m3): `torch._scaled_mm` with row-wise scales on a CUDA device
  that has it (Hopper); elsewhere the same numbers are computed in float32 from
  the 8-bit values (emulated), so CPU tests cover the fp8 numerics.
- fp8-weight: float8 e4m3 weights with activations left in the model's dtype
  (what the public system shipped: "only the weights were quantized"). The
  product dequantizes the weight and multiplies in the activations' precision:
  the weights take half the memory of bf16, the arithmetic is not 8-bit.
  Greedy agreement with the float model is higher than with fp8 activations
  (BENCHMARKS.md, "Quality").
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fleetserve.model.quant_groups import DEFAULT_GROUPS, GROUPS
from fleetserve.model.timing import measure

log = logging.getLogger(__name__)

SCHEMES = ("int8", "fp8", "fp8-weight")
WEIGHT_ONLY = {"fp8-weight": "fp8"}  # scheme -> the 8-bit type of its weights; activations stay float
STORAGE = {"int8": torch.int8, "fp8": torch.float8_e4m3fn, "fp8-weight": torch.float8_e4m3fn}
QMAX = {"int8": 127.0, "fp8": float(torch.finfo(torch.float8_e4m3fn).max)}
QMAX["fp8-weight"] = QMAX["fp8"]



@dataclass(frozen=True)
class QuantSpec:
    """Which scheme, on which layer groups."""

    scheme: str
    groups: frozenset[str] | None = None  # None: the scheme's default (quant_groups.DEFAULT_GROUPS)

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"unknown quantization scheme {self.scheme!r}; choose from {', '.join(SCHEMES)} or none")
        if self.groups is None:
            object.__setattr__(self, "groups", frozenset(DEFAULT_GROUPS[self.scheme]))
        unknown = set(self.groups) - set(GROUPS)
        if unknown:
            raise ValueError(f"unknown quantization group(s) {', '.join(sorted(unknown))}; "
                             f"choose from {', '.join(GROUPS)}")

    def module_names(self, num_layers: int) -> list[str]:
        """Names (as in `Transformer.named_modules`) of the linear layers this spec quantizes."""
        names = []
        for group in GROUPS:
            if group not in self.groups:
                continue
            for suffix in GROUPS[group]:
                if suffix == "lm_head":
                    names.append(suffix)
                else:
                    names.extend(f"layers.{i}.{suffix}" for i in range(num_layers))
        return names



def quantize_weight(w: torch.Tensor, scheme: str, qmax: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(8-bit weight [out, in], float32 scale [out]) with w ~= q * scale[:, None]; `qmax`: the
    largest stored magnitude (default: the format's)."""
    w = w.detach().float()
    qmax = qmax or QMAX[scheme]
    scale = (w.abs().amax(dim=1) / qmax).clamp(min=1e-12)
    scaled = w / scale[:, None]
    if scheme == "int8":
        q = scaled.round().clamp(-qmax, qmax).to(torch.int8)
    else:  # fp8 and fp8-weight store the same e4m3 values
        q = scaled.clamp(-QMAX["fp8"], QMAX["fp8"]).to(torch.float8_e4m3fn)
    return q, scale


def dequantize_weight(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float() * scale.float()[:, None]


def _scaled_tokens(x: torch.Tensor, scheme: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row of x [rows, in] in float32 divided by its own scale (its largest magnitude maps
    to the scheme's largest value), and the scales [rows, 1]."""
    x = x.float()
    scale = (x.abs().amax(dim=1, keepdim=True) / QMAX[scheme]).clamp(min=1e-12)
    return x / scale, scale


def round_tokens(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row of x [rows, in] scaled by its own int8 scale and rounded, still as float32
    (integers within [-127, 127]), and the scales [rows, 1]."""
    scaled, scale = _scaled_tokens(x, "int8")
    return scaled.round_(), scale


def quantize_tokens(x: torch.Tensor, scheme: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row of x [rows, in] with its own scale: (8-bit rows, float32 scales [rows, 1])."""
    if scheme == "int8":
        rounded, scale = round_tokens(x)
        return rounded.to(torch.int8), scale  # |rounded| <= 127 by construction
    scaled, scale = _scaled_tokens(x, scheme)
    return scaled.clamp(-QMAX["fp8"], QMAX["fp8"]).to(torch.float8_e4m3fn), scale


# torch._int_mm, fbgemm's u8 x s8 kernel, or the same 8-bit values multiplied in float32
INT8_PRODUCTS = ("int-mm", "fbgemm", "float")
PRODUCT_NAMES = {"int-mm": "torch._int_mm", "fbgemm": "fbgemm's int8 linear"}
# A layer whose product was not measured (a compiled step) takes fbgemm first: _int_mm ran 14x
# slower than float32 on an AVX2-only EPYC, where fbgemm ran 3.8x faster.
UNMEASURED_ORDER = ("fbgemm", "int-mm", "float")
FBGEMM_ZERO_POINT = 128  # the activations' shift to u8: [-127, 127] -> [1, 255]


def fbgemm_pack(q: torch.Tensor, scale: torch.Tensor) -> Any:
    """fbgemm's prepacked form of the int8 weight q [out, in] with per-channel scales [out]."""
    with warnings.catch_warnings():
        # torch marks its quantized tensor types deprecated; they are the only way into fbgemm's
        # kernels in torch 2.13, which the requirements pin
        warnings.simplefilter("ignore")
        qw = torch._make_per_channel_quantized_tensor(q.cpu(), scale.double().cpu(),
                                                      torch.zeros(q.shape[0], dtype=torch.long), 0)
    engine = torch.backends.quantized.engine
    torch.backends.quantized.engine = "fbgemm"  # the packed weight keeps its engine's kernels
    try:
        return torch.ops.quantized.linear_prepack(qw, None)
    finally:
        torch.backends.quantized.engine = engine


def fbgemm_linear(rounded: torch.Tensor, packed: Any) -> torch.Tensor:
    """Integer-valued float32 rows [rows, in] times a packed weight, times its scales: fbgemm
    quantizes its input with scale 1 and zero point 128, exactly for integers within
    [-127, 127], and returns float32."""
    return torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(
        rounded, 1.0, FBGEMM_ZERO_POINT, packed)


def int8_matmul(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, product: str = "int-mm",
                packed: Any = None) -> torch.Tensor:
    """x [rows, in] (float) times the int8 weight q [out, in] with scales [out]: float32 [rows, out].
    `product`: "int-mm" or "fbgemm" (callers check it is exact here: `product_fails`; fbgemm takes
    `packed`, the weight from `fbgemm_pack`) or "float"."""
    if product == "fbgemm":
        rounded, xs = round_tokens(x)
        return fbgemm_linear(rounded, packed).mul_(xs)
    xq, xs = quantize_tokens(x, "int8")
    if product == "float":
        acc = xq.float() @ q.float().t()  # the same 8-bit values, exact up to float32 rounding
    else:
        acc = torch._int_mm(xq, q.t())
    # int32 x float32 promotes within the one pass; the weight scales then go in place
    return torch.mul(acc, xs).mul_(scale)


@functools.cache
def int8_product_exact(weight_qmax: int = 127, product: str = "int-mm") -> bool:
    """Whether this CPU's 8-bit `product` ("int-mm" or "fbgemm") gives the exact product of
    full-range int8 activations and weights within [-weight_qmax, weight_qmax]: found by one trial
    product, never assumed from the CPU's flags."""
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-127, 128, (32, 64), dtype=torch.int8, generator=g)
    a[0, :] = -127  # the corners a saturating kernel gets wrong first: every pair at full scale
    a[1, :] = 127
    b = torch.randint(-weight_qmax, weight_qmax + 1, (64, 96), dtype=torch.int8, generator=g)
    b[:, 0], b[:, 1] = weight_qmax, -weight_qmax
    exact = a.int() @ b.int()
    try:
        if product == "fbgemm":
            if "fbgemm" not in torch.backends.quantized.supported_engines:
                return False
            got = fbgemm_linear(a.float(), fbgemm_pack(b.t().contiguous(), torch.ones(96)))
            return torch.equal(got, exact.float())  # sums below 2^24: exact in float32
        return torch.equal(torch._int_mm(a, b), exact)
    except RuntimeError:
        return False


NARROW_GAIN = 2.0  # how much faster a product exact only with 7-bit weights must be to choose them


@functools.cache
def int8_weight_qmax() -> int:
    """The largest int8 weight magnitude quantization here stores: 127 where the fastest of this
    CPU's exact 8-bit products is exact with full-range weights, 63 where it is exact only within
    [-63, 63] (kernels without VNNI), 127 where none is exact (the product then runs in float32 and
    gains nothing from a narrower range). Which is fastest is timed, and 7-bit weights are chosen
    only for a product more than NARROW_GAIN times faster than the full-range one: on an AVX2-only
    EPYC, torch._int_mm was exact with full-range weights but 14x slower than float32, fbgemm exact
    only with 7-bit ones and 3.8x faster; a narrow margin would let the host's noise decide."""
    fast = [p for p in INT8_PRODUCTS if p != "float"]
    full = [p for p in fast if int8_product_exact(127, p)]
    narrow = [p for p in fast if p not in full and int8_product_exact(63, p)]
    if not narrow:
        return 127
    if full:
        times = measure({p: _trial_product(p) for p in full + narrow}, rounds=3)
        best_full, best_narrow = (min(group, key=times.__getitem__) for group in (full, narrow))
        if times[best_narrow] * NARROW_GAIN >= times[best_full]:
            return 127
        log.info("int8 weights are stored within [-63, 63]: %s, exact only there on this CPU (no VNNI), ran "
                 "%.0fx faster than %s, exact with full-range weights", PRODUCT_NAMES[best_narrow],
                 times[best_full] / times[best_narrow], PRODUCT_NAMES[best_full])
        return 63
    log.info("this CPU's 8-bit products saturate 16-bit sums (no VNNI): int8 weights are stored within "
             "[-63, 63], where they are exact")
    return 63


def _trial_product(product: str) -> Callable[[], Any]:
    """One product of a decode step's size (32 rows, 512 x 512), 7-bit weights, as `product` runs it."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 512, generator=g)
    q = torch.randint(-63, 64, (512, 512), dtype=torch.int8, generator=g)
    scale = torch.full((512,), 0.01)
    packed = fbgemm_pack(q, scale) if product == "fbgemm" else None
    return lambda: int8_matmul(x, q, scale, product, packed)


def product_fails(q: torch.Tensor, product: str) -> str | None:
    """Why the 8-bit `product` would not give the exact product with the int8 weight q here, or None."""
    if product == "float":
        return None
    name = PRODUCT_NAMES[product]
    if not q.is_cpu:
        return None if product == "int-mm" else f"{name} runs on the CPU only"
    if int8_product_exact(127, product):
        return None
    if int8_product_exact(63, product):
        if int(q.abs().max()) <= 63:
            return None
        return (f"this CPU's 8-bit product ({name}) saturates with weights beyond [-63, 63] (no VNNI), "
                "and this checkpoint's int8 weights use the full range")
    return f"this CPU's 8-bit product ({name}) does not give exact results or does not run"


def fp8_matmul(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """As `int8_matmul` for a float8 e4m3 weight: on the tensor cores where there are some, else emulated."""
    xq, xs = quantize_tokens(x, "fp8")
    if x.is_cuda and fp8_kernel_available(x.device):
        out_dtype = x.dtype if x.dtype in (torch.bfloat16, torch.float16) else torch.bfloat16
        return torch._scaled_mm(xq, q.t(), scale_a=xs, scale_b=scale.view(1, -1), out_dtype=out_dtype).float()
    # Emulated: the same 8-bit values and scales, multiplied in float32.
    return (xq.float() @ q.float().t()) * xs * scale


def weight_only_matmul(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x [rows, in] times the dequantized weight, in x's dtype: no rounding of the activations."""
    w = (q.to(x.dtype) * scale.to(x.dtype)[:, None]) if x.dtype != torch.float32 else dequantize_weight(q, scale)
    return F.linear(x, w).float()


def fp8_kernel_available(device: torch.device) -> bool:
    """A GPU whose tensor cores take float8 (compute capability 8.9 or newer)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)


class QuantLinear(nn.Module):
    """A linear layer with 8-bit weights and one scale per output channel.

    `weight` and `weight_scale` are named as in compressed-tensors checkpoints, so
    the loader and the writer need no mapping beyond the fused projections."""

    def __init__(self, in_features: int, out_features: int, bias: bool, scheme: str,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None):
        super().__init__()
        if scheme not in SCHEMES:
            raise ValueError(f"unknown quantization scheme {scheme!r}")
        self.in_features, self.out_features, self.scheme = in_features, out_features, scheme
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=STORAGE[scheme], device=device))
        self.register_buffer("weight_scale", torch.ones(out_features, dtype=torch.float32, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype, device=device), requires_grad=False) \
            if bias else None
        # int8 only: how the product runs; product_paths.py chooses at start-up, else the first
        # call takes the first of UNMEASURED_ORDER exact for these weights
        self.product: str | None = None
        self._packed: Any = None  # fbgemm's form of the weight, made at its first use

    @classmethod
    def from_linear(cls, linear: nn.Linear, scheme: str) -> "QuantLinear":
        w = linear.weight
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, scheme, w.dtype, w.device)
        q, scale = quantize_weight(w, scheme, int8_weight_qmax() if scheme == "int8" and w.is_cpu else None)
        layer.weight.copy_(q)
        layer.weight_scale.copy_(scale)
        if linear.bias is not None:
            layer.bias.data.copy_(linear.bias.detach())
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if self.scheme == "int8":
            if self.product is None:
                self.product = next(p for p in UNMEASURED_ORDER if product_fails(self.weight, p) is None)
            if self.product == "fbgemm" and self._packed is None:
                self._packed = fbgemm_pack(self.weight, self.weight_scale)
            y = int8_matmul(rows, self.weight, self.weight_scale, self.product, self._packed)
        elif self.scheme in WEIGHT_ONLY:
            y = weight_only_matmul(rows, self.weight, self.weight_scale)
        else:
            y = fp8_matmul(rows, self.weight, self.weight_scale)
        y = y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        product = f", product={self.product}" if self.scheme == "int8" else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, scheme={self.scheme}{product}"


def _swap(model: nn.Module, name: str, make) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, make(getattr(parent, child)))


def quantize_model(model: nn.Module, scheme: str, names: Iterable[str]) -> nn.Module:
    """Replace the named float linear layers by quantized ones, in place (at load time)."""
    for name in names:
        _swap(model, name, lambda lin: QuantLinear.from_linear(lin, scheme))
    return model


def prepare_quantized(model: nn.Module, scheme: str, names: Iterable[str]) -> nn.Module:
    """Empty quantized layers at `names`, for a loader to fill from a quantized checkpoint."""
    for name in names:
        _swap(model, name, lambda lin: QuantLinear(lin.in_features, lin.out_features, lin.bias is not None,
                                                   scheme, lin.weight.dtype, lin.weight.device))
    return model


def linear_reference(layer: QuantLinear, x: torch.Tensor) -> torch.Tensor:
    """What `layer` computes, in float32 from its dequantized weight (no activation rounding)."""
    return F.linear(x.float(), dequantize_weight(layer.weight, layer.weight_scale),
                    None if layer.bias is None else layer.bias.float())
