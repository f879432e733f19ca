"""Latency histograms with log-spaced bins (1% wide, 10 µs to 1,000 s): percentiles of
hundreds of millions of requests without keeping them."""

from __future__ import annotations

import math

import numpy as np

BIN_LO = 1e-5  # seconds: bin 0 holds everything at or below it
BIN_RATIO = 1.01
BINS = int(math.ceil(math.log(1e3 / BIN_LO) / math.log(BIN_RATIO))) + 2


def bin_upper_edges() -> np.ndarray:
    """The upper edge of each bin, in seconds (bin i > 0 holds (lo * r^(i-1), lo * r^i])."""
    return BIN_LO * BIN_RATIO ** np.arange(BINS)


def percentiles(hist: np.ndarray, qs: tuple[float, ...] = (50, 99, 99.9)) -> dict[str, float | None]:
    """Percentiles in milliseconds of a histogram (the geometric middle of the bin where each
    falls: within 0.5%), None when it is empty."""
    total = int(hist.sum())
    out: dict[str, float | None] = {}
    edges = bin_upper_edges()
    mids = np.concatenate([[BIN_LO], edges[1:] / math.sqrt(BIN_RATIO)])
    cum = np.cumsum(hist)
    for q in qs:
        key = f"p{q:g}".replace(".", "_")
        if total == 0:
            out[key] = None
            continue
        i = int(np.searchsorted(cum, math.ceil(total * q / 100.0)))
        out[key] = round(float(mids[min(i, BINS - 1)]) * 1e3, 3)
    return out
