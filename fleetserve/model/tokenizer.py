"""Tokenizer of a Hugging Face model directory, without `transformers`.

`tokenizer.json` is read with the `tokenizers` library (its post-processor adds
BOS where the model wants it); `tokenizer_config.json` supplies special tokens
and the chat template; `generation_config.json` and `config.json` supply the
end-of-sequence ids.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as HFTokenizer

from fleetserve.model.config import ModelLoadError


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{path}: not valid JSON: {e}") from e


def _token_text(value: Any) -> str | None:
    """tokenizer_config stores special tokens as strings or AddedToken dicts."""
    if isinstance(value, dict):
        return value.get("content")
    return value


class Tokenizer:
    def __init__(self, model_dir: str | Path):
        model_dir = Path(model_dir)
        path = model_dir / "tokenizer.json"
        if not path.is_file():
            raise ModelLoadError(f"{path}: missing (fleetserve needs a fast tokenizer file)")
        try:
            self._tok = HFTokenizer.from_file(str(path))
        except Exception as e:  # the library raises bare Exceptions on bad files
            raise ModelLoadError(f"{path}: cannot be read as a tokenizer: {e}") from e

        cfg = _read_json(model_dir / "tokenizer_config.json")
        self.bos_token = _token_text(cfg.get("bos_token"))
        self.eos_token = _token_text(cfg.get("eos_token"))
        template = cfg.get("chat_template")
        jinja_file = model_dir / "chat_template.jinja"
        if template is None and jinja_file.is_file():
            template = jinja_file.read_text()
        if isinstance(template, list):  # named templates: use the default one
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        self.chat_template: str | None = template
        self._compiled_template = None

        eos: set[int] = set()
        for source in (_read_json(model_dir / "generation_config.json"), _read_json(model_dir / "config.json")):
            value = source.get("eos_token_id")
            if isinstance(value, int):
                eos.add(value)
            elif isinstance(value, list):
                eos.update(int(v) for v in value)
        if self.eos_token is not None and (tid := self._tok.token_to_id(self.eos_token)) is not None:
            eos.add(tid)
        self.eos_token_ids: frozenset[int] = frozenset(eos)
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self._tok.decode(ids, skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> str:
        """Render the model's chat template (sandboxed jinja2, as transformers does)."""
        if self.chat_template is None:
            raise ValueError("this model has no chat template; use /v1/completions")
        if self._compiled_template is None:
            from jinja2.ext import loopcontrols
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            def raise_exception(message: str) -> None:
                raise ValueError(message)

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
            env.filters["tojson"] = lambda x, indent=None: json.dumps(x, ensure_ascii=False, indent=indent)
            env.globals["raise_exception"] = raise_exception
            self._compiled_template = env.from_string(self.chat_template)
        return self._compiled_template.render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token or "",
            eos_token=self.eos_token or "",
        )

    def encode_chat(self, messages: list[dict[str, Any]]) -> list[int]:
        # The template already holds any BOS text; adding special tokens again would double it.
        return self.encode(self.apply_chat_template(messages), add_special_tokens=False)
