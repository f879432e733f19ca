"""Request bodies of the pod's HTTP API, decoded and type-checked by msgspec.

msgspec names the offending field in its errors (`Expected int, got str - at
$.max_tokens`), which is exactly what a client needs in a 400. Nothing a client
sends is silently ignored: an unknown field is a 400 naming it, and OpenAI
parameters this server does not implement (best_of, logit_bias, tools, ...)
are accepted only at the value that changes nothing, checked in `sampling()`.
Integers are bounded to 64 bits here, before anything crosses to the engine.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from fleetserve.engine.sampling_params import INT64_MAX, INT64_MIN, SamplingParams
from fleetserve.model.generation_config import SamplingDefaults

Int64 = Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)]

# OpenAI parameters accepted only at these values, which mean "not used"; anything else is a 400.
_NEUTRAL: dict[str, tuple] = {
    "n": (None, 1),
    "best_of": (None, 1),
    "presence_penalty": (None, 0),
    "frequency_penalty": (None, 0),
    "repetition_penalty": (None, 1),
    "min_p": (None, 0),
    "min_tokens": (None, 0),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "logit_bias": (None, {}),
    "suffix": (None, ""),
    "echo": (None, False),
    "tools": (None, []),
    "functions": (None, []),
    "tool_choice": (None, "none", "auto"),  # with no tools, both mean plain text
    "function_call": (None, "none", "auto"),
    "response_format": (None, {"type": "text"}),
    "modalities": (None, ["text"]),
    "audio": (None,),
    "prediction": (None,),
    "reasoning_effort": (None,),
    "web_search_options": (None,),
}


class StreamOptions(msgspec.Struct, forbid_unknown_fields=True):
    include_usage: bool = False
    continuous_usage_stats: bool = False


class _Sampling(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    model: str | None = None
    max_tokens: Int64 | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: Annotated[int, msgspec.Meta(ge=-1, le=INT64_MAX)] | None = None
    seed: Int64 | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[Int64] | None = None
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    stream: bool = False
    stream_options: StreamOptions | None = None
    # Bookkeeping fields of the OpenAI API that change no output: accepted as they are.
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    parallel_tool_calls: bool | None = None
    # Accepted only at their neutral value (see _NEUTRAL).
    n: Any = None
    best_of: Any = None
    presence_penalty: Any = None
    frequency_penalty: Any = None
    repetition_penalty: Any = None
    min_p: Any = None
    min_tokens: Any = None
    logprobs: Any = None
    top_logprobs: Any = None
    logit_bias: Any = None
    tools: Any = None
    functions: Any = None
    tool_choice: Any = None
    function_call: Any = None
    response_format: Any = None

    def sampling(self, default_max_tokens: int, defaults: SamplingDefaults = SamplingDefaults()) -> SamplingParams:
        """Raise ValueError naming the parameter if it is unsupported (ranges are checked
        with the prompt, by checks.check_request). Unset values come from the model's `defaults`, then the route's `default_max_tokens`."""
        for name, allowed in _NEUTRAL.items():
            value = getattr(self, name, None)  # None too where this request kind has no such field
            if value is not None and not any(_same(value, a) for a in allowed):
                shown = repr(value)
                shown = shown if len(shown) <= 60 else shown[:57] + "..."
                raise ValueError(f"{name}: not supported by this server (got {shown}); leave it out")
        params = SamplingParams(
            max_tokens=_first(self.max_tokens, defaults.max_tokens, default_max_tokens),
            temperature=_first(self.temperature, defaults.temperature),
            top_p=_first(self.top_p, defaults.top_p),
            top_k=_first(self.top_k, defaults.top_k),
            seed=self.seed,
            stop=self.stop or [],
            stop_token_ids=self.stop_token_ids or [],
            ignore_eos=self.ignore_eos,
            skip_special_tokens=self.skip_special_tokens,
        )
        return params  # validated with the prompt, by the engine client (checks.check_request)


def _first(*values):
    return next(v for v in values if v is not None)


def _same(value, neutral) -> bool:
    """Equal, and of the same kind (True is not 1 here, 0.0 is 0)."""
    if isinstance(value, bool) != isinstance(neutral, bool):
        return False
    return value == neutral


class CompletionRequest(_Sampling, kw_only=True, forbid_unknown_fields=True):
    # msgspec allows one array type per union; the list forms are sorted out in prompt_input().
    prompt: str | list
    echo: Any = None
    suffix: Any = None

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
        return p


class ContentPart(msgspec.Struct, forbid_unknown_fields=True):
    type: str
    text: str | None = None


class ChatMessage(msgspec.Struct, forbid_unknown_fields=True):
    role: str
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        parts = []
        for part in self.content:
            if part.type != "text" or part.text is None:
                raise ValueError(f"messages: content part type {part.type!r} is not supported (only 'text')")
            parts.append(part.text)
        return "".join(parts)


class ChatCompletionRequest(_Sampling, kw_only=True, forbid_unknown_fields=True):
    messages: list[ChatMessage]
    max_completion_tokens: Int64 | None = None
    modalities: Any = None
    audio: Any = None
    prediction: Any = None
    reasoning_effort: Any = None
    web_search_options: Any = None

    def message_dicts(self) -> list[dict[str, str]]:
        if not self.messages:
            raise ValueError("messages: must not be empty")
        return [{"role": m.role, "content": m.text()} for m in self.messages]


class CorrectRequest(msgspec.Struct, forbid_unknown_fields=True):
    text: str
    model: str | None = None
