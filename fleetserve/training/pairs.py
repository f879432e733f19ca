"""Synthetic correction pairs from a corpus of clean sentences.

The corpus lines are normalised (first letter upper case, a final stop), then
one or more of them (`PairConfig.join_weights`) are joined into one text, because learner sentences are
longer than the corpus lines and the model must learn to copy long inputs
faithfully. The source side gets errors from `errors.corrupt`; some pairs keep
the source clean so the model also learns to leave correct text alone.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fleetserve.training.errors import DEFAULT_RATES, corrupt, join_words, split_words

def normalise(line: str) -> str | None:
    """Upper-case first letter and a final stop; None for lines not worth training on."""
    words = split_words(line.strip())
    if len(words) < 3 or not any(w[:1].isalpha() for w in words):
        return None
    text = join_words(words)
    text = text[:1].upper() + text[1:]
    if text[-1] not in ".!?":
        text = text.rstrip(",;:") + "."
    return text


def load_corpus(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: corpus file not found (one sentence per line)")
    seen: set[str] = set()
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        text = normalise(line)
        if text is not None and text not in seen:
            seen.add(text)
            out.append(text)
    if not out:
        raise ValueError(f"{path}: no usable sentences")
    return out


@dataclass(frozen=True)
class PairConfig:
    clean_share: float = 0.15  # pairs whose source is already correct
    join_weights: tuple[float, ...] = (0.45, 0.35, 0.2)  # weight i: texts of i + 1 sentences
    words_per_error: float = 6.0  # roughly one error per this many words, at least one
    rates: tuple[tuple[str, float], ...] = tuple(DEFAULT_RATES.items())


def make_pair(sentences: list[str], rng: random.Random, cfg: PairConfig = PairConfig()) -> tuple[str, str]:
    """(source with errors, corrected target) built from randomly chosen sentences."""
    n = rng.choices(range(1, len(cfg.join_weights) + 1), cfg.join_weights)[0]
    target = " ".join(rng.choice(sentences) for _ in range(n))
    if rng.random() < cfg.clean_share:
        return target, target
    num_words = len(target.split())
    mean = max(1.0, num_words / cfg.words_per_error)
    num_errors = max(1, min(round(rng.gauss(mean, mean / 2)), num_words // 2 or 1))
    return corrupt(target, num_errors, rng, dict(cfg.rates)), target


def pair_stream(sentences: list[str], seed: int, cfg: PairConfig = PairConfig()) -> Iterator[tuple[str, str]]:
    rng = random.Random(seed)
    while True:
        yield make_pair(sentences, rng, cfg)


def split_holdout(sentences: list[str], share: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, holdout) by a seeded shuffle, so held-out sentences are never trained on."""
    order = list(sentences)
    random.Random(seed).shuffle(order)
    k = max(1, int(len(order) * share))
    return order[k:], order[:k]
