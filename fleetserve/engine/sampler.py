"""Turn a step's logits into one token per request."""

from __future__ import annotations

import torch

from fleetserve.engine.request import Request


def sample(logits: torch.Tensor, requests: list[Request]) -> list[int]:
    """logits [N, vocab] float32, one row per request, in order.

    Greedy rows share one batched argmax; sampled rows draw from their own
    generator, so a seeded request gives the same tokens whatever it is batched with.
    """
    tokens = logits.argmax(dim=-1).tolist()
    for i, request in enumerate(requests):
        p = request.params
        if p.greedy:
            continue
        # A seeded request's generator is a CPU one: its row is drawn there, wherever the model ran.
        row = logits[i].float().cpu() / p.temperature
        if p.top_k and p.top_k < row.shape[-1]:
            kth = torch.topk(row, p.top_k).values[-1]
            row = row.masked_fill(row < kth, float("-inf"))
        if p.top_p < 1.0:
            sorted_logits, order = torch.sort(row, descending=True)
            probs = sorted_logits.softmax(-1)
            # Drop a token when the tokens before it already reach top_p; the first always stays.
            drop = (probs.cumsum(-1) - probs) >= p.top_p
            row = row.scatter(0, order[drop], float("-inf"))
        probs = row.softmax(-1)
        tokens[i] = int(torch.multinomial(probs, 1, generator=request.generator))
    return tokens
