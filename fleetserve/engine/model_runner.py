"""Runs the model for a scheduled batch: builds input tensors, owns the KV cache.

Mechanism only: the scheduler decides who runs; this turns that into tensors.
Decode shapes are bucketed (batch to a power of two, attention length to a
multiple of KV_BLOCK) so a compiled decode step sees few distinct shapes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from fleetserve.engine.request import Request
from fleetserve.model.llama import Transformer

KV_BLOCK = 32


@dataclass
class PrefillInputs:
    tokens: torch.Tensor  # [N, longest prompt], right-padded
    slots: torch.Tensor
    last: torch.Tensor  # index of each prompt's last token


@dataclass
class DecodeInputs:
    tokens: torch.Tensor  # [bucket] one token per slot 0..bucket-1
    positions: torch.Tensor
    kv_len: int
    select: torch.Tensor | None  # rows of the running requests, when the bucket has empty slots


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
        self.max_num_seqs = max_num_seqs
        self.max_model_len = max_model_len
        model.setup_cache(max_num_seqs, max_model_len)
        self.batch_buckets = _buckets(max_num_seqs)
        self._decode = model.decode
        self.compiled = compile
        if compile:
            # Compiled code cannot write into inference-mode tensors (the KV cache), so the
            # compiled step runs the undecorated function under no_grad instead.
            compiled = torch.compile(functools.partial(type(model).decode.__wrapped__, model), dynamic=True)
            self._decode = torch.no_grad()(compiled)

    def check(self) -> None:
        """One token through the model (K/V written at slot 0, position 0, which any request
        there overwrites): a path this machine cannot run fails here, at start-up."""
        self.run(None, PrefillInputs(self._ids([[0]]), self._ids([0]), self._ids([0])))

    def _batch_bucket(self, n: int) -> int:
        return next(b for b in self.batch_buckets if b >= n)

    def prefill_inputs(self, requests: list[Request]) -> PrefillInputs:
        longest = max(len(r.prompt_ids) for r in requests)
        rows = [r.prompt_ids + [0] * (longest - len(r.prompt_ids)) for r in requests]
        return PrefillInputs(self._ids(rows), self._ids([r.slot for r in requests]),
                             self._ids([len(r.prompt_ids) - 1 for r in requests]))

    def _ids(self, values: list) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long, device=self.device)

    def run_prefill(self, inputs: PrefillInputs) -> torch.Tensor:
        """Logits [N, vocab] at each new request's last prompt token."""
        return self.model.prefill(inputs.tokens, inputs.slots, inputs.last)

    def prefill(self, requests: list[Request]) -> torch.Tensor:
        return self.run_prefill(self.prefill_inputs(requests))

    def decode_inputs(self, requests: list[Request], pending: dict[int, int] | None = None) -> DecodeInputs:
        """`pending`: slot -> a token sampled but not yet appended to its request (the
        overlapped step loop launches the next step before it appends the last one's)."""
        pending = pending or {}
        top_slot = max(r.slot for r in requests)
        b = self._batch_bucket(top_slot + 1)
        # Empty slots in 0..b-1 compute a throwaway token whose K/V lands at the
        # last cache position, which any later request there overwrites before reading.
        tokens = [0] * b
        positions = [self.max_model_len - 1] * b
        longest = 0
        for r in requests:
            n = r.num_tokens
            if r.slot in pending:
                tokens[r.slot] = pending[r.slot]
                n += 1
            else:
                tokens[r.slot] = r.output_ids[-1]
            positions[r.slot] = n - 1
            longest = max(longest, n)
        kv_len = min(self.max_model_len, -(-longest // KV_BLOCK) * KV_BLOCK)
        select = None if len(requests) == b else self._ids([r.slot for r in requests])
        return DecodeInputs(self._ids(tokens), self._ids(positions), kv_len, select)

    def run_decode(self, inputs: DecodeInputs) -> torch.Tensor:
        """Logits [len(requests), vocab] for the next token of each running request."""
        logits = self._decode(inputs.tokens, inputs.positions, inputs.kv_len)
        return logits if inputs.select is None else logits[inputs.select]

    def decode(self, requests: list[Request]) -> torch.Tensor:
        return self.run_decode(self.decode_inputs(requests))

    def split(self, dec: DecodeInputs | None, pre: PrefillInputs | None
              ) -> list[tuple[DecodeInputs | None, PrefillInputs | None]]:
        """A step's inputs as one step per request (decoding slots first, then prompts),
        cut from the prepared tensors, never rebuilt from the requests (which the
        overlapped loop may be changing meanwhile). A decoding slot runs alone as a
        decode over slots 0..s where the others are empty slots (token 0 at the last
        position, whose K/V nobody reads)."""
        out: list[tuple[DecodeInputs | None, PrefillInputs | None]] = []
        if dec is not None:
            rows = range(len(dec.tokens)) if dec.select is None else dec.select.tolist()
            for s in rows:
                tokens = torch.zeros_like(dec.tokens[:s + 1])  # the other slots as empty ones
                positions = torch.full_like(dec.positions[:s + 1], self.max_model_len - 1)
                tokens[s], positions[s] = dec.tokens[s], dec.positions[s]
                out.append((DecodeInputs(tokens, positions, dec.kv_len, self._ids([s])), None))
        if pre is not None:
            out += [(None, PrefillInputs(pre.tokens[i:i + 1], pre.slots[i:i + 1], pre.last[i:i + 1]))
                    for i in range(len(pre.slots))]
        return out

    def run(self, dec: DecodeInputs | None, pre: PrefillInputs | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Logits of a step's decoding and newly admitted requests. Both kinds go through
        the model in one pass (uncompiled), since a second pass for a prompt or two costs
        about as much in fixed per-layer work as the prompt itself."""
        if dec is None or pre is None:
            return (self.run_decode(dec) if dec is not None else None,
                    self.run_prefill(pre) if pre is not None else None)
        if self.compiled:  # the compiled decode step stays its own pass
            return self.run_decode(dec), self.run_prefill(pre)
        dec_logits, pre_logits = self.model.step(dec.tokens, dec.positions, dec.kv_len, pre.tokens, pre.slots, pre.last)
        return (dec_logits if dec.select is None else dec_logits[dec.select]), pre_logits
