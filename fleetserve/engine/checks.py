"""Can this request ever run on this engine? The one validation of a request: the engine
clients run it before anything crosses to the engine, the offline engine on add. No torch here."""

from __future__ import annotations

from fleetserve.engine.sampling_params import SamplingParams


def check_request(prompt_ids: list[int], params: SamplingParams, max_model_len: int, vocab_size: int) -> None:
    """Raise ValueError, with a message a client can act on, if the request can never
    run on an engine of this length and vocabulary."""
    params.validate()
    n = len(prompt_ids)
    if n == 0:
        raise ValueError("prompt is empty")
    limit = max_model_len
    if n >= limit:
        raise ValueError(
            f"prompt is {n} tokens; this model's maximum context length is {limit} tokens "
            "(prompt and completion together)"
        )
    if n + params.max_tokens > limit:
        raise ValueError(
            f"this model's maximum context length is {limit} tokens; the request has "
            f"{n} prompt tokens and max_tokens={params.max_tokens} ({n + params.max_tokens} in all)"
        )
    bad = next((t for t in prompt_ids if not 0 <= t < vocab_size), None)
    if bad is not None:
        raise ValueError(f"prompt token id {bad} is outside the vocabulary [0, {vocab_size})")
    bad = next((t for t in params.stop_token_ids if not 0 <= t < vocab_size), None)
    if bad is not None:
        raise ValueError(f"stop_token_ids: {bad} is outside the vocabulary [0, {vocab_size})")
