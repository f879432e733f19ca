"""The step loop's body: schedule, run the model, sample, apply token-level stops.

Token ids only: text, stop strings and HTTP live above this layer.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import msgspec
import torch

from fleetserve.engine.checks import check_request
from fleetserve.engine.config import EngineConfig
from fleetserve.engine.memory import keep_freed_memory
from fleetserve.engine.model_location import weights_source
from fleetserve.engine.model_runner import ModelRunner, PreparedStep
from fleetserve.engine.outputs import EngineStats, FinishReason, StepOutput
from fleetserve.engine.request import Request
from fleetserve.engine.sampler import greedy_tokens, sample
from fleetserve.engine.sampling_params import SamplingParams
from fleetserve.engine.scheduler import ScheduledBatch, Scheduler
from fleetserve.engine.speculative import DraftState, Proposer, accept
from fleetserve.engine.thread_choice import ThreadChoice
from fleetserve.model.config import ModelConfig
from fleetserve.model.loader import load_model
from fleetserve.model.product_paths import choose_products
from fleetserve.model.row_invariance import attention_floor, describe

log = logging.getLogger(__name__)


class EngineCore:
    def __init__(self, model_dir: str | Path, config: EngineConfig | None = None, eos_token_ids=frozenset(),
                 model_config: ModelConfig | None = None):
        self.config = config = config or EngineConfig()
        if config.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {config.max_num_seqs}")
        if config.speculative_max_tokens < 1:
            raise ValueError(f"speculative_max_tokens must be >= 1, got {config.speculative_max_tokens}")
        if config.threads:
            torch.set_num_threads(config.threads)
        if config.thread_choice not in ("measured", "fixed"):
            raise ValueError(f"thread_choice must be measured or fixed, got {config.thread_choice!r}")
        # Per step in the plain loop only: a thread count set here would not reach the
        # overlapped loop's worker thread (OpenMP's count is per calling thread).
        most = torch.get_num_threads()
        self.threads = ThreadChoice(most) if config.thread_choice == "measured" and most > 1 and \
            not config.async_scheduling else None
        keep_freed_memory()  # before the weights: every large tensor from here on stays mapped
        self.model_config = model_config or ModelConfig.from_dir(model_dir)
        if config.max_model_len > self.model_config.max_position_embeddings:
            raise ValueError(
                f"max_model_len={config.max_model_len} exceeds the model's "
                f"max_position_embeddings={self.model_config.max_position_embeddings}"
            )
        source, cache = weights_source(config)
        model = load_model(model_dir, self.model_config, config.load_format, config.dtype, config.seed,
                           config.quantization, config.quantize_groups, config.device, source, cache)
        # which implementation runs each linear product, by shape (a compiled step fuses its own),
        # and on a CPU the rows padded so that a token's logits have the same bits whoever shares
        # its step: speculation's outputs are then those without it by construction, not only where
        # no near-tie flips a token (model/row_invariance.py)
        counts = self.threads.options if self.threads else (most,)
        self.products = {} if config.compile else \
            choose_products(model, min(config.max_num_seqs, 64), config.float_linear, config.int8_product,
                            thread_counts=counts)
        self.runner = ModelRunner(model, config.max_num_seqs, config.max_model_len, config.compile)
        if not config.compile and model.embed_tokens.weight.is_cpu:
            c = self.model_config
            floor = attention_floor(c.num_heads, c.num_kv_heads, c.head_dim, model.embed_tokens.weight.dtype, counts)
            self.runner.min_q_len = floor or 1
            multiples = {label: p["same_bits_at"] for label, p in self.products.items() if "same_bits_at" in p}
            log.info("rows padded so that each row's numbers do not depend on its step: %s", describe(multiples, floor))
        try:
            self.runner.check()
        except RuntimeError as e:
            dtype = str(model.embed_tokens.weight.dtype).removeprefix("torch.")
            raise ValueError(f"the model does not run on this machine as configured (dtype {dtype}, quantization "
                             f"{config.quantization}, device {config.device}): {str(e).splitlines()[0]}; "
                             "try --dtype float32 or --quantization none") from e
        # Slots are compacted (running requests moved down into freed slots) in the plain loop
        # only: the overlapped one has a step in flight that writes to the old slots.
        self.scheduler = Scheduler(config.max_num_seqs, max(config.max_prefill_tokens, config.max_model_len),
                                   compact=not config.async_scheduling)
        self.eos_token_ids = frozenset(eos_token_ids) | frozenset(self.model_config.eos_token_ids)
        self.stats = EngineStats()
        self._inflight_area = (time.monotonic(), 0.0, 0)  # since, integral up to since, count since
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="engine-step") if config.async_scheduling else None
        self._inflight: tuple[ScheduledBatch, Future] | None = None
        # Speculation needs the plain loop: the overlapped one runs one token per request and step.
        proposer = Proposer(config.speculative, config.speculative_max_tokens)  # checks the mode
        speculate = config.speculative != "off"
        if speculate and config.async_scheduling:
            log.warning("speculative decoding is off with async scheduling")
        self.proposer = proposer if speculate and not config.async_scheduling else None

    def add_request(self, request_id: str, prompt_ids: list[int], params: SamplingParams,
                    checked: bool = False) -> Request:
        """`checked`: the caller ran check_request already (the serving clients do, before
        anything crosses to the engine)."""
        if not checked:
            check_request(prompt_ids, params, self.config.max_model_len, self.model_config.vocab_size)
        request = Request(request_id, list(prompt_ids), params)
        if self.proposer is not None and params.greedy:  # sampled requests decode one token at a time
            request.draft = DraftState(k=min(4, self.proposer.max_k))
        self.scheduler.add(request)
        self._count_inflight()
        return request

    def abort_request(self, request_id: str) -> bool:
        request = self.scheduler.get(request_id)
        if request is None:
            return False
        request.finish_reason = FinishReason.ABORT
        self.scheduler.finish(request)
        self._count_inflight()
        return True

    def has_unfinished(self) -> bool:
        return self.scheduler.num_unfinished > 0 or self._inflight is not None

    def snapshot(self) -> EngineStats:
        """A copy of the counters with the current queue lengths. Safe from another
        thread (the core process's heartbeat): the in-flight integral is one tuple."""
        since, area, count = self._inflight_area
        now = time.monotonic()
        return msgspec.structs.replace(self.stats, waiting=self.num_waiting, running=self.num_running,
                                       inflight_seconds=area + count * (now - since), clock=now)

    def _count_inflight(self) -> None:
        """Close the interval over which the in-flight count held and start one at the
        current count; called after every change of it (add, abort, a step's finishes)."""
        since, area, count = self._inflight_area
        now = time.monotonic()
        self._inflight_area = (now, area + count * (now - since), self.scheduler.num_unfinished)

    @property
    def num_waiting(self) -> int:
        return len(self.scheduler.waiting)

    @property
    def num_running(self) -> int:
        return len(self.scheduler.running)

    def step(self) -> list[StepOutput]:
        """Run one step; returns what it produced. With `async_scheduling` the step
        returns the previous step's tokens, having launched the next one first."""
        refused = self._refuse_late() if self.config.max_queue_time else []
        outputs = self._step_overlapped() if self._worker is not None else self._step_plain()
        self._count_inflight()
        return refused + outputs if refused else outputs

    def _refuse_late(self) -> list[StepOutput]:
        """End the waiting requests that have waited longer than max_queue_time: an
        overloaded pod answers them 429 at once instead of serving them too late."""
        limit = self.config.max_queue_time
        late = self.scheduler.waited_longer(time.monotonic() - limit)
        for r in late:
            r.finish_reason = FinishReason.REJECTED
            self.scheduler.finish(r)
        self.stats.refused += len(late)
        return [StepOutput(r.request_id, [], FinishReason.REJECTED,
                           f"the pod is overloaded: no slot within {limit:g}s (--max-queue-time); retry later")
                for r in late]

    def _step_plain(self) -> list[StepOutput]:
        for move in self.scheduler.take_moves():
            self.runner.move_slot(move.src, move.dst, move.request.num_tokens)
        batch = self.scheduler.schedule()
        if not batch:
            return []
        start = time.perf_counter()
        self._admitted(batch)
        drafts = self._propose(batch.decode) if self.proposer is not None else {}
        step = self.runner.prepare(batch.decode, batch.prefill, None, drafts)
        if self.threads is None:
            result = self._run(batch, step, drafts)
        else:
            rows = step.inputs.tokens.numel()
            n = self.threads.choose(rows)
            if n != torch.get_num_threads():
                torch.set_num_threads(n)
            began = time.perf_counter()
            result = self._run(batch, step, drafts)
            self.threads.record(rows, n, time.perf_counter() - began)
            if n == 1:
                self.stats.single_thread_steps += 1
        outputs = self._finish_step(batch, *result)
        self._timed(start)
        return outputs

    def _propose(self, decode: list[Request]) -> dict[int, list[int]]:
        """slot -> the tokens proposed to follow each speculating request's last one."""
        drafts = {}
        limit = self.config.max_model_len
        for r in decode:
            if r.draft is not None:
                room = min(r.params.max_tokens - len(r.output_ids), limit - r.num_tokens) - 1
                proposed = self.proposer.propose(r.draft, r.prompt_ids, r.output_ids, room)
                if proposed:
                    drafts[r.slot] = proposed
        return drafts

    def _admitted(self, batch: ScheduledBatch) -> None:
        if batch.prefill:
            now = time.monotonic()
            self.stats.queue_seconds += sum(now - r.arrival_time for r in batch.prefill)
            self.stats.admitted += len(batch.prefill)

    def _timed(self, start: float) -> None:
        elapsed = time.perf_counter() - start
        self.stats.last_step_s = elapsed
        self.stats.step_seconds += elapsed

    def _run(self, batch: ScheduledBatch, step: PreparedStep, drafts: dict[int, list[int]]
             ) -> tuple[list[list[int]], dict[str, str]]:
        """The model and the sampler: the part that may run on the worker thread. It reads
        only the prepared inputs and each request's sampling settings and generator.
        Returns the new tokens of each request (decoding ones, then new ones) and the
        requests that failed (id -> why)."""
        requests = batch.decode + batch.prefill
        try:
            logits = self.runner.run(step)
        except Exception as e:
            return self._run_each(requests, step, drafts, e)
        return self._tokens(requests, logits, drafts)

    def _tokens(self, requests: list[Request], logits: torch.Tensor, drafts: dict[int, list[int]]
                ) -> tuple[list[list[int]], dict[str, str]]:
        """Sample one token per request; a request with drafts (greedy) has a row per draft
        too, and gets the drafts greedy decoding agrees with plus the model's next token."""
        if not drafts:
            tokens, failed = sample(logits, requests)
            return [[t] for t in tokens], {requests[i].request_id: why for i, why in failed.items()}
        first, rows = [], 0
        for r in requests:
            first.append(rows)
            rows += 1 + len(drafts.get(r.slot, ()))
        plain = [i for i, r in enumerate(requests) if r.slot not in drafts]
        greedy = greedy_tokens(logits)
        sampled, failed = sample(logits, [requests[i] for i in plain], [first[i] for i in plain], greedy)
        out: list[list[int]] = [[] for _ in requests]
        for j, i in enumerate(plain):
            out[i] = [sampled[j]]
        for i, r in enumerate(requests):
            proposed = drafts.get(r.slot)
            if proposed:
                out[i] = accept(proposed, greedy[first[i]:first[i] + len(proposed) + 1])
                r.draft.update(len(proposed), len(out[i]) - 1, self.proposer.max_k)
                self.stats.draft_tokens += len(proposed)
                self.stats.accepted_tokens += len(out[i]) - 1
        return out, {requests[plain[j]].request_id: why for j, why in failed.items()}

    def _run_each(self, requests: list[Request], step: PreparedStep, drafts: dict[int, list[int]],
                  error: Exception) -> tuple[list[list[int]], dict[str, str]]:
        """The batched pass failed: run each request alone, so that only the requests
        whose own computation fails are failed and the others get their tokens."""
        if len(requests) == 1:  # nothing to narrow down
            log.error("a step of one request failed", exc_info=error)
            outcomes = [([-1], f"{type(error).__name__}: {error}")]
        else:
            log.error("a step of %d requests failed (%s: %s); running each alone to find which", len(requests),
                      type(error).__name__, error)
            outcomes = [self._run_alone(r, alone, drafts) for r, alone in zip(requests, self.runner.split(step))]
        failed = {r.request_id: why for r, (_, why) in zip(requests, outcomes) if why is not None}
        return [tokens for tokens, _ in outcomes], failed

    def _run_alone(self, request: Request, step: PreparedStep, drafts: dict[int, list[int]]
                   ) -> tuple[list[int], str | None]:
        """(tokens, None), or ([-1], why) when this request's own step fails."""
        try:
            (tokens,), failed = self._tokens([request], self.runner.run(step), drafts)
        except Exception as e:
            log.exception("request %s failed on its own", request.request_id)
            return [-1], f"{type(e).__name__}: {e}"
        return tokens, failed.get(request.request_id)

    def _finish_step(self, batch: ScheduledBatch, tokens: list[list[int]], failed: dict[str, str]
                     ) -> list[StepOutput]:
        """Append the step's tokens, apply the stops, free finished slots and end the
        requests that failed."""
        outputs = []
        generated = 0
        if batch.prefill:
            now = time.monotonic()
            for r in batch.prefill:
                r.first_token_time = now
            self.stats.prefill_tokens += sum(len(r.prompt_ids) for r in batch.prefill)
        for r, t in zip(batch.decode + batch.prefill, tokens):
            if r.finished:  # aborted while the step ran
                continue
            why = failed.get(r.request_id) if failed else None
            if why is None:
                outputs.append(self._append(r, t))
                generated += len(outputs[-1].new_token_ids)
            else:
                outputs.append(self._fail(r, why))
        s = self.stats
        s.steps += 1
        s.generated_tokens += generated
        s.last_batch_size = len(outputs)
        return outputs

    def _fail(self, request: Request, why: str) -> StepOutput:
        request.finish_reason = FinishReason.ERROR
        self.scheduler.finish(request)
        self.stats.failed += 1
        return StepOutput(request.request_id, [], FinishReason.ERROR, f"generation failed: {why}")

    def _step_overlapped(self) -> list[StepOutput]:
        start = time.perf_counter()
        done = None
        if self._inflight is not None:
            batch, future = self._inflight
            self._inflight = None
            done = (batch, *future.result())
        # Decide and launch the next step from the finished one's tokens before doing
        # the bookkeeping: which requests end is known from the token ids alone.
        pending: dict[int, int] = {}
        ending: set[str] = set()
        if done is not None:
            batch, tokens, failed = done
            for r, (t,) in zip(batch.decode + batch.prefill, tokens):  # one token each in this loop
                if r.finished:
                    continue
                if r.request_id in failed or self._finish_reason(r, t, appended=False) is not None:
                    ending.add(r.request_id)
                else:
                    pending[r.slot] = t
        following = self.scheduler.schedule(skip=ending)
        self._admitted(following)
        if following:
            step = self.runner.prepare(following.decode, following.prefill, pending)
            self._inflight = (following, self._worker.submit(self._run, following, step, {}))
        if done is None:
            return []
        outputs = self._finish_step(*done)
        self._timed(start)
        return outputs

    def _finish_reason(self, request: Request, token: int, appended: bool = True) -> FinishReason | None:
        """Whether `token` ends the request (`appended`: it is already in output_ids)."""
        p = request.params
        extra = 0 if appended else 1
        if (token in self.eos_token_ids and not p.ignore_eos) or token in p.stop_token_ids:
            return FinishReason.STOP
        if len(request.output_ids) + extra >= p.max_tokens or request.num_tokens + extra >= self.config.max_model_len:
            return FinishReason.LENGTH
        return None

    def _append(self, request: Request, tokens: list[int]) -> StepOutput:
        """Append the step's tokens up to the first that ends the request."""
        reason = None
        for n, token in enumerate(tokens, 1):
            request.output_ids.append(token)
            reason = self._finish_reason(request, token)
            if reason is not None:
                request.finish_reason = reason
                self.scheduler.finish(request)
                tokens = tokens[:n]
                break
        return StepOutput(request.request_id, tokens, reason)
