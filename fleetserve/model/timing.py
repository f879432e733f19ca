"""Timing candidates against each other on this machine: how products are chosen at start-up
(model/product_paths.py) and how int8 picks its weight range (model/quantization.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def fastest(timings: dict[str, float]) -> str:
    """The candidate with the least time; on a tie the first listed (the reference)."""
    return min(timings, key=lambda k: (timings[k], list(timings).index(k)))


def measure(candidates: dict[str, Callable[[], Any]], rounds: int = 5,
            clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Each candidate's fastest of `rounds` calls, the candidates interleaved so that a host whose
    speed drifts slows them alike (after one untimed call each: first-call allocations)."""
    for fn in candidates.values():
        fn()
    best = {name: float("inf") for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            started = clock()
            fn()
            best[name] = min(best[name], clock() - started)
    return best
