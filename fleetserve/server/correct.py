"""/v1/correct's answer: the character edits that turn a text into its correction."""

from __future__ import annotations

import difflib
import re

_PIECES = re.compile(r"\s+|\w+|[^\w\s]")


def char_edits(source: str, target: str) -> list[dict]:
    """Word-level diff of source -> target as character spans of `source`:
    [{"start", "end", "replacement"}], applied right to left they give `target`."""
    a, b = _PIECES.findall(source), _PIECES.findall(target)
    offsets = [0]
    for piece in a:
        offsets.append(offsets[-1] + len(piece))
    edits = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op != "equal":
            edits.append({"start": offsets[i1], "end": offsets[i2], "replacement": "".join(b[j1:j2])})
    return edits
