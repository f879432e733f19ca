"""The step loop's body: schedule, run the model, sample, apply token-level stops.

Token ids only: text, stop strings and HTTP live above this layer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from fleetserve.engine.checks import check_request
from fleetserve.engine.ipc import Stats
from fleetserve.engine.model_runner import ModelRunner
from fleetserve.engine.request import FinishReason, Request, StepOutput
from fleetserve.engine.sampler import sample
from fleetserve.engine.sampling_params import SamplingParams
from fleetserve.engine.scheduler import Scheduler
from fleetserve.model.config import ModelConfig
from fleetserve.model.loader import load_model


@dataclass
class EngineConfig:
    max_num_seqs: int = 64
    max_model_len: int = 256
    max_prefill_tokens: int = 4096
    load_format: str = "auto"
    dtype: str = "auto"
    compile: bool = False
    seed: int = 0
    threads: int | None = None  # torch intra-op threads; None keeps torch's default


@dataclass
class EngineStats:
    steps: int = 0
    prefill_tokens: int = 0
    generated_tokens: int = 0
    last_step_s: float = 0.0
    last_batch_size: int = 0


class EngineCore:
    def __init__(self, model_dir: str | Path, config: EngineConfig | None = None, eos_token_ids=frozenset(),
                 model_config: ModelConfig | None = None):
        self.config = config = config or EngineConfig()
        if config.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {config.max_num_seqs}")
        if config.threads:
            torch.set_num_threads(config.threads)
        self.model_config = model_config or ModelConfig.from_dir(model_dir)
        if config.max_model_len > self.model_config.max_position_embeddings:
            raise ValueError(
                f"max_model_len={config.max_model_len} exceeds the model's "
                f"max_position_embeddings={self.model_config.max_position_embeddings}"
            )
        model = load_model(model_dir, self.model_config, config.load_format, config.dtype, config.seed)
        self.runner = ModelRunner(model, config.max_num_seqs, config.max_model_len, config.compile)
        self.scheduler = Scheduler(config.max_num_seqs, max(config.max_prefill_tokens, config.max_model_len))
        self.eos_token_ids = frozenset(eos_token_ids) | frozenset(self.model_config.eos_token_ids)
        self.stats = EngineStats()

    def check_request(self, prompt_ids: list[int], params: SamplingParams) -> None:
        """Raise ValueError if this request can never run on this engine."""
        check_request(prompt_ids, params, self.config.max_model_len, self.model_config.vocab_size)

    def add_request(self, request_id: str, prompt_ids: list[int], params: SamplingParams) -> Request:
        self.check_request(prompt_ids, params)
        request = Request(request_id, list(prompt_ids), params)
        self.scheduler.add(request)
        return request

    def abort_request(self, request_id: str) -> bool:
        request = self.scheduler.get(request_id)
        if request is None:
            return False
        request.finish_reason = FinishReason.ABORT
        self.scheduler.finish(request)
        return True

    def has_unfinished(self) -> bool:
        return self.scheduler.num_unfinished > 0

    def snapshot(self) -> Stats:
        s = self.stats
        return Stats(self.num_waiting, self.num_running, s.steps, s.generated_tokens, s.prefill_tokens,
                     s.last_step_s, s.last_batch_size)

    @property
    def num_waiting(self) -> int:
        return len(self.scheduler.waiting)

    @property
    def num_running(self) -> int:
        return len(self.scheduler.running)

    def step(self) -> list[StepOutput]:
        batch = self.scheduler.schedule()
        if not batch:
            return []
        start = time.perf_counter()
        outputs: list[StepOutput] = []
        if batch.decode:
            tokens = sample(self.runner.decode(batch.decode), batch.decode)
            outputs += [self._append(r, t) for r, t in zip(batch.decode, tokens)]
        if batch.prefill:
            tokens = sample(self.runner.prefill(batch.prefill), batch.prefill)
            now = time.monotonic()
            for r, t in zip(batch.prefill, tokens):
                r.first_token_time = now
                outputs.append(self._append(r, t))
            self.stats.prefill_tokens += sum(len(r.prompt_ids) for r in batch.prefill)
        s = self.stats
        s.steps += 1
        s.generated_tokens += len(outputs)
        s.last_step_s = time.perf_counter() - start
        s.last_batch_size = len(outputs)
        return outputs

    def _append(self, request: Request, token: int) -> StepOutput:
        request.output_ids.append(token)
        p = request.params
        reason = None
        if (token in self.eos_token_ids and not p.ignore_eos) or token in p.stop_token_ids:
            reason = FinishReason.STOP
        elif len(request.output_ids) >= p.max_tokens or request.num_tokens >= self.config.max_model_len:
            reason = FinishReason.LENGTH
        if reason is not None:
            request.finish_reason = reason
            self.scheduler.finish(request)
        return StepOutput(request.request_id, [token], reason)
