"""Rows padded so that a row's numbers do not depend on how many rows are computed with it.

Speculative decoding promises the greedy tokens of decoding without it, and the two compute a
token's logits in different company: without speculation one row per request and step, with it
that row among the request's proposed tokens. Kernels choose their code by the size of the
product: on an AVX2-only AMD EPYC (torch 2.13, MKL), a float32 product of fewer than 4 rows gives
each row other bits than a larger one (on two threads also 5-11 rows, which the library splits
into pieces under 4), and so does torch's CPU attention for a sequence of fewer than 4 query rows
(its inner products are such small products). The differences are in the last bits, and flip a
greedy token only at a near-tie; int8's per-row activation rounding turns them into whole
quantization steps, and there 2 of 1,449 correction sentences came out different with
speculation on (BENCHMARKS.md, issue 19, eighth part).

So at start-up, for each product shape as served and for attention, on every thread count the
engine runs on, the smallest row multiple (products) and query count (attention) at which every
row gets the bits it gets in a larger call is measured, and the engine pads to them:
products through `RowBuckets` (model/product_paths.py wraps each shape as it chooses its product),
attention through `ModelRunner.min_q_len`. Padding rows are zeros whose
results are dropped; a row's result never depends on the other rows' values, only on their
count. Where no candidate gives the same bits (on the AVX2 EPYC measured, one always did), nothing
is padded and the start-up line says so. CPU only: GPU kernels are not measured here.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn


CANDIDATES = (1, 2, 4, 8, 16)
CHECKED_ROWS = 16  # row counts up to this are compared with ...
REFERENCE_ROWS = 32  # ... the first rows of a call this large
MEASURED_COLUMNS = 8192  # a wider float product is measured on its first columns (product_paths.py)
_MULTIPLES: dict[tuple, int | None] = {}


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def smallest_invariant(run: Callable[[int], torch.Tensor], sizes: Callable[[int], Sequence[int]],
                       thread_counts: Sequence[int], candidates: Sequence[int] = CANDIDATES) -> int | None:
    """The first candidate c whose every size in `sizes(c)` gives, on every thread count, the same
    bits as the reference. `run(n)`: the result for size n, cut to what the reference is compared
    on (the rows every size has); the reference is `run(REFERENCE_ROWS)` on the first thread count."""
    with threads(thread_counts[0]):
        reference = run(REFERENCE_ROWS)
    for c in candidates:
        same = True
        for n in thread_counts:
            with threads(n):
                same = all(torch.equal(run(size), reference) for size in sizes(c))
            if not same:
                break
        if same:
            return c
    return None


def product_multiple(product: nn.Module, dtype: torch.dtype, thread_counts: Sequence[int],
                     start: int = 1) -> int | None:
    """The smallest row multiple (from `start`) at which `product` (a linear layer as served, inputs
    of `dtype`, on the CPU) gives every row the bits it has in a product of REFERENCE_ROWS rows, on
    every thread count. Measured once per process for each kind of product and shape: the kernel's
    choice by row count is measured, not the weights (a test process starts hundreds of engines).
    A layer wider than MEASURED_COLUMNS is measured on its first columns by the caller
    (model/product_paths.py), served as the layer is."""
    known = (type(product).__name__, product.in_features, product.out_features, getattr(product, "product", None),
             dtype, tuple(thread_counts), start)
    if known not in _MULTIPLES:
        x = torch.randn(REFERENCE_ROWS, product.in_features, generator=torch.Generator().manual_seed(0)).to(dtype)
        with torch.inference_mode():
            _MULTIPLES[known] = smallest_invariant(
                lambda n: product(x[:n])[:1].clone(),
                lambda c: range(c, CHECKED_ROWS + 1, c),
                thread_counts, [c for c in CANDIDATES if c >= start])
    return _MULTIPLES[known]


def attention_floor(num_heads: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype,
                    thread_counts: Sequence[int]) -> int | None:
    """The smallest query count at which the step's attention call (model/llama.py: the query heads
    of one KV head stacked as that head's rows, an additive causal mask) gives a sequence's first
    query the bits it has among REFERENCE_ROWS queries, on every thread count. Measured once per
    process for each shape (a test process starts hundreds of engines)."""
    return _attention_floor(num_heads, num_kv_heads, head_dim, dtype, tuple(thread_counts))


@functools.cache
def _attention_floor(num_heads: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype,
                     thread_counts: tuple[int, ...]) -> int | None:
    group, seqs, keys, first = num_heads // num_kv_heads, 4, 64, 24
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(seqs, num_kv_heads, group, REFERENCE_ROWS, head_dim, generator=gen).to(dtype)
    k, v = (torch.randn(seqs, num_kv_heads, keys, head_dim, generator=gen).to(dtype) for _ in range(2))

    def run(t: int) -> torch.Tensor:
        visible = torch.arange(keys)[None, :] <= first + torch.arange(t)[:, None]  # [t, keys]
        mask = torch.zeros(t, keys, dtype=dtype).masked_fill_(~visible, float("-inf"))
        mask = mask.repeat(group, 1)[None, None]  # query row g * t + j
        o = F.scaled_dot_product_attention(q[..., :t, :].reshape(seqs, num_kv_heads, group * t, head_dim),
                                           k, v, attn_mask=mask)
        return o.view(seqs, num_kv_heads, group, t, head_dim)[..., 0, :].clone()

    with torch.inference_mode():
        return smallest_invariant(run, lambda c: range(c, CHECKED_ROWS + 1), thread_counts)


def describe(multiples: dict[str, int | None], floor: int | None) -> str:
    """The start-up line's account of the padding: "products to multiples of 4 (every shape),
    attention to at least 4 queries", shape by shape where they differ."""
    def count(m: int | None) -> str:
        return "none found" if m is None else str(m)
    values = set(multiples.values())
    products = f"{count(values.pop())} (every shape)" if len(values) == 1 else \
        ", ".join(f"{count(m)} ({shape})" for shape, m in multiples.items()) or "- (none on the CPU)"
    attention = f"to at least {floor} queries" if floor else "unpadded (no query count found)"
    return f"products to multiples of {products}, attention {attention}"
