"""The engine's record of one request: token ids in, token ids out."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from fleetserve.engine.outputs import FinishReason
from fleetserve.engine.sampling_params import SamplingParams
from fleetserve.engine.speculative import DraftState


@dataclass(eq=False)
class Request:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    arrival_time: float = field(default_factory=time.monotonic)
    output_ids: list[int] = field(default_factory=list)
    slot: int | None = None
    finish_reason: FinishReason | None = None
    generator: torch.Generator | None = None
    first_token_time: float | None = None
    draft: DraftState | None = None  # speculative decoding's state, for a greedy request when it is on

    def __post_init__(self) -> None:
        if self.params.seed is not None:
            self.generator = torch.Generator().manual_seed(self.params.seed)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None
