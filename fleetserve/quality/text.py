"""Between evaluation-set text and the text a user sends.

JFLEG (like most correction sets) is tokenised Penn-Treebank style: "do n't",
"it 's", a space before every stop and comma. A correction model serves plain
text, so the evaluation sends it `detokenize(source)` and scores
`tokenize(output)` against the tokenised references.
"""

from __future__ import annotations

import re

_CLITICS = ("n't", "'s", "'re", "'m", "'ve", "'ll", "'d", "’s", "n’t")
_NO_SPACE_BEFORE = {".", ",", "!", "?", ";", ":", ")", "%", "..."}
_NO_SPACE_AFTER = {"(", "$"}
_TOKEN = re.compile(
    r"\d+(?:[.,]\d+)+"  # 3.5, 1,000
    r"|\.\.\.+"
    r"|[A-Za-z]+(?:[-'][A-Za-z]+)*(?=n't\b)"  # "do" of "don't"
    r"|n't\b"
    r"|'(?:s|re|m|ve|ll|d)\b"
    r"|\w+(?:-\w+)*(?='(?:s|re|m|ve|ll|d)\b)"  # "it" of "it's"
    r"|\w+(?:[-'’]\w+)*"  # self-confidence, a misspelt "doens't"
    r"|[^\w\s]"
)


def detokenize(text: str) -> str:
    words = text.split()
    out = ""
    for i, w in enumerate(words):
        if i and w not in _NO_SPACE_BEFORE and w.lower() not in _CLITICS and words[i - 1] not in _NO_SPACE_AFTER:
            out += " "
        out += w
    return out


def tokenize(text: str) -> str:
    """Penn-Treebank-like tokens joined by single spaces; idempotent on tokenised text."""
    tokens = []
    for word in text.split():
        low = word.lower()
        if low in ("can't", "won't"):
            tokens += [word[:2], word[2:]]
            continue
        tokens += _TOKEN.findall(word)
    return " ".join(tokens)
