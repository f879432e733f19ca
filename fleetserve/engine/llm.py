"""Offline API for scripts: `LLM(model_dir).generate(prompts, SamplingParams(...))`."""

from __future__ import annotations

import itertools
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from fleetserve.engine.config import EngineConfig
from fleetserve.engine.detokenizer import IncrementalDetokenizer
from fleetserve.engine.engine_core import EngineCore
from fleetserve.engine.model_location import locate_model
from fleetserve.engine.outputs import FinishReason
from fleetserve.engine.sampling_params import SamplingParams
from fleetserve.model.config import ModelConfig
from fleetserve.model.generation_config import SamplingDefaults
from fleetserve.model.tokenizer import Tokenizer

Prompt = str | list[int]


@dataclass
class GenerationOutput:
    prompt_token_ids: list[int]
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None  # stop, length, abort or error
    error: str | None = None  # why, when finish_reason is "error"


class LLM:
    def __init__(self, model_dir: str | Path, **engine_args):
        """`model_dir`: a directory, or s3://BUCKET/PREFIX or an http(s) URL (engine/model_location.py)."""
        config = EngineConfig(**engine_args)
        model_dir = locate_model(model_dir, config)
        model_config = ModelConfig.from_dir(model_dir)  # the most basic problems first, before the tokenizer's
        self.tokenizer = Tokenizer(model_dir)
        self.engine = EngineCore(model_dir, config, self.tokenizer.eos_token_ids, model_config)
        d = SamplingDefaults.from_dir(model_dir)  # the model's own defaults, as the server applies them
        self.default_params = SamplingParams(max_tokens=d.max_tokens or 16, temperature=d.temperature, top_p=d.top_p,
                                             top_k=d.top_k)
        self._ids = itertools.count()

    def generate(
        self,
        prompts: Prompt | list[Prompt],
        params: SamplingParams | list[SamplingParams] | None = None,
        progress: bool = False,
    ) -> list[GenerationOutput]:
        """Run every prompt to completion; outputs are in prompt order. A prompt
        is a string or a list of token ids (a single prompt may be passed bare)."""
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        params = params or self.default_params
        per_prompt = params if isinstance(params, list) else [params] * len(prompts)
        if len(per_prompt) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(per_prompt)} sampling params")

        states: dict[str, tuple[GenerationOutput, IncrementalDetokenizer]] = {}
        results = []
        for prompt, p in zip(prompts, per_prompt):
            ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
            rid = f"llm-{next(self._ids)}"
            self.engine.add_request(rid, ids, p)
            out = GenerationOutput(prompt_token_ids=ids)
            states[rid] = (out, IncrementalDetokenizer(self.tokenizer, p))
            results.append(out)

        done, total, start = 0, len(results), time.monotonic()
        shown = start
        while self.engine.has_unfinished():
            for step in self.engine.step():
                out, detok = states[step.request_id]
                out.token_ids += step.new_token_ids
                detok.update(step.new_token_ids)
                reason = step.finish_reason
                if detok.stopped and reason is None:
                    self.engine.abort_request(step.request_id)
                    reason = FinishReason.STOP
                if reason is not None:
                    detok.flush()
                    out.text = detok.text
                    out.finish_reason = reason.value
                    out.error = step.error
                    done += 1
            now = time.monotonic()
            if progress and (now - shown > 0.5 or not self.engine.has_unfinished()):
                shown = now
                print(f"\r{done}/{total} requests, {done / max(now - start, 1e-9):.1f} req/s", end="", file=sys.stderr)
        if progress:
            print(file=sys.stderr)
        return results
