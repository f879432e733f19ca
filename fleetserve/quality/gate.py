"""The quality gate: does a candidate correct as well as its baseline?

Policy only: from two evaluation results and two thresholds, the list of
failed objectives and a readable diff of the sentences where they disagree.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from fleetserve.quality.evaluate import EvalResult, agreement


@dataclass
class GateResult:
    gleu_drop: float
    agreement: float
    failures: list[str]

    @property
    def passed(self) -> bool:
        return not self.failures


def check(candidate: EvalResult, baseline: EvalResult, max_gleu_drop: float | None,
          min_agreement: float | None) -> GateResult:
    drop = round(baseline.gleu - candidate.gleu, 2)
    agree = agreement(candidate.outputs, baseline.outputs)
    failures = []
    if max_gleu_drop is not None and drop > max_gleu_drop:
        failures.append(f"GLEU dropped by {drop:.2f} ({baseline.gleu:.2f} -> {candidate.gleu:.2f}); "
                        f"the most allowed is {max_gleu_drop}")
    if min_agreement is not None and agree < min_agreement:
        failures.append(f"outputs agree on {agree:.1%} of sentences; at least {min_agreement:.1%} required")
    return GateResult(drop, round(agree, 4), failures)


def word_diff(a: str, b: str) -> str:
    """`a` -> `b` as one line: removed words in [-...-], added ones in {+...+}."""
    x, y = a.split(), b.split()
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=x, b=y, autojunk=False).get_opcodes():
        if op == "equal":
            out += x[i1:i2]
            continue
        if i2 > i1:
            out.append("[-" + " ".join(x[i1:i2]) + "-]")
        if j2 > j1:
            out.append("{+" + " ".join(y[j1:j2]) + "+}")
    return " ".join(out)


def disagreements(sources: list[str], candidate: EvalResult, baseline: EvalResult, limit: int = 20) -> str:
    """The first `limit` sentences where the outputs differ, each as the source and
    both outputs marked against the source."""
    lines = []
    differing = [i for i, (c, b) in enumerate(zip(candidate.outputs, baseline.outputs)) if c != b]
    for i in differing[:limit]:
        lines += [f"#{i}  source:    {sources[i]}",
                  f"     baseline:  {word_diff(sources[i], baseline.outputs[i])}",
                  f"     candidate: {word_diff(sources[i], candidate.outputs[i])}", ""]
    if len(differing) > limit:
        lines.append(f"... and {len(differing) - limit} more")
    return "\n".join(lines)
