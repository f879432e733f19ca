"""Input-guided speculative decoding: which tokens to propose for a request, and how
many. Policy only (token ids in, token ids out; no tensors, no clock).

A correction copies its source except at a few edits, so the tokens that follow the
output's latest tokens in the prompt are likely to follow them in the output too
(Shallow Aggressive Decoding, Sun et al., ACL 2021; vLLM's prompt lookup). The
engine runs the proposals through the model in the request's next step and keeps the
longest prefix that greedy decoding would have produced, plus the model's own next
token, so outputs are exactly those of decoding one token at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MODES = ("input", "ngram", "off")


@dataclass
class Proposer:
    """`mode`: "input" looks up the output's latest tokens in the prompt; "ngram" in the
    prompt and the output so far; "off" proposes nothing. `max_match` .. 1: the longest
    suffix of the output tried first. `max_k`: most tokens proposed per step."""

    mode: str = "input"
    max_k: int = 8
    max_match: int = 3

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"speculative mode must be one of {', '.join(MODES)}, got {self.mode!r}")

    def propose(self, state: DraftState, prompt: list[int], output: list[int], room: int) -> list[int]:
        """Up to min(state.k, room) tokens to follow `output` (the request's tokens so far
        after its prompt)."""
        if state.wait:  # after proposals that all missed: decode plainly for a while
            state.wait -= 1
            return []
        k = min(state.k, room)
        if self.mode == "off" or k <= 0 or not output:
            return []
        source = prompt if self.mode == "input" else prompt + output[:-1]
        index = state.index_of(source)
        for n in range(min(self.max_match, len(output)), 0, -1):
            suffix = output[-n:]
            best = None
            for end in index.get(suffix[-1], ()):  # positions in source where the suffix's last token is
                start = end - n + 1
                if start < 0 or source[start:end + 1] != suffix or end + 1 >= len(source):
                    continue
                best = end
                if end >= state.aligned:  # the first match at or after the last alignment: copying goes on
                    break
            if best is not None:
                state.aligned = best + 1
                return source[best + 1:best + 1 + k]
        return []


@dataclass
class DraftState:
    """One request's speculation: how many tokens to propose (adapted to what was
    accepted), where in the source the copy was last aligned, and how many steps to
    wait before proposing again after misses (so that a request whose output does not
    copy its prompt costs little more than plain decoding)."""

    k: int = 4
    aligned: int = 0
    wait: int = 0
    misses: int = 0
    _index: dict[int, list[int]] = field(default_factory=dict)
    _indexed: int = 0

    def index_of(self, source: list[int]) -> dict[int, list[int]]:
        """token -> positions in `source`, kept up to date as the source grows (ngram mode)."""
        for i in range(self._indexed, len(source)):
            self._index.setdefault(source[i], []).append(i)
        self._indexed = len(source)
        return self._index

    def update(self, proposed: int, accepted: int, max_k: int) -> None:
        """All accepted: propose twice as many next time; some: as many again (the miss was
        an edit, and the copy goes on after it); none once: half as many, at once; none again:
        one, after waiting 2, 4, 8 ... 64 steps as the misses repeat. A long correction with
        several edits then keeps proposing whole runs between them: shrinking to the accepted
        count at every edit and waiting after every miss took the slowest 1% of the held-out
        and JFLEG sentences 22 steps instead of 17 (BENCHMARKS.md, issue 19, third part)."""
        if not proposed:
            return
        if accepted == 0:
            self.misses += 1
            if self.misses == 1:
                self.k = max(1, self.k // 2)
            else:
                self.k, self.wait = 1, min(2 ** (self.misses - 1), 64)
            return
        self.misses = 0
        if accepted == proposed:
            self.k = min(max_k, self.k * 2)


def accept(drafts: list[int], predicted: list[int]) -> list[int]:
    """The tokens greedy decoding emits: the drafts up to the first one the model did not
    predict, then the model's own token there. `predicted[i]` is the model's greedy token
    after the request's last token and drafts[:i] (len(drafts) + 1 of them)."""
    n = 0
    while n < len(drafts) and drafts[n] == predicted[n]:
        n += 1
    return drafts[:n] + [predicted[n]]
