"""What the load tester sends: request bodies for each API, and how to read
the text and token count back out of an answer (whole or streamed).

Bodies are encoded once before the run, so sending a request costs a lookup,
not a JSON encode.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import msgspec

ENDPOINTS = {"completions": "/v1/completions", "chat": "/v1/chat/completions", "correct": "/v1/correct"}


@dataclass(frozen=True)
class Workload:
    endpoint: str  # a key of ENDPOINTS
    prompts: tuple[str | tuple[int, ...], ...]
    model: str | None = None
    max_tokens: int = 50
    ignore_eos: bool = True
    stream: bool = False

    def __post_init__(self) -> None:
        if self.endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint {self.endpoint!r}: choose {', '.join(ENDPOINTS)}")
        if not self.prompts:
            raise ValueError("the workload has no prompts")
        if self.endpoint != "completions" and any(not isinstance(p, str) for p in self.prompts):
            raise ValueError(f"the {self.endpoint} endpoint takes text: give --prompts FILE "
                             "(token-id prompts work with --endpoint completions only)")
        if self.endpoint == "correct" and self.stream:
            raise ValueError("/v1/correct does not stream; drop --stream")
        if self.max_tokens < 1:
            raise ValueError("--max-tokens must be at least 1")

    @property
    def path(self) -> str:
        return ENDPOINTS[self.endpoint]

    def bodies(self) -> list[bytes]:
        """One encoded body per prompt, in prompt order."""
        return [msgspec.json.encode(self._body(p)) for p in self.prompts]

    def _body(self, prompt: str | tuple[int, ...]) -> dict:
        if self.endpoint == "correct":
            return {"text": prompt}
        body: dict = {"max_tokens": self.max_tokens, "temperature": 0.0}
        if self.model:
            body["model"] = self.model
        if self.ignore_eos:
            body["ignore_eos"] = True
        if self.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        if self.endpoint == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = list(prompt) if isinstance(prompt, tuple) else prompt
        return body


def reference_prompts(n: int, length: int = 50, vocab_size: int = 1000, seed: int = 0) -> list[tuple[int, ...]]:
    """The reference workload's prompts: `length` token ids each, so every server
    sees the same prompt length whatever its tokenizer. Ids stay clear of the
    first 10, where special tokens usually live."""
    rng = random.Random(seed)
    return [tuple(rng.randrange(10, vocab_size) for _ in range(length)) for _ in range(n)]


def file_prompts(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: prompt file not found (one prompt per line)")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    prompts = [line for line in lines if line]
    if not prompts:
        raise ValueError(f"{path}: no prompts (the file has no non-empty lines)")
    return prompts


_decoder = msgspec.json.Decoder()


def answer_text(endpoint: str, body: bytes) -> tuple[str | None, int | None]:
    """(text, completion tokens) of a whole JSON answer; None where the answer lacks them."""
    try:
        doc = _decoder.decode(body)
        if endpoint == "correct":
            return doc.get("text"), None
        choice = doc["choices"][0]
        text = choice["message"]["content"] if endpoint == "chat" else choice["text"]
        usage = doc.get("usage") or {}
        return text, usage.get("completion_tokens")
    except (msgspec.DecodeError, KeyError, IndexError, TypeError, AttributeError):
        return None, None


def event_delta(endpoint: str, data: bytes) -> tuple[str, int | None]:
    """(text delta, completion tokens from a usage event) of one server-sent event's data."""
    try:
        doc = _decoder.decode(data)
        usage = doc.get("usage")
        tokens = usage.get("completion_tokens") if usage else None
        choices = doc.get("choices") or []
        if not choices:
            return "", tokens
        c = choices[0]
        text = (c.get("delta") or {}).get("content") if endpoint == "chat" else c.get("text")
        return text or "", tokens
    except (msgspec.DecodeError, TypeError, AttributeError):
        return "", None
