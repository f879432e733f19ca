"""The pod's HTTP face: OpenAI-compatible completions and chat, /v1/correct,
health, readiness and Prometheus metrics.

Every bad input ends in a 4xx with an OpenAI-style error object before it can
reach the engine; the engine sees only requests that can run.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from fleetserve.engine.async_engine import AsyncEngine
from fleetserve.engine.errors import EngineDeadError, RequestRejected
from fleetserve.engine.detokenizer import IncrementalDetokenizer
from fleetserve.engine.sampling_params import SamplingParams
from fleetserve.model.tokenizer import Tokenizer
from fleetserve.server.correct import CorrectionPrompt, char_edits
from fleetserve.server.errors import APIError, error_response
from fleetserve.server.metrics import Counter, Gauge, Histogram, Registry
from fleetserve.server.protocol import ChatCompletionRequest, CompletionRequest, CorrectRequest

DEFAULT_MAX_BODY_BYTES = 1 << 20


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


class PodServer:
    def __init__(
        self,
        engine: AsyncEngine,
        tokenizer: Tokenizer,
        model_dir: str | Path,
        served_model_name: str | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ):
        self.engine = engine
        self.tokenizer = tokenizer
        self.model_name = served_model_name or Path(model_dir).resolve().name
        self.max_body_bytes = max_body_bytes
        self.max_model_len = engine.max_model_len
        self.correction = CorrectionPrompt(model_dir, tokenizer)
        self.draining = False
        self.in_flight = 0
        self.created = int(time.time())

        m = self.metrics = Registry()
        self.m_requests = m.add(Counter("fleetserve_requests_total", "HTTP requests by route and status", ("route", "status")))
        m.add(Gauge("fleetserve_requests_in_flight", "Generation requests being served", lambda: self.in_flight))
        m.add(Gauge("fleetserve_requests_waiting", "Requests waiting for a slot", lambda: engine.snapshot().waiting))
        m.add(Gauge("fleetserve_slots_running", "Slots holding a running request", lambda: engine.snapshot().running))
        m.add(Gauge("fleetserve_slots_total", "Slots (max-num-seqs)", lambda: engine.max_num_seqs))
        m.add(Gauge("fleetserve_generation_tokens_total", "Tokens generated",
                    lambda: engine.snapshot().generated_tokens, "counter"))
        m.add(Gauge("fleetserve_prompt_tokens_total", "Prompt tokens prefilled",
                    lambda: engine.snapshot().prefill_tokens, "counter"))
        m.add(Gauge("fleetserve_engine_steps_total", "Engine steps run", lambda: engine.snapshot().steps, "counter"))
        self.m_e2e = m.add(Histogram("fleetserve_request_latency_seconds", "End-to-end latency of generation requests"))
        self.m_ttft = m.add(Histogram("fleetserve_time_to_first_token_seconds", "Time to first token"))

        routes = [
            Route("/v1/completions", self._route(self.completions), methods=["POST"]),
            Route("/v1/chat/completions", self._route(self.chat), methods=["POST"]),
            Route("/v1/correct", self._route(self.correct), methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/ready", self.ready, methods=["GET"]),
            Route("/metrics", self.metrics_endpoint, methods=["GET"]),
        ]
        self.app = Starlette(routes=routes, lifespan=self._lifespan)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app):
        self.engine.start()
        yield
        self.engine.stop()

    # ---- plumbing shared by the generation routes -------------------------------------------

    def _route(self, handler):
        async def endpoint(request: Request) -> Response:
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
                except RequestRejected as e:
                    response = error_response(e.status, str(e), "overloaded" if e.status == 429 else None)
                    if e.status == 429:
                        response.headers["Retry-After"] = "1"
            self.m_requests.inc(1, request.url.path, str(response.status_code))
            return response

        return endpoint

    async def _read(self, request: Request, kind: type):
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise APIError(413, f"request body is {declared} bytes; the limit is {self.max_body_bytes}")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_body_bytes:
                raise APIError(413, f"request body exceeds the limit of {self.max_body_bytes} bytes")
        try:
            return msgspec.json.decode(bytes(body), type=kind)
        except UnicodeDecodeError as e:
            raise APIError(400, f"request body is not valid UTF-8: {e}") from None
        except msgspec.ValidationError as e:
            raise APIError(400, f"invalid request: {e}") from None
        except msgspec.DecodeError as e:
            raise APIError(400, f"malformed JSON: {e}") from None

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

    async def _tokens(self, prompt_ids: list[int], params: SamplingParams, request_id: str) -> AsyncIterator[tuple[str, str | None, int]]:
        """(new text, finish reason or None, tokens so far) per step; ends with the request.
        The first item is produced only after the request passed the engine's checks."""
        start = time.monotonic()
        detok = IncrementalDetokenizer(self.tokenizer, params)
        first = True
        async with contextlib.aclosing(self.engine.generate(request_id, prompt_ids, params)) as steps:
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

    async def _generate(self, prompt_ids: list[int], params: SamplingParams, request_id: str) -> Generation:
        parts, reason, n = [], "abort", 0
        async with self._track():
            async for delta, reason, n in self._tokens(prompt_ids, params, request_id):
                parts.append(delta)
        return Generation("".join(parts), len(prompt_ids), n, reason)

    def _stream(self, prompt_ids: list[int], params: SamplingParams, request_id: str, chunk, include_usage: bool) -> Response:
        """Server-sent events; `chunk(text, finish_reason)` shapes each event."""
        self.engine.check_request(prompt_ids, params)  # fail with a 400 before the 200 starts

        async def events():
            n = 0
            async with self._track():
                try:
                    async for delta, reason, n in self._tokens(prompt_ids, params, request_id):
                        if delta or reason:
                            yield b"data: " + msgspec.json.encode(chunk(delta, reason)) + b"\n\n"
                except EngineDeadError as e:
                    err = {"error": {"message": str(e), "type": "server_error", "code": "engine_dead"}}
                    yield b"data: " + msgspec.json.encode(err) + b"\n\n"
            if include_usage:
                usage = chunk(None, None) | {"choices": [], "usage": _usage(len(prompt_ids), n)}
                yield b"data: " + msgspec.json.encode(usage) + b"\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    # ---- routes -------------------------------------------------------------------------------

    async def completions(self, request: Request) -> Response:
        req = await self._read(request, CompletionRequest)
        self._check_model(req.model)
        prompt = req.prompt_input()
        ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else prompt
        params = req.sampling(default_max_tokens=16)
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        base = {"id": rid, "object": "text_completion", "created": created, "model": self.model_name}
        if req.stream:
            def chunk(text, reason):
                return base | {"choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": reason}]}

            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return self._stream(ids, params, rid, chunk, include_usage)
        g = await self._generate(ids, params, rid)
        return JSONResponse(base | {
            "choices": [{"index": 0, "text": g.text, "logprobs": None, "finish_reason": g.finish_reason}],
            "usage": _usage(g.prompt_tokens, g.completion_tokens),
        })

    async def chat(self, request: Request) -> Response:
        req = await self._read(request, ChatCompletionRequest)
        self._check_model(req.model)
        ids = self.tokenizer.encode_chat(req.message_dicts())
        if req.max_completion_tokens is not None:
            req.max_tokens = req.max_completion_tokens
        params = req.sampling(default_max_tokens=max(1, self.max_model_len - len(ids)))
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
            return self._stream(ids, params, rid, chunk, include_usage)
        g = await self._generate(ids, params, rid)
        return JSONResponse(base | {
            "choices": [{"index": 0, "message": {"role": "assistant", "content": g.text},
                         "logprobs": None, "finish_reason": g.finish_reason}],
            "usage": _usage(g.prompt_tokens, g.completion_tokens),
        })

    async def correct(self, request: Request) -> Response:
        req = await self._read(request, CorrectRequest)
        if not req.text.strip():
            return JSONResponse({"text": req.text, "edits": []})
        try:
            ids, params = self.correction.request(req.text, self.max_model_len)
        except ValueError as e:
            raise APIError(400, str(e), param="text") from e
        g = await self._generate(ids, params, f"corr-{uuid.uuid4().hex}")
        corrected = g.text.strip()
        return JSONResponse({"text": corrected, "edits": char_edits(req.text, corrected)})

    async def models(self, request: Request) -> Response:
        card = {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "fleetserve",
                "max_model_len": self.max_model_len}
        return JSONResponse({"object": "list", "data": [card]})

    async def health(self, request: Request) -> Response:
        if self.engine.error is not None:
            return error_response(503, f"engine crashed: {self.engine.error!r}", "engine_dead")
        return JSONResponse({"status": "ok"})

    async def ready(self, request: Request) -> Response:
        if self.draining or not self.engine.alive:
            return error_response(503, "not ready", "draining" if self.draining else "engine_dead")
        return JSONResponse({"status": "ready"})

    async def metrics_endpoint(self, request: Request) -> Response:
        return PlainTextResponse(self.metrics.render(), media_type="text/plain; version=0.0.4")


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
