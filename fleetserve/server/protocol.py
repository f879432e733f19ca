"""Request bodies of the pod's HTTP API, decoded and type-checked by msgspec.

msgspec names the offending field in its errors (`Expected int, got str - at
$.max_tokens`), which is exactly what a client needs in a 400. Fields we accept
only at their neutral value (n=1, penalties 0...) are checked in `sampling()`.
"""

from __future__ import annotations

from typing import Any

import msgspec

from fleetserve.engine.sampling_params import SamplingParams


class StreamOptions(msgspec.Struct):
    include_usage: bool = False


class _Sampling(msgspec.Struct, kw_only=True):
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logprobs: Any = None
    user: str | None = None

    def sampling(self, default_max_tokens: int) -> SamplingParams:
        """Raise ValueError naming the parameter if it is unsupported or out of range."""
        if self.n not in (None, 1):
            raise ValueError("n: only n=1 is supported")
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name) not in (None, 0, 0.0):
                raise ValueError(f"{name}: not supported (only 0)")
        if self.logprobs not in (None, False):
            raise ValueError("logprobs: not supported")
        max_tokens = self.max_tokens if self.max_tokens is not None else default_max_tokens
        params = SamplingParams(
            max_tokens=max_tokens,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            top_k=self.top_k or 0,
            seed=self.seed,
            stop=self.stop or [],
            stop_token_ids=self.stop_token_ids or [],
            ignore_eos=self.ignore_eos,
            skip_special_tokens=self.skip_special_tokens,
        )
        params.validate()
        return params


class CompletionRequest(_Sampling, kw_only=True):
    # msgspec allows one array type per union; the list forms are sorted out in prompt_input().
    prompt: str | list
    echo: bool = False

    def prompt_input(self) -> str | list[int]:
        p = self.prompt
        if isinstance(p, list):
            if len(p) == 1 and isinstance(p[0], (str, list)):
                p = p[0]  # a batch of one prompt
            elif p and not all(type(t) is int for t in p):
                raise ValueError("prompt: a list prompt must be token ids (integers); "
                                 "batches of several prompts are not supported, send one per request")
        if isinstance(p, list) and not all(type(t) is int for t in p):
            raise ValueError("prompt: token id lists must contain only integers")
        if not p:
            raise ValueError("prompt: must not be empty")
        if self.echo:
            raise ValueError("echo: not supported")
        return p


class ContentPart(msgspec.Struct):
    type: str
    text: str | None = None


class ChatMessage(msgspec.Struct):
    role: str
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        parts = []
        for part in self.content:
            if part.type != "text" or part.text is None:
                raise ValueError(f"messages: content part type {part.type!r} is not supported (only 'text')")
            parts.append(part.text)
        return "".join(parts)


class ChatCompletionRequest(_Sampling, kw_only=True):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = None

    def message_dicts(self) -> list[dict[str, str]]:
        if not self.messages:
            raise ValueError("messages: must not be empty")
        return [{"role": m.role, "content": m.text()} for m in self.messages]


class CorrectRequest(msgspec.Struct):
    text: str
