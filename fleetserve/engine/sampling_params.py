"""Per-request generation settings: the one form of a request's settings, from the
HTTP schema's conversion to the engine's scheduler, and on the wire between a
pod's processes (a msgspec struct). Validated once, by `checks.check_request`."""

from __future__ import annotations

import math

import msgspec

# Below this temperature sampling is greedy (as vLLM does): dividing logits by a
# vanishing temperature only overflows, and the distribution is already one-hot.
SAMPLING_EPS = 1e-5
# Integers cross to the engine process as msgpack int64; anything wider is refused here.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class SamplingParams(msgspec.Struct, array_like=True, omit_defaults=True):
    """temperature 0 (or below SAMPLING_EPS) means greedy; top_k 0 (or -1) and top_p 1
    mean no truncation."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: list[str] = []  # stop strings: watched by the frontend, which sees text
    stop_token_ids: list[int] = []
    ignore_eos: bool = False
    skip_special_tokens: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if self.top_k == -1:
            self.top_k = 0

    @property
    def greedy(self) -> bool:
        return self.temperature < SAMPLING_EPS

    def validate(self) -> None:
        """Raise ValueError with a message a client can act on. Whatever passes here
        samples without numerical failure (see sampler.py)."""
        if not _is_int(self.max_tokens) or self.max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive integer, got {self.max_tokens!r}")
        if not _is_number(self.temperature) or not math.isfinite(self.temperature) or self.temperature < 0:
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if not _is_number(self.top_p) or not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not _is_int(self.top_k) or self.top_k < 0:
            raise ValueError(f"top_k must be -1, 0 (disabled) or positive, got {self.top_k!r}")
        if self.seed is not None and (not _is_int(self.seed) or not INT64_MIN <= self.seed <= INT64_MAX):
            raise ValueError(f"seed must be an integer in [{INT64_MIN}, {INT64_MAX}], got {self.seed!r}")
        if any(not _is_int(t) for t in self.stop_token_ids):
            raise ValueError("stop_token_ids must be integers")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError("stop strings must be non-empty strings")


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)
