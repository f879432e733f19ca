"""Shadow comparison: the same requests went to a primary and a candidate;
how often do their answers agree, and how much slower or faster is the
candidate? The candidate's failures are counted here only, never in the
primary's figures."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from fleetserve.loadtest.metrics import latency_stats
from fleetserve.loadtest.records import Records


def compare(primary: Records, candidate: Records, prompts: list, examples: int = 5) -> dict[str, Any]:
    p = {i: k for k, i in enumerate(primary.index)}
    both = agree = 0
    samples = []
    dp, dc = [], []
    for k, i in enumerate(candidate.index):
        j = p.get(i)
        if j is None or primary.error[j] or candidate.error[k]:
            continue
        both += 1
        a, b = primary.texts[j], candidate.texts[k]
        dp.append(primary.end[j] - primary.start[j])
        dc.append(candidate.end[k] - candidate.start[k])
        if a == b:
            agree += 1
        elif len(samples) < examples:
            prompt = prompts[primary.prompt[j]]
            shown = prompt if isinstance(prompt, str) else f"<{len(prompt)} token ids>"
            samples.append({"request": i, "prompt": shown, "primary": a, "candidate": b})
    diff = np.asarray(dc) - np.asarray(dp)
    errors = Counter(e for e in candidate.error if e)
    return {
        "compared": both,
        "exact_match_rate": round(agree / both, 6) if both else None,
        "disagreements": both - agree,
        "examples": samples,
        "candidate_errors": dict(sorted(errors.items())),
        "candidate_error_rate": round(sum(errors.values()) / len(candidate.index), 6) if candidate.index else None,
        "e2el_primary": latency_stats(np.asarray(dp)),
        "e2el_candidate": latency_stats(np.asarray(dc)),
        "e2el_difference": latency_stats(diff),  # candidate minus primary, per request
    }
