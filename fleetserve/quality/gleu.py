"""GLEU for grammatical error correction, as JFLEG defines it.

Napoles et al. (2015, revised 2016 "GLEU without tuning"), the definition of
JFLEG's `compute_gleu`: n-gram precision (n = 1..4) of the hypothesis against a
reference, minus the n-grams it shares with the source but the reference does
not (changes that should have been made and were not), with a brevity penalty.
With several references, each of the `iterations` rounds picks one reference
per sentence at random (seeded as the official script seeds Python's `random`)
and computes a corpus-level score from summed statistics; the corpus GLEU is
the mean over rounds. Sentence-level GLEU (smoothed, mean over references) is
reported too. Inputs are whitespace-tokenised text, as the JFLEG files are.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass

ORDER = 4


def _ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i:i + n]) for i in range(len(words) + 1 - n))


def sentence_stats(hyp: list[str], src: list[str], ref: list[str]) -> list[int]:
    """[hyp len, ref len, (matches_n, possible_n) for n = 1..4]."""
    stats = [len(hyp), len(ref)]
    for n in range(1, ORDER + 1):
        h, s, r = _ngrams(hyp, n), _ngrams(src, n), _ngrams(ref, n)
        # n-grams of the source that the reference does not have: keeping them is penalised
        s_not_r = Counter({k: v for k, v in s.items() if k not in r})
        matches = sum((h & r).values()) - sum((h & s_not_r).values())
        stats += [max(matches, 0), max(len(hyp) + 1 - n, 0)]
    return stats


def gleu_from_stats(stats: list[int], smooth: bool = False) -> float:
    """GLEU in [0, 1] from summed statistics; `smooth` replaces zero counts by one
    (for single sentences, where one missing 4-gram would otherwise zero the score)."""
    if smooth:
        stats = [s if s != 0 else 1 for s in stats]
    if any(s == 0 for s in stats):
        return 0.0
    c, r = stats[0], stats[1]
    log_prec = sum(math.log(m / p) for m, p in zip(stats[2::2], stats[3::2])) / ORDER
    return math.exp(min(0.0, 1.0 - r / c) + log_prec)


@dataclass
class GleuResult:
    corpus: float  # the JFLEG figure, x100
    std: float  # spread over the reference-sampling rounds, x100
    sentence_mean: float  # mean of sentence-level GLEU, x100
    sentences: list[float]  # sentence-level GLEU of each hypothesis, x100


def gleu(
    hypotheses: list[str], sources: list[str], references: list[list[str]], iterations: int = 500,
) -> GleuResult:
    """`references[k][i]` is reference k of sentence i (one list per reference file)."""
    n = len(sources)
    if len(hypotheses) != n or any(len(r) != n for r in references):
        raise ValueError(f"{len(hypotheses)} hypotheses, {n} sources and reference sets of "
                         f"{[len(r) for r in references]} sentences: all must be equal")
    if not references:
        raise ValueError("at least one reference set is needed")
    num_refs = len(references)
    iterations = 1 if num_refs == 1 else iterations
    hyp_w = [h.split() for h in hypotheses]
    src_w = [s.split() for s in sources]
    stats = [[sentence_stats(hyp_w[i], src_w[i], references[k][i].split()) for k in range(num_refs)]
             for i in range(n)]
    rounds = []
    for j in range(iterations):
        # The official script ran on Python 2, whose randint(0, k-1) was int(random() * k):
        # the same draws give the same score as published figures.
        rng = random.Random(j * 101)
        picks = [int(rng.random() * num_refs) for _ in range(n)]
        total = [0] * (2 + 2 * ORDER)
        for i, k in enumerate(picks):
            total = [a + b for a, b in zip(total, stats[i][k])]
        rounds.append(gleu_from_stats(total))
    mean = sum(rounds) / len(rounds)
    std = math.sqrt(sum((x - mean) ** 2 for x in rounds) / len(rounds))
    per_sentence = [100 * sum(gleu_from_stats(s, smooth=True) for s in stats[i]) / num_refs for i in range(n)]
    return GleuResult(100 * mean, 100 * std, sum(per_sentence) / max(n, 1), per_sentence)
