"""Float32 linear layers multiplied by OpenBLAS (numpy's BLAS), their weights stored [in, out].

A serving step uses each weight once, and between two uses the step's other layers (and the
KV cache) pass through the cache: the weight comes from memory. On an AVX2-only AMD EPYC (Zen 3,
torch 2.13), MKL's float32 product behind `F.linear` ran the bundled model's 768- and 1,536-wide
products 10-15% slower so than OpenBLAS on the weight laid out [in, out], though the two are
equal with the weight in cache (BENCHMARKS.md, issue 19, ninth part). product_paths.py times this
candidate from a cold cache beside the others and keeps it per shape only where it is faster.
Results equal `F.linear`'s up to float32 rounding (another library sums in another order).

One thread: OpenBLAS keeps a pthread pool of its own, beside torch's OpenMP threads, so it is a
candidate only in an engine whose products run on one thread (a pod's engine cores), and the
process's OpenBLAS is held to one thread once this layer is built. The input and output stay
torch tensors (zero-copy views of numpy arrays).
"""

from __future__ import annotations

import functools
import logging

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)


class OpenBLASLinear(nn.Module):
    def __init__(self, linear: nn.Linear):
        super().__init__()
        _one_thread()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # A transposed copy (not a parameter): OpenBLAS reads [in, out] rows as they are laid out.
        self.weight = linear.weight.detach().t().contiguous().numpy()
        self.bias = None if linear.bias is None else linear.bias.detach().numpy().copy()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).contiguous().numpy()
        out = flat @ self.weight
        if self.bias is not None:
            out += self.bias
        return torch.from_numpy(out).reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, product=openblas"


@functools.cache
def _one_thread() -> None:
    from threadpoolctl import ThreadpoolController
    ThreadpoolController().select(internal_api="openblas").limit(limits=1)


def openblas_fails(weight: torch.Tensor, threads: int) -> str | None:
    """Why a float layer of this weight cannot be served by OpenBLAS here, or None when it can."""
    if weight.dtype != torch.float32 or not weight.is_cpu:
        return f"OpenBLAS products take float32 weights on the CPU, not {weight.dtype} on {weight.device}"
    if threads > 1:
        return f"OpenBLAS products run on one thread; this engine runs its products on {threads}"
    return _library_fails()


@functools.cache
def _library_fails() -> str | None:
    from threadpoolctl import threadpool_info
    if not any(lib.get("internal_api") == "openblas" for lib in threadpool_info()):
        names = ", ".join(sorted({lib.get("internal_api", "?") for lib in threadpool_info()})) or "none found"
        return f"numpy's BLAS here is not OpenBLAS ({names})"
    return None
