"""A model's own default sampling settings, from its `generation_config.json`.

As vLLM does: `temperature`, `top_p`, `top_k` and `max_new_tokens` there become
the defaults of requests that do not set them; `"do_sample": false` (the Hugging
Face way of saying greedy) makes the default temperature 0. A request's own
values always win. No torch here: the pod's frontends read it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SamplingDefaults:
    temperature: float = 1.0  # the OpenAI API's default where the model says nothing
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int | None = None  # None: the route's own default

    @classmethod
    def from_dir(cls, model_dir: str | Path) -> SamplingDefaults:
        """Raise ValueError naming the file and field when a value there is unusable."""
        path = Path(model_dir) / "generation_config.json"
        if not path.is_file():
            return cls()
        try:
            cfg = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(cfg, dict):
            raise ValueError(f"{path}: expected a JSON object")
        d = cls()
        temperature = _number(cfg, "temperature", path, d.temperature)
        if cfg.get("do_sample") is False:
            temperature = 0.0
        top_p = _number(cfg, "top_p", path, d.top_p)
        top_k = int(_number(cfg, "top_k", path, d.top_k))
        max_new = cfg.get("max_new_tokens")
        if temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
            raise ValueError(f"{path}: sampling defaults out of range (temperature {temperature}, top_p {top_p}, "
                             f"top_k {top_k})")
        if max_new is not None and (not isinstance(max_new, int) or isinstance(max_new, bool) or max_new < 1):
            raise ValueError(f"{path}: max_new_tokens must be a positive integer, got {max_new!r}")
        return cls(temperature, top_p, top_k, max_new)


def _number(cfg: dict, name: str, path: Path, default: float) -> float:
    value = cfg.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{path}: {name} must be a number, got {value!r}")
    return value
