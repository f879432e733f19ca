"""A user's text as the pieces a correction model reads, and the model's answers back as
the user's text.

A small corrector knows only the text it was trained on. Measured on the bundled model
(single lines of plain ASCII English): "José go to school" came back as "Jos and noises go
to school"; a tab, a line break, curly or double quotes, an em dash, an emoji or a URL each
turned a sentence into unrelated words; two leading spaces gave "ulttttt..."; "a" gave
"AAAAAAAA" up to the length budget. So, as a correction service must:

- The text is cut at line breaks and sentence ends; each segment is corrected on its own
  (the caller runs them together) and the whitespace between segments stays as sent. A
  long text is then many short prompts, not one refused one.
- Characters outside the model's alphabet (generation_config.json's `correction_alphabet`;
  every character when it has none) reach the model in a plain form where one exists
  (curly quotes, dashes, ellipses, accented letters: é -> e); a word whose core has no such
  form (CJK, emoji), a URL or an e-mail address reaches it as a placeholder name, which
  small correctors copy (the bundled model was trained to copy invented names), and no
  edit may touch it.
- A sentence written in capitals reaches the model in sentence case, and its edits come back in
  capitals; an acronym in a sentence that is not ("I love NASA.") is kept from the model like a
  word it cannot read.
- The answer is applied as edits to the text as sent: every character the model did not
  change comes back exactly as it was (accents, quotes, spacing, capitals).
- A guard: a segment whose answer ran out of its length budget, or rewrote it (kept less than
  half of its words, case aside, and changed more than three), keeps its text unchanged. A
  runaway answer is worse than none.

Pure text, no model: `plan(text)` then `CorrectionPlan.answer(outputs)`; `char_edits` gives
/v1/correct's answer as edits of the text as sent.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from dataclasses import dataclass

PLACEHOLDER = "Brastor"  # an invented name: measured, the bundled model copies it in any position
# An answer that keeps less than this share of the words (difflib's ratio) and changes more than
# SMALL_EDIT of them is a rewrite, not a correction. Of the bundled model's answers to the 1,449
# bench-correct sentences, 2 were such garbage without this module's other handling ("Learn" ->
# "Learnn on one."), 1 with it; none ran out of its length budget.
MIN_SIMILARITY = 0.5
SMALL_EDIT = 3
CACHED_CHARS = 4096  # the plain forms an Alphabet remembers (any text's usual characters fit)
MAX_URL = 2000  # longer words are not searched for URLs (the search is quadratic in a word's length)

# Plain forms of typographic characters, in order of preference: the first whose characters
# are all in the model's alphabet is used.
_PLAIN: dict[str, tuple[str, ...]] = {
    **dict.fromkeys("\u2018\u2019\u201a\u201b\u2032\u00b4`", ("'",)),
    **dict.fromkeys("\u201c\u201d\u201e\u201f\u00ab\u00bb\u2033", ('"', "'")),
    '"': ("'",),
    **dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212", ("-",)),
    "\u2026": ("...",),
}
_LINE_BREAK = re.compile(r"[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]")
_WORD = re.compile(r"\S+")
_PIECES = re.compile(r"\s+|\w+|[^\w\s]")
_URL = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.-]*://|www\.)[^\s<>]*[^\s<>.,;:!?'\")\]}]"
                  r"|[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_CLOSERS = "\"')]}\u2019\u201d\u00bb"
_OPENERS = "\"'([{\u2018\u201c\u00ab"
_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "e.g", "i.e", "no", "mt", "fig",
                  "approx", "dept", "inc", "ltd", "co", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep",
                  "sept", "oct", "nov", "dec"}


def _plain_forms(char: str) -> tuple[str, ...]:
    if char in _PLAIN:
        return _PLAIN[char]
    decomposed = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
    return (decomposed,) if decomposed and decomposed != char else ()


class Alphabet:
    """The characters a model reads as they are, and the plain form of the others."""

    def __init__(self, chars: str | None):
        self.chars = None if chars is None else set(chars)
        self._cache: dict[str, str | None] = {}  # bounded: clients choose the characters

    def plain(self, char: str) -> str | None:
        """`char` as the model should read it, or None when it has no form the model knows."""
        if char in self._cache:
            return self._cache[char]
        if unicodedata.category(char) in ("Cc", "Cf", "Co", "Cs", "Cn"):
            out = None  # control, format, private-use, surrogate or unassigned: no model reads these
        elif self.chars is None or char in self.chars:
            out = char
        else:
            out = next((f for f in _plain_forms(char) if all(c in self.chars for c in f)), None)
        if len(self._cache) < CACHED_CHARS:
            self._cache[char] = out
        return out


@dataclass
class Segment:
    """One sentence or line of the text: `text[start:end]` as sent, `model_text` as the model
    reads it, `origin[i]` the index in the text where model character i starts (one more
    entry for the end), `protected` the model-text spans no edit may touch."""

    start: int
    end: int
    model_text: str
    origin: list[int]
    protected: list[tuple[int, int]]
    correct: bool  # False: nothing the model could correct (no letter it reads), kept as sent
    capitals: bool = False  # written in capitals: the model reads it in sentence case, edits come back in capitals


@dataclass
class CorrectionPlan:
    text: str
    segments: list[Segment]

    @property
    def inputs(self) -> list[str]:
        """The texts to correct, one per segment the model reads, in order."""
        return [s.model_text for s in self.segments if s.correct]

    def answer(self, outputs: list[tuple[str, bool]]) -> str:
        """The corrected text, from the model's (answer, finished) for each of `inputs`;
        finished is False when an answer stopped at its length budget."""
        todo = [s for s in self.segments if s.correct]
        if len(outputs) != len(todo):
            raise ValueError(f"{len(todo)} segments to correct but {len(outputs)} answers")
        answers = iter(outputs)
        out, pos = [], 0
        for seg in self.segments:
            out.append(self.text[pos:seg.start])
            corrected = self.text[seg.start:seg.end]
            if seg.correct:
                text, finished = next(answers)
                corrected = _apply(self.text, seg, text.strip()) if finished else corrected
            out.append(corrected)
            pos = seg.end
        out.append(self.text[pos:])
        return "".join(out)


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


def _spans(text: str) -> tuple[list[str], list[int]]:
    pieces = list(_PIECES.finditer(text))
    return [m.group() for m in pieces], [m.start() for m in pieces] + [len(text)]


def _rewritten(a: list[str], b: list[str]) -> bool:
    """Whether answer pieces `b` rewrite source pieces `a` rather than correct them: less than
    half of the words (case aside) kept, and more than SMALL_EDIT words changed (a short
    sentence may need most of its few words changed: "i go" -> "I went.")."""
    a, b = [p.lower() for p in a if not p.isspace()], [p.lower() for p in b if not p.isspace()]
    kept = sum(m.size for m in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_matching_blocks())
    return 2 * kept < MIN_SIMILARITY * (len(a) + len(b)) and max(len(a), len(b)) - kept > SMALL_EDIT


def _apply(text: str, seg: Segment, answer: str) -> str:
    """The segment as sent, with the model's edits that leave protected spans alone, or as
    sent when the answer is a rewrite rather than a correction."""
    if answer == seg.model_text:  # nothing to correct: about half of learner sentences
        return text[seg.start:seg.end]
    a, starts = _spans(seg.model_text)
    b, _ = _spans(answer)
    if _rewritten(a, b):
        return text[seg.start:seg.end]
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        lo, hi = starts[i1], starts[i2]
        sent = text[seg.origin[lo]:seg.origin[hi]]
        if op == "equal":
            out.append(sent)
            continue
        # An insertion beside a protected span touches it too: the model may be rewriting the name it sees.
        touches = any(p_lo < hi and lo < p_hi if lo < hi else p_lo <= lo <= p_hi for p_lo, p_hi in seg.protected)
        replacement = "".join(b[j1:j2])
        if touches or PLACEHOLDER in replacement:
            replacement = sent
        elif seg.capitals:
            replacement = replacement.upper()
        out.append(replacement)
    return "".join(out)


def _is_boundary(gap: str, before: str, after: str) -> bool:
    """Whether the whitespace `gap` between the words `before` and `after` ends a sentence."""
    if _LINE_BREAK.search(gap):
        return True
    core = before.rstrip(_CLOSERS)
    if not core or core[-1] not in ".!?":
        return False
    stem = core.rstrip(".!?")
    if core.endswith(".") and (stem.lower() in _ABBREVIATIONS or (len(stem) == 1 and stem.isalpha())):
        return False
    first = after.lstrip(_OPENERS)[:1]
    return first.isupper() or first.isdigit()


def _segment(text: str, start: int, end: int, alphabet: Alphabet) -> Segment:
    model, origin, protected = [], [], []  # origin: one entry per model character, so len(origin) is its length
    pos = start
    capitals = _in_capitals(text[start:end])
    for word in _WORD.finditer(text, start, end):
        if word.start() > pos:  # whitespace inside a sentence (tabs, runs of spaces): one space
            model.append(" ")
            origin.append(pos)
        pos = word.end()
        w = word.group()
        kept = [(m.start() + word.start(), m.end() + word.start()) for m in _URL.finditer(w)] \
            if len(w) <= MAX_URL and ("@" in w or "://" in w or "www." in w.lower()) else []
        plain = [alphabet.plain(c) for c in w]
        lead = 0
        while lead < len(w) and not w[lead].isalnum() and plain[lead] is not None:
            lead += 1
        trail = len(w)
        while trail > lead and not w[trail - 1].isalnum() and plain[trail - 1] is not None:
            trail -= 1
        core = w[lead:trail]
        # An acronym in a sentence in lower case is a name to the model, which garbles it ("I love
        # NASA." -> "I love NASASASA."): kept from it like a word it cannot read.
        acronym = not capitals and len(core) > 1 and core.isupper() and core.isalpha()
        if acronym or any(p is None for p in plain[lead:trail]):
            kept = [(word.start() + lead, word.start() + trail)]
        i = word.start()
        for lo, hi in kept + [(word.end(), word.end())]:
            while i < lo:
                form = plain[i - word.start()]
                origin += [i] * len(form)
                model.append(form)
                i += 1
            if lo < hi:
                at = len(origin)
                protected.append((at, at + len(PLACEHOLDER)))
                model.append(PLACEHOLDER)
                origin += [lo] * len(PLACEHOLDER)
                i = hi
    origin.append(end)
    model_text = "".join(model)
    bounds = [0] + [x for span in protected for x in span] + [len(model_text)]
    readable = "".join(model_text[a:b] for a, b in zip(bounds[::2], bounds[1::2]))
    if capitals:
        model_text = _sentence_case(model_text, protected)
    return Segment(start, end, model_text, origin, protected, any(c.isalpha() for c in readable), capitals)


def _in_capitals(text: str) -> bool:
    """Two or more words of two or more letters, and no lower-case letter: a shouted sentence
    (which the bundled model garbles: "SHE GO TO SCHOOL" -> "SHE GO TO SCHOOO ... DA youngS"),
    not an acronym."""
    return not any(c.islower() for c in text) and len(re.findall(r"[^\W\d_]{2,}", text)) >= 2


def _sentence_case(text: str, protected: list[tuple[int, int]]) -> str:
    """Lower case but the first letter and the pronoun I, placeholders left alone; character
    for character, so the segment's origin map still holds."""
    keep = {i for lo, hi in protected for i in range(lo, hi)}
    first = next((i for i, c in enumerate(text) if c.isalpha()), -1)
    out = [c if i in keep or i == first or len(c.lower()) != 1 else c.lower() for i, c in enumerate(text)]
    for m in re.finditer(r"\bi\b", "".join(out)):
        out[m.start()] = "I"
    return "".join(out)


def plan(text: str, alphabet: Alphabet | None = None, max_inputs: int | None = None) -> CorrectionPlan:
    """Cut `text` into the segments a model corrects one by one (see the module's docstring);
    ValueError as soon as more than `max_inputs` of them are to be corrected."""
    alphabet = alphabet or Alphabet(None)
    words = list(_WORD.finditer(text))
    segments, first, inputs = [], 0, 0
    for k in range(1, len(words) + 1):
        if k == len(words) or _is_boundary(text[words[k - 1].end():words[k].start()], words[k - 1].group(),
                                           words[k].group()):
            segments.append(_segment(text, words[first].start(), words[k - 1].end(), alphabet))
            first = k
            inputs += segments[-1].correct
            if max_inputs is not None and inputs > max_inputs:
                raise ValueError(f"text is too long: more than {max_inputs} sentences or lines to correct")
    return CorrectionPlan(text, segments)
