"""What the engine reports per request and step. No torch here: the pod's
frontends import this without loading the model's libraries."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class FinishReason(str, enum.Enum):
    STOP = "stop"  # EOS, a stop token or a stop string
    LENGTH = "length"  # max_tokens or the model length
    ABORT = "abort"  # cancelled by the client or the server


@dataclass
class StepOutput:
    """What one engine step produced for one request: the new token and, when it
    ended, why. The engine sends only these deltas, never whole sequences."""

    request_id: str
    new_token_ids: list[int]
    finish_reason: FinishReason | None = None
