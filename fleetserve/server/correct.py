"""/v1/correct's answer: the character edits that turn a text into its correction."""

from __future__ import annotations

import difflib
import re

_PIECES = re.compile(r"\s+|\w+|[^\w\s]")


def char_edits(source: str, target: str) -> list[dict]:
    """Word-level diff of source -> target as character spans of `source`:
    [{"start", "end", "replacement"}], applied right to left they give `target`."""
    if source == target:
        return []
    a, b = _PIECES.findall(source), _PIECES.findall(target)
    # A correction keeps most of its text: only the span between the common head and
    # tail goes through difflib (7-18 us a JFLEG sentence instead of 60-67).
    shorter = min(len(a), len(b))
    head = 0
    while head < shorter and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < shorter - head and a[-1 - tail] == b[-1 - tail]:
        tail += 1
    a_mid, b_mid = a[head:len(a) - tail], b[head:len(b) - tail]
    start = sum(map(len, a[:head]))
    offsets = [start]
    for piece in a_mid:
        offsets.append(offsets[-1] + len(piece))
    edits = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a_mid, b=b_mid, autojunk=False).get_opcodes():
        if op != "equal":
            edits.append({"start": offsets[i1], "end": offsets[i2], "replacement": "".join(b_mid[j1:j2])})
    return edits
