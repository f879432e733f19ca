"""Synthetic correction pairs from a corpus of clean sentences.

The corpus lines are normalised (first letter upper case, a final stop), then
one or more of them (`PairConfig.join_weights`) are joined into one text, because learner sentences are
longer than the corpus lines and the model must learn to copy long inputs
faithfully. The source side gets errors from `errors.corrupt`; some pairs keep
the source clean so the model also learns to leave correct text alone.

Some pairs also carry invented words and numbers (`rare_word`) that appear
unchanged on both sides. Learners write names, technical terms and numbers the
corpus never saw; without these the model "corrects" every unknown word into
a known one ("She dont like coffee." -> "She danced coffee.").
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
    clean_share: float = 0.2  # pairs whose source is already correct
    # weight i: texts of i + 1 sentences. The corpus lines average 7 words and
    # learner sentences (JFLEG) 19, with a long tail past 40.
    join_weights: tuple[float, ...] = (0.2, 0.25, 0.25, 0.15, 0.1, 0.05)
    words_per_error: float = 7.0  # roughly one error per this many words, at least one
    rates: tuple[tuple[str, float], ...] = tuple(DEFAULT_RATES.items())
    rare_share: float = 0.3  # pairs with invented words or numbers to copy unchanged
    rare_words: int = 2  # at most this many per pair


_ONSETS = ["b", "br", "c", "ch", "d", "dr", "f", "g", "gr", "h", "j", "k", "kl", "l", "m", "n", "p", "pr",
           "qu", "r", "s", "sh", "st", "t", "tr", "v", "w", "z"]
_NUCLEI = ["a", "e", "i", "o", "u", "ai", "ea", "ou", "y"]
_CODAS = ["", "", "", "n", "r", "l", "s", "k", "m", "nd", "st", "x"]
# Private-use characters stand in for rare words while errors are injected:
# they are not words to `errors`, so no error lands on (or moves) them.
_SLOT = 0xE000


def rare_word(rng: random.Random) -> str:
    """An invented word (often capitalised, like a name) or a number."""
    if rng.random() < 0.25:
        return rng.choice([str(rng.randint(2, 99)), str(rng.randint(1800, 2030)), f"{rng.randint(1, 999):,}"])
    word = "".join(rng.choice(_ONSETS) + rng.choice(_NUCLEI) + rng.choice(_CODAS)
                   for _ in range(rng.randint(1, 3)))
    return word.capitalize() if rng.random() < 0.4 else word


def _with_slots(target: str, rng: random.Random, cfg: PairConfig) -> tuple[str, list[str]]:
    """`target` with up to `cfg.rare_words` content words replaced by slot characters,
    and the rare words that will fill them."""
    words = split_words(target)
    spots = [i for i, w in enumerate(words) if i and len(w) > 3 and w.isalpha() and w.islower()]
    if not spots:
        return target, []
    chosen = rng.sample(spots, min(len(spots), rng.randint(1, cfg.rare_words)))
    fills = []
    for k, i in enumerate(sorted(chosen)):
        words[i] = chr(_SLOT + k)
        fills.append(rare_word(rng))
    return join_words(words), fills


def _fill(text: str, fills: list[str]) -> str:
    for k, word in enumerate(fills):
        text = text.replace(chr(_SLOT + k), word)
    return text


def alphabet(sentences: list[str]) -> str:
    """Every character the pairs of `sentences` can hold: theirs, the rare words' (letters,
    digits, thousands commas) and the space; errors only move or drop these."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    return "".join(sorted(set("".join(sentences)) | set(letters + letters.upper() + "0123456789, ")))


def make_pair(sentences: list[str], rng: random.Random, cfg: PairConfig = PairConfig()) -> tuple[str, str]:
    """(source with errors, corrected target) built from randomly chosen sentences."""
    n = rng.choices(range(1, len(cfg.join_weights) + 1), cfg.join_weights)[0]
    target = " ".join(rng.choice(sentences) for _ in range(n))
    fills: list[str] = []
    if rng.random() < cfg.rare_share:
        target, fills = _with_slots(target, rng, cfg)
    if rng.random() < cfg.clean_share:
        return _fill(target, fills), _fill(target, fills)
    num_words = len(target.split())
    mean = max(1.0, num_words / cfg.words_per_error)
    num_errors = max(1, min(round(rng.gauss(mean, mean / 2)), num_words // 2 or 1))
    return _fill(corrupt(target, num_errors, rng, dict(cfg.rates)), fills), _fill(target, fills)


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
