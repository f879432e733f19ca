"""The pod's HTTP face: OpenAI-compatible completions and chat, /v1/correct,
health, readiness and Prometheus metrics.

Every bad input ends in a 4xx with an OpenAI-style error object before it can
reach the engine; the engine sees only requests that can run.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import msgspec

from fleetserve.engine.client import EngineClient
from fleetserve.engine.detokenizer import IncrementalDetokenizer
from fleetserve.engine.errors import EngineDeadError, RequestRejected
from fleetserve.engine.sampling_params import SamplingParams
from fleetserve.model.correction_prompt import CorrectionPrompt
from fleetserve.model.correction_text import char_edits
from fleetserve.model.generation_config import SamplingDefaults
from fleetserve.model.tokenizer import Tokenizer
from fleetserve.server.errors import APIError, error_response
from fleetserve.server.http_server import EventStream, Request, Response, json_response
from fleetserve.server.metrics import Counter, Gauge, Histogram, Registry
from fleetserve.server.options import ServerOptions
from fleetserve.server.protocol import ChatCompletionRequest, CompletionRequest, CorrectRequest

# The pod's requests in its engine (waiting and running), the same whichever frontend
# answers: the engine's own count, as of its latest heartbeat in a multi-process pod.
IN_FLIGHT_HEADER = "x-fleetserve-in-flight"
log = logging.getLogger(__name__)


def _decode_problem(body: bytes, error: msgspec.DecodeError) -> str:
    """msgspec's reason, except where it misleads: it calls both an empty body and a string
    escape of half a UTF-16 surrogate pair (which the standard library would accept) truncated."""
    if not body.strip():
        return "the request body is empty; send a JSON object"
    if str(error) == "Input data was truncated":
        try:
            json.loads(body)
        except ValueError:
            return str(error)
        return "a string holds an escaped lone UTF-16 surrogate (\\ud800-\\udfff without its pair), not a character"
    return str(error)


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


class PodServer:
    def __init__(
        self,
        engine: EngineClient,
        tokenizer: Tokenizer,
        model_dir: str | Path,
        options: ServerOptions = ServerOptions(),
    ):
        self.engine = engine
        self.tokenizer = tokenizer
        self.model_name = options.served_model_name or Path(model_dir).resolve().name
        self.request_timeout = options.request_timeout
        self.max_model_len = engine.max_model_len
        self.correction = CorrectionPrompt(model_dir, tokenizer)
        self.defaults = SamplingDefaults.from_dir(model_dir)
        self.draining = False
        self.in_flight = 0
        self.created = int(time.time())

        m = self.metrics = Registry()
        self.m_requests = m.add(Counter("fleetserve_requests_total", "HTTP requests by route and status", ("route", "status")))
        m.add(Gauge("fleetserve_requests_in_flight", "Generation requests being served", lambda: self.in_flight))
        m.add(Gauge("fleetserve_requests_waiting", "Requests waiting for a slot", lambda: engine.snapshot().waiting))
        m.add(Gauge("fleetserve_slots_running", "Slots holding a running request", lambda: engine.snapshot().running))
        m.add(Gauge("fleetserve_slots_total", "Slots (max-num-seqs)", lambda: engine.max_num_seqs))
        m.add(Gauge("fleetserve_inflight_seconds_total", "Time integral of requests waiting + running: its "
                    "increase over fleetserve_engine_clock_seconds' is the mean number in flight",
                    lambda: engine.snapshot().inflight_seconds, "counter"))
        m.add(Gauge("fleetserve_engine_clock_seconds", "The engine's monotonic clock when the figures were taken",
                    lambda: engine.snapshot().clock))
        m.add(Gauge("fleetserve_generation_tokens_total", "Tokens generated",
                    lambda: engine.snapshot().generated_tokens, "counter"))
        m.add(Gauge("fleetserve_prompt_tokens_total", "Prompt tokens prefilled",
                    lambda: engine.snapshot().prefill_tokens, "counter"))
        m.add(Gauge("fleetserve_engine_steps_total", "Engine steps run", lambda: engine.snapshot().steps, "counter"))
        m.add(Gauge("fleetserve_engine_step_seconds_total", "Time spent in engine steps",
                    lambda: engine.snapshot().step_seconds, "counter"))
        m.add(Gauge("fleetserve_engine_single_thread_steps_total", "Engine steps run on one thread, where that "
                    "measured faster than all of them (--thread-choice measured)",
                    lambda: engine.snapshot().single_thread_steps, "counter"))
        m.add(Gauge("fleetserve_engine_last_step_seconds", "Duration of the latest engine step",
                    lambda: engine.snapshot().last_step_s))
        m.add(Gauge("fleetserve_engine_last_batch_size", "Requests that advanced in the latest step",
                    lambda: engine.snapshot().last_batch_size))
        m.add(Gauge("fleetserve_queue_seconds_total", "Time admitted requests waited for a slot, summed",
                    lambda: engine.snapshot().queue_seconds, "counter"))
        m.add(Gauge("fleetserve_requests_admitted_total", "Requests given a slot",
                    lambda: engine.snapshot().admitted, "counter"))
        m.add(Gauge("fleetserve_requests_refused_total", "Requests refused with 429 after waiting longer than "
                    "--max-queue-time for a slot", lambda: engine.snapshot().refused, "counter"))
        m.add(Gauge("fleetserve_requests_failed_total", "Requests ended by an error while computing their step "
                    "(the others in the step went on)", lambda: engine.snapshot().failed, "counter"))
        m.add(Gauge("fleetserve_speculative_proposed_tokens_total", "Tokens proposed by speculative decoding",
                    lambda: engine.snapshot().draft_tokens, "counter"))
        m.add(Gauge("fleetserve_speculative_accepted_tokens_total", "Proposed tokens that greedy decoding agreed "
                    "with (each saves a step)", lambda: engine.snapshot().accepted_tokens, "counter"))
        m.add(Gauge("fleetserve_process_cpu_seconds_total", "CPU time of this serving process (a frontend's own)",
                    time.process_time, "counter"))
        self.m_e2e = m.add(Histogram("fleetserve_request_latency_seconds", "End-to-end latency of generation requests"))
        self.m_ttft = m.add(Histogram("fleetserve_time_to_first_token_seconds",
                                          "Time to first token (streamed requests and those with stop strings)"))

        self.routes = {  # path: (method, handler); GET routes answer HEAD too
            "/v1/completions": ("POST", self._generation(self.completions)),
            "/v1/chat/completions": ("POST", self._generation(self.chat)),
            "/v1/correct": ("POST", self._generation(self.correct)),
            "/v1/models": ("GET", self.models),
            "/health": ("GET", self.health),
            "/ready": ("GET", self.ready),
            "/metrics": ("GET", self.metrics_endpoint),
        }

    async def handle(self, request: Request) -> Response | EventStream:
        """Every request the HTTP server has read: to its route, or a 404 / 405 error object."""
        route = self.routes.get(request.path)
        if route is None:
            return error_response(404, f"no route {request.path}; see /v1/models, /v1/completions, "
                                       "/v1/chat/completions, /v1/correct")
        method, handler = route
        if request.method != method and not (method == "GET" and request.method == "HEAD"):
            response = error_response(405, f"{request.method} is not allowed on {request.path}")
            response.headers["allow"] = method
            return response
        return await handler(request)

    # ---- plumbing shared by the generation routes -------------------------------------------

    def _generation(self, handler):
        async def endpoint(request: Request) -> Response | EventStream:
            if self.draining:
                response = error_response(503, "server is draining", "draining")
            elif not self.engine.alive:
                response = error_response(503, "engine is not running", "engine_dead")
            else:
                try:
                    response = await handler(request)
                except APIError as e:
                    response = e.response()
                except ValueError as e:
                    response = error_response(400, str(e))
                except EngineDeadError as e:
                    response = error_response(503, str(e), "engine_dead")
                except ClientGone:
                    response = error_response(499, "client closed the request", "client_gone")
                except RequestRejected as e:
                    response = error_response(e.status, str(e), _REJECTED_CODES.get(e.status))
                    if e.status == 429:
                        response.headers["retry-after"] = "1"
                except Exception as e:  # a bug met by one request fails that request alone
                    log.exception("%s %s failed", request.method, request.path)
                    response = error_response(500, f"internal error: {type(e).__name__}: {e}", "internal_error")
            self.m_requests.inc(1, request.path, str(response.status))
            stats = self.engine.snapshot()
            response.headers[IN_FLIGHT_HEADER] = str(stats.waiting + stats.running)
            return response

        return endpoint

    def _read(self, request: Request, kind: type):
        """The body as a `kind` (the HTTP server has bounded its size)."""
        body = request.body
        try:
            codecs.utf_8_decode(body, "strict", True)  # anywhere in the body, ignored fields too
        except UnicodeDecodeError as e:
            raise APIError(400, f"request body is not valid UTF-8: {e}") from None
        try:
            return msgspec.json.decode(body, type=kind)
        except msgspec.ValidationError as e:
            raise APIError(400, f"invalid request: {e}") from None
        except msgspec.DecodeError as e:
            raise APIError(400, f"malformed JSON: {_decode_problem(body, e)}") from None
        except RecursionError:
            raise APIError(400, "malformed JSON: nested too deeply") from None

    def _check_model(self, name: str | None) -> None:
        if name is not None and name != self.model_name:
            raise APIError(404, f"model {name!r} does not exist; this server serves {self.model_name!r}",
                           "model_not_found", "model")

    @contextlib.asynccontextmanager
    async def _track(self):
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    async def _tokens(self, prompt_ids: list[int], params: SamplingParams, request_id: str,
                      whole: bool = False) -> AsyncIterator[tuple[str, str | None, int]]:
        """(new text, finish reason or None, tokens so far) per step; ends with the request.
        The first item is produced only after the request passed the engine's checks.
        `whole`: the caller wants only the end, so the engine sends every token at once
        (unless stop strings must be watched as the text grows)."""
        start = time.monotonic()
        detok = IncrementalDetokenizer(self.tokenizer, params)
        whole = whole and not params.stop
        first = not whole  # a held answer's first token arrives with its last
        async with contextlib.aclosing(self.engine.generate(request_id, prompt_ids, params, whole)) as steps:
            async for out in steps:
                if first:
                    self.m_ttft.observe(time.monotonic() - start)
                    first = False
                delta = detok.update(out.new_token_ids)
                reason = "stop" if detok.stopped else (out.finish_reason.value if out.finish_reason else None)
                if reason is not None:
                    delta += detok.flush()
                yield delta, reason, len(detok.ids)
                if reason is not None:
                    break
        self.m_e2e.observe(time.monotonic() - start)

    async def _generate(self, request: Request,
                        jobs: list[tuple[list[int], SamplingParams, str]]) -> list[Generation]:
        """The whole answer of each (prompt ids, params, request id), run together. A client
        that hangs up cancels them (the engine frees the slots within a step); one that takes
        longer than the request timeout gets a 504; the first to fail fails them all."""
        async def collect(prompt_ids: list[int], params: SamplingParams, request_id: str) -> Generation:
            parts, reason, n = [], "abort", 0
            async for delta, reason, n in self._tokens(prompt_ids, params, request_id, whole=True):
                parts.append(delta)
            return Generation("".join(parts), len(prompt_ids), n, reason)

        async def collect_all() -> list[Generation]:
            async with self._track():
                if len(jobs) == 1:
                    return [await collect(*jobs[0])]
                tasks = [asyncio.ensure_future(collect(*job)) for job in jobs]
                try:
                    return list(await asyncio.gather(*tasks))
                finally:
                    for t in tasks:  # after a failure the others would run on for nobody
                        t.cancel()

        work = asyncio.ensure_future(collect_all())
        gone = request.gone
        done, _ = await asyncio.wait({work, gone}, timeout=self.request_timeout, return_when=asyncio.FIRST_COMPLETED)
        if work in done:
            return work.result()
        work.cancel()  # leaving the engine's generators aborts the requests there
        with contextlib.suppress(asyncio.CancelledError):
            await work
        if gone in done:
            raise ClientGone()
        raise APIError(504, f"request timed out after {self.request_timeout:g}s", "timeout")

    async def _stream(self, prompt_ids: list[int], params: SamplingParams, request_id: str, chunk,
                      include_usage: bool) -> EventStream:
        """Server-sent events; `chunk(text, finish_reason)` shapes each event. The first
        token is awaited before the 200 starts, so a request the engine turns away
        (full queue, dead engine) still gets a proper HTTP status."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_timeout if self.request_timeout else None
        tokens = self._tokens(prompt_ids, params, request_id)
        self.in_flight += 1  # until the stream ends
        closed = False

        async def close() -> None:  # idempotent: the stream's end and the response's end both call it
            nonlocal closed
            if not closed:
                closed = True
                self.in_flight -= 1
                await tokens.aclose()

        try:
            async with asyncio.timeout_at(deadline):
                first = await anext(tokens)
        except BaseException as e:
            await close()
            if isinstance(e, TimeoutError):
                raise APIError(504, f"request timed out after {self.request_timeout:g}s", "timeout") from None
            raise

        async def events():
            n = 0
            try:
                async with asyncio.timeout_at(deadline):
                    item = first
                    while True:
                        delta, reason, n = item
                        if delta or reason:
                            yield b"data: " + msgspec.json.encode(chunk(delta, reason)) + b"\n\n"
                        if reason:
                            break
                        item = await anext(tokens, None)
                        if item is None:
                            break
            except EngineDeadError as e:
                yield _error_event(str(e), "engine_dead")
            except RequestRejected as e:
                yield _error_event(str(e), _REJECTED_CODES.get(e.status) or "server_error")
            except TimeoutError:
                yield _error_event(f"request timed out after {self.request_timeout:g}s", "timeout")
            finally:
                await close()
            if include_usage:
                usage = chunk(None, None) | {"choices": [], "usage": _usage(len(prompt_ids), n)}
                yield b"data: " + msgspec.json.encode(usage) + b"\n\n"
            yield b"data: [DONE]\n\n"

        return EventStream(events(), close)

    # ---- routes -------------------------------------------------------------------------------

    async def completions(self, request: Request) -> Response | EventStream:
        req = self._read(request, CompletionRequest)
        self._check_model(req.model)
        prompt = req.prompt_input()
        ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else prompt
        params = req.sampling(16, self.defaults)
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        base = {"id": rid, "object": "text_completion", "created": created, "model": self.model_name}
        if req.stream:
            def chunk(text, reason):
                return base | {"choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": reason}]}

            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return await self._stream(ids, params, rid, chunk, include_usage)
        g, = await self._generate(request, [(ids, params, rid)])
        return json_response(base | {
            "choices": [{"index": 0, "text": g.text, "logprobs": None, "finish_reason": g.finish_reason}],
            "usage": _usage(g.prompt_tokens, g.completion_tokens),
        })

    async def chat(self, request: Request) -> Response | EventStream:
        req = self._read(request, ChatCompletionRequest)
        self._check_model(req.model)
        ids = self.tokenizer.encode_chat(req.message_dicts())
        if req.max_completion_tokens is not None:
            req.max_tokens = req.max_completion_tokens
        params = req.sampling(max(1, self.max_model_len - len(ids)), self.defaults)
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        base = {"id": rid, "object": "chat.completion", "created": created, "model": self.model_name}
        if req.stream:
            sent_role = False

            def chunk(text, reason):
                nonlocal sent_role
                delta = {} if text is None else {"content": text}
                if not sent_role and text is not None:
                    delta["role"], sent_role = "assistant", True
                return base | {"object": "chat.completion.chunk",
                               "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}]}

            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return await self._stream(ids, params, rid, chunk, include_usage)
        g, = await self._generate(request, [(ids, params, rid)])
        return json_response(base | {
            "choices": [{"index": 0, "message": {"role": "assistant", "content": g.text},
                         "logprobs": None, "finish_reason": g.finish_reason}],
            "usage": _usage(g.prompt_tokens, g.completion_tokens),
        })

    async def correct(self, request: Request) -> Response:
        req = self._read(request, CorrectRequest)
        self._check_model(req.model)
        try:
            plan = self.correction.plan(req.text)
            prompts = self.correction.requests(plan, self.max_model_len)
        except ValueError as e:
            raise APIError(400, str(e), param="text") from e
        rid = f"corr-{uuid.uuid4().hex}"
        jobs = [(ids, SamplingParams(max_tokens=max_tokens, temperature=0.0), f"{rid}-{i}")
                for i, (ids, max_tokens) in enumerate(prompts)]
        generations = await self._generate(request, jobs) if jobs else []
        corrected = plan.answer([(g.text, g.finish_reason == "stop") for g in generations])
        return json_response({"text": corrected, "edits": char_edits(req.text, corrected)})

    async def models(self, request: Request) -> Response:
        card = {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "fleetserve",
                "max_model_len": self.max_model_len}
        return json_response({"object": "list", "data": [card]})

    async def health(self, request: Request) -> Response:
        if self.engine.error is not None:
            return error_response(503, f"engine crashed: {self.engine.error!r}", "engine_dead")
        return json_response({"status": "ok"})

    async def ready(self, request: Request) -> Response:
        if self.draining:
            return error_response(503, "not ready: draining", "draining")
        if not self.engine.alive:
            return error_response(503, "not ready: the engine is not running", "engine_dead")
        if not self.engine.ready:
            return error_response(503, "not ready: the engine has not answered for a while (busy or paused); "
                                       "requests are kept", "engine_stalled")
        return json_response({"status": "ready"})

    async def metrics_endpoint(self, request: Request) -> Response:
        return Response(200, self.metrics.render().encode(), "text/plain; version=0.0.4")


_REJECTED_CODES = {429: "overloaded", 500: "generation_failed"}


def _error_event(message: str, code: str) -> bytes:
    return b"data: " + msgspec.json.encode({"error": {"message": message, "type": "server_error", "code": code}}) + b"\n\n"


class ClientGone(Exception):
    """The client hung up before its answer was ready."""


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
