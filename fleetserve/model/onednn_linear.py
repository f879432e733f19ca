"""Float linear layers with their weights reordered once into oneDNN's blocked layout.

`F.linear` on CPU hands torch's dense weight to the matrix-multiply library at every
call; oneDNN then works from the row-major layout. Reordered once at start-up, the
same products ran 1.3-1.5x faster at a decode step's row counts on one CPU of this
project's kind (BENCHMARKS.md, issue 2 section), and slower on the 5M model on another:
product_paths.py times both at start-up and keeps the faster. Results are the same up to float32
rounding, not bit for bit: below 16 rows, and for a 768-deep product at any row count, oneDNN sums
in another order than MKL behind `F.linear` (measured with torch 2.13 on an AVX-512 CPU). The input and
output stay dense torch tensors (`mkldnn._linear_pointwise`, the op inductor's frozen
graphs call): converting them to and from oneDNN tensors at every call cost more than
the reorder saved on small models (BENCHMARKS.md, issue 19). 8-bit layers
(`QuantLinear`) are left alone.

Not every CPU of a machine kind runs every dtype this way (oneDNN's bf16 product
needs AVX512-BF16/AVX-NE-CONVERT or AVX-512 BW/VL/DQ); whether it does is found
by running one small product at start-up, never assumed, and a dtype that does
not run keeps plain `F.linear`, saying so once. A model whose layers are swapped for
these serves, but is no longer a checkpoint to save.
"""

from __future__ import annotations

import functools
import logging

import torch
from torch import nn

log = logging.getLogger(__name__)
PACKED_FOR_ROWS = 64  # oneDNN's layout hint; the products are the same at any row count


class OneDNNLinear(nn.Module):
    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # A copy in the blocked layout (not a parameter), laid out for a decode step's rows.
        self.weight = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), PACKED_FOR_ROWS)
        self.bias = None if linear.bias is None else linear.bias.detach().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, layout=onednn"


@functools.cache
def onednn_fails(dtype: torch.dtype) -> str | None:
    """Why a oneDNN-layout linear of this dtype cannot run on this CPU, or None when it runs."""
    try:
        OneDNNLinear(nn.Linear(16, 16).to(dtype))(torch.ones(2, 16, dtype=dtype))
    except RuntimeError as e:
        log.warning("oneDNN-layout %s linears do not run on this CPU (%s); using plain F.linear",
                    str(dtype).removeprefix("torch."), str(e).splitlines()[0])
        return str(e)
    return None

