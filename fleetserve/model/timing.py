"""Timing candidates against each other on this machine: how products are chosen at start-up
(model/product_paths.py) and how int8 picks its weight range (model/quantization.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def fastest(timings: dict[str, float], margin: float = 0.0) -> str:
    """The candidate with the least time, unless it beats the first listed (the reference) by
    no more than `margin` (a fraction of the reference's time): then the reference."""
    reference = next(iter(timings))
    best = min(timings, key=lambda k: (timings[k], list(timings).index(k)))
    return best if timings[best] < timings[reference] * (1 - margin) else reference


def measure(candidates: dict[str, Callable[[], Any]], rounds: int = 5,
            clock: Callable[[], float] = time.perf_counter, budget: float | None = None) -> dict[str, float]:
    """Each candidate's fastest of `rounds` calls, the candidates interleaved so that a host whose
    speed drifts slows them alike (after one untimed call each: first-call allocations). `budget`:
    seconds the timed rounds may take in all, as the untimed calls foretell (at least one round):
    at the 0.5B shape one float32 lm_head product at 64 rows took 0.37-0.62 s on an AVX2 EPYC,
    and five rounds of each candidate of every shape made the product choice 8.8 s of a start."""
    started = clock()
    for fn in candidates.values():
        fn()
    if budget is not None:
        rounds = max(1, min(rounds, int(budget / max(clock() - started, 1e-9))))
    best = {name: float("inf") for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            started = clock()
            fn()
            best[name] = min(best[name], clock() - started)
    return best
