"""Runs the model for a scheduled batch: builds the step's input tensors, owns the KV cache.

Mechanism only: the scheduler decides who runs; this turns that into tensors.
Decoding slots run as slots 0..B-1 (B the highest running slot + 1, or with a
compiled step a power of two; empty slots included), so their cache reads are
views, never gathers; prompts run as a second attention group, a view too when
their slots are consecutive (as the scheduler's compaction keeps them), gathered
otherwise. Attention lengths are rounded up to a multiple of KV_BLOCK so that a
compiled step sees few distinct shapes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from fleetserve.engine.request import Request
from fleetserve.model.llama import AttentionGroup, StepInputs, Transformer

KV_BLOCK = 32


@dataclass
class Sequence:
    """Query tokens of one sequence: `tokens` at positions start.. in cache slot `slot`;
    the logits of its last `logits` tokens are returned (several to verify draft tokens)."""
    slot: int
    tokens: list[int]
    start: int
    logits: int = 1


@dataclass
class PreparedStep:
    """A step's tensors and, to cut them into one step per sequence, where each sequence's
    rows are (slot, first row, rows, rows with logits) in the order of the returned logits."""
    inputs: StepInputs
    seqs: list[tuple[int, int, int, int]]


def _buckets(limit: int) -> list[int]:
    sizes, b = [], 1
    while b < limit:
        sizes.append(b)
        b *= 2
    return sizes + [limit]


class ModelRunner:
    def __init__(self, model: Transformer, max_num_seqs: int, max_model_len: int, compile: bool = False):
        self.model = model
        self.device = model.embed_tokens.weight.device
        self.dtype = model.embed_tokens.weight.dtype
        self.max_num_seqs = max_num_seqs
        self.max_model_len = max_model_len
        self.window = model.cfg.sliding_window
        self.heads_per_kv = model.cfg.num_heads // model.cfg.num_kv_heads
        self.min_q_len = 1
        model.setup_cache(max_num_seqs, max_model_len)
        # A compiled step sees few batch shapes; eager runs exactly the slots in use.
        self.batch_buckets = _buckets(max_num_seqs) if compile else list(range(1, max_num_seqs + 1))
        self._step = model.step
        if compile:
            # Compiled code cannot write into inference-mode tensors (the KV cache), so the
            # compiled step runs the undecorated function under no_grad instead.
            compiled = torch.compile(functools.partial(type(model).step.__wrapped__, model), dynamic=True)
            self._step = torch.no_grad()(compiled)

    def check(self) -> None:
        """One token through the model (K/V written at slot 0, position 0, which any request
        there overwrites): a path this machine cannot run fails here, at start-up."""
        self.run(self.build([], [], [Sequence(0, [0], 0)]))

    def move_slot(self, src: int, dst: int, length: int) -> None:
        """Copy the KV cache positions below `length` of slot `src` to slot `dst` (a
        request the scheduler moved down: see scheduler.Move)."""
        kv = self.model.kv_cache
        kv[:, :, dst, :, :length] = kv[:, :, src, :, :length]

    def prepare(self, decode: list[Request], prefill: list[Request], pending: dict[int, int] | None = None,
                drafts: dict[int, list[int]] | None = None) -> PreparedStep:
        """The step of `decode` (running requests, one token each) and `prefill` (newly
        admitted ones, their whole prompt); logits come back in that order. `pending`:
        slot -> a token sampled but not yet appended to its request (the overlapped step
        loop launches the next step before it appends the last one's). `drafts`: slot ->
        tokens proposed to follow the request's last one (speculative decoding): that slot
        runs them too and returns the logits of each of its tokens, 1 + len(drafts) rows."""
        pending, drafts = pending or {}, drafts or {}
        bucket: list[Sequence] = []
        if decode:
            # Empty slots in 0..b-1 compute a throwaway token whose K/V lands at the
            # last cache position, which any later request there overwrites before reading.
            b = next(size for size in self.batch_buckets if size > max(r.slot for r in decode))
            bucket = [Sequence(slot, [0], self.max_model_len - 1, 0) for slot in range(b)]
            for r in decode:
                if r.slot in pending:
                    tokens, start = [pending[r.slot]], r.num_tokens
                else:
                    tokens, start = [r.output_ids[-1]], r.num_tokens - 1
                tokens += drafts.get(r.slot, ())
                bucket[r.slot] = Sequence(r.slot, tokens, start, len(tokens))
        return self.build(bucket, [r.slot for r in decode], [Sequence(r.slot, r.prompt_ids, 0) for r in prefill])

    def build(self, bucket: list[Sequence], live: list[int], seqs: list[Sequence]) -> PreparedStep:
        """`bucket`: the sequences of slots 0..b-1, in slot order (their cache is read as
        views), of which the slots `live` return logits, in that order; `seqs`: sequences in
        any slots (their cache is gathered unless the slots are consecutive). Each returns the
        logits of its last `logits` tokens."""
        tokens: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        layout: list[tuple[int, int, int, int]] = []

        def rows_of(group: list[Sequence]) -> list[int]:
            firsts = []
            for s in group:
                firsts.append(len(tokens))
                tokens.extend(s.tokens)
                positions.extend(range(s.start, s.start + len(s.tokens)))
                slots.extend([s.slot] * len(s.tokens))
            return firsts

        groups: list[AttentionGroup] = []
        if bucket:
            firsts = rows_of(bucket)
            seen = max((bucket[s].start + len(bucket[s].tokens) for s in live), default=1)
            groups.append(self._group(slice(0, len(tokens)), [s.start for s in bucket],
                                      [len(s.tokens) for s in bucket], None, seen))
            layout += [(s, firsts[s], len(bucket[s].tokens), bucket[s].logits) for s in live]
        if seqs:
            begin = len(tokens)
            firsts = rows_of(seqs)
            ids = [s.slot for s in seqs]
            consecutive = ids == list(range(ids[0], ids[0] + len(ids)))
            group = self._group(slice(begin, len(tokens)), [s.start for s in seqs], [len(s.tokens) for s in seqs],
                                None if consecutive else self._ids(ids), max(s.start + len(s.tokens) for s in seqs))
            if consecutive:
                group.first_slot = ids[0]
            groups.append(group)
            layout += [(s.slot, first, len(s.tokens), s.logits) for s, first in zip(seqs, firsts)]
        ends = [r for _, first, n, k in layout for r in range(first + n - k, first + n)]
        inputs = StepInputs(self._ids(tokens), self._ids(positions), self._ids(slots), groups, self._ids(ends))
        return PreparedStep(inputs, layout)

    def _group(self, rows: slice, starts: list[int], lengths: list[int], slots: torch.Tensor | None,
               seen: int) -> AttentionGroup:
        """`seen`: cache positions the live queries read (the attention length, rounded up)."""
        t = max(max(lengths), self.min_q_len)
        kv_len = min(self.max_model_len, -(-seen // KV_BLOCK) * KV_BLOCK)
        query = torch.tensor(starts)[:, None] + torch.arange(t)[None, :]  # [S, t] each query's position
        key = torch.arange(kv_len)
        mask = key[None, None, :] <= query[:, :, None]
        if self.window is not None:
            mask &= key[None, None, :] > query[:, :, None] - self.window
        mask = mask[:, None].repeat(1, 1, self.heads_per_kv, 1)  # [S, 1, group * t, kv_len]
        # Additive, made once here: attention would turn a boolean mask into this in every layer.
        mask = torch.zeros(mask.shape, dtype=self.dtype).masked_fill_(~mask, float("-inf")).to(self.device)
        pad = None
        if any(n != t for n in lengths):
            pad = self._ids([i * t + j for i, n in enumerate(lengths) for j in range(n)])
        return AttentionGroup(rows, len(lengths), t, slots, pad, mask)

    def _ids(self, values: list) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long, device=self.device)

    def run(self, step: PreparedStep) -> torch.Tensor:
        """Logits [rows, vocab] of the next token of each sequence (of each of its `logits`
        last tokens), in `prepare`'s order."""
        return self._step(step.inputs)

    def split(self, step: PreparedStep) -> list[PreparedStep]:
        """The step as one step per sequence, in the order of its logits, cut from the
        prepared tensors, never rebuilt from the requests (which the overlapped loop may
        be changing meanwhile)."""
        tokens, positions = step.inputs.tokens.tolist(), step.inputs.positions.tolist()
        return [self.build([], [], [Sequence(slot, tokens[first:first + n], positions[first], k)])
                for slot, first, n, k in step.seqs]
