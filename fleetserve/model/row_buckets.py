"""Reduced-precision float products on a CPU, their row counts rounded up to a multiple of
ROW_MULTIPLE.

oneDNN runs a bfloat16 (or float16) product on a CPU through a kernel it builds for each new
row count and keeps in a cache of its own. A serving step's row count is mostly new (every mix
of prompts and proposed tokens gives another), so a pod in bfloat16 kept building kernels and
holding them: serving the bundled model's correction traffic, its two engine cores grew from 808
to 2,534 MiB over one ramp; with the rows padded to a multiple of 16 an engine core ran 1.11-1.18x
faster and stayed at 441 MiB instead of 812-818 (BENCHMARKS.md, issue 19, seventh part). The padded
rows are zeros whose outputs are dropped. A real row's rounding may differ from an unpadded call's
where oneDNN's kernel for the padded count sums in another order, as it may between any two row
counts (the bundled model's outputs were the same). float32 products go to MKL, which builds
nothing per row count (padded they ran 6% slower): left as they are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ROW_MULTIPLE = 16
PADDED_DTYPES = (torch.bfloat16, torch.float16)


class RowBuckets(nn.Module):
    """`inner` (a linear product) called on rows padded with zeros to a multiple of `multiple`;
    returns the real rows' outputs."""

    def __init__(self, inner: nn.Module, multiple: int = ROW_MULTIPLE):
        super().__init__()
        self.inner, self.multiple = inner, multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        rows = flat.shape[0]
        padded = -(-rows // self.multiple) * self.multiple
        if padded == rows:
            return self.inner(x)
        out = self.inner(F.pad(flat, (0, 0, 0, padded - rows)))[:rows]
        return out.reshape(*x.shape[:-1], out.shape[-1])


def pads_rows(weight: torch.Tensor) -> bool:
    """Whether a float product of this weight is served through RowBuckets."""
    return weight.device.type == "cpu" and weight.dtype in PADDED_DTYPES
