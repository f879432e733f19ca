"""Token ids to text, incrementally, with stop strings.

Decoding a growing window (as vLLM does) keeps multi-byte characters split
across tokens from showing as U+FFFD, and costs O(window) per token instead of
re-decoding the whole output. Text that could still turn out to be the start of
a stop string is held back until it cannot.
"""

from __future__ import annotations

from fleetserve.engine.sampling_params import SamplingParams
from fleetserve.model.tokenizer import Tokenizer


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Tokenizer, params: SamplingParams):
        self.tokenizer = tokenizer
        self.skip_special = params.skip_special_tokens
        self.stop = params.stop
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self.ids: list[int] = []
        self.text = ""  # all text decoded so far (truncated at a stop string once hit)
        self.emitted = 0  # characters of self.text already returned
        self.stopped = False  # a stop string was found
        self._prefix = 0
        self._read = 0

    def update(self, new_ids: list[int]) -> str:
        """Add tokens; return the text that is now safe to emit."""
        if self.stopped:
            return ""
        self.ids.extend(new_ids)
        decode = self.tokenizer.decode
        before = decode(self.ids[self._prefix : self._read], self.skip_special)
        after = decode(self.ids[self._prefix :], self.skip_special)
        if len(after) > len(before) and not after.endswith("\ufffd"):
            delta = after[len(before) :]
            self._prefix, self._read = self._read, len(self.ids)
            self._add_text(delta)
        end = len(self.text) if self.stopped else max(self.emitted, len(self.text) - self.hold)
        return self._emit(end)

    def flush(self) -> str:
        """At the end of generation: everything not yet returned, stop-string safe."""
        if not self.stopped:
            rest = self.tokenizer.decode(self.ids[self._prefix :], self.skip_special)
            done = self.tokenizer.decode(self.ids[self._prefix : self._read], self.skip_special)
            if len(rest) > len(done):
                self._add_text(rest[len(done) :])
        return self._emit(len(self.text))

    def _add_text(self, delta: str) -> None:
        start = max(0, len(self.text) - self.hold)
        self.text += delta
        for s in self.stop:
            i = self.text.find(s, start)
            if i != -1:
                self.text = self.text[:i]
                self.stopped = True  # later patterns now only match before i: earliest wins

    def _emit(self, end: int) -> str:
        out = self.text[self.emitted : end]
        self.emitted = max(self.emitted, end)
        return out
