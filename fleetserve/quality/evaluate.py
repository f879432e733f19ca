"""Run a correction system over an evaluation set and score it.

A system is a model directory (run offline through the engine, with the
model's own correction prompt), a running server's URL (its `/v1/correct`), or
a text file of outputs already made, one per line. Scores: corpus GLEU (the
JFLEG figure), the mean sentence-level GLEU, and the share of sentences left
unchanged; `agreement` compares two systems' outputs.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from fleetserve.engine.sampling_params import SamplingParams
from fleetserve.quality.gleu import gleu
from fleetserve.quality.text import detokenize, tokenize


@dataclass
class EvalSet:
    name: str
    sources: list[str]  # tokenised, as in the files
    references: list[list[str]]  # references[k][i]: reference k of sentence i

    def head(self, n: int | None) -> "EvalSet":
        if n is None:
            return self
        return EvalSet(self.name, self.sources[:n], [r[:n] for r in self.references])


def load_eval_set(path: str | Path) -> EvalSet:
    """A directory with one `*.src` file and its references `*.ref0`, `*.ref1`, ..."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: evaluation set directory not found")
    srcs = sorted(path.glob("*.src"))
    if len(srcs) != 1:
        raise ValueError(f"{path}: expected exactly one *.src file, found {len(srcs)}")
    stem = srcs[0].name[:-4]
    ref_files = sorted(path.glob(f"{stem}.ref*"), key=lambda p: p.name)
    if not ref_files:
        raise ValueError(f"{path}: no reference files {stem}.ref0, {stem}.ref1, ...")
    sources = _lines(srcs[0])
    references = [_lines(f) for f in ref_files]
    for f, refs in zip(ref_files, references):
        if len(refs) != len(sources):
            raise ValueError(f"{f}: {len(refs)} lines but {srcs[0].name} has {len(sources)}")
    return EvalSet(path.name, sources, references)


def _lines(path: Path) -> list[str]:
    return [" ".join(line.split()) for line in path.read_text(encoding="utf-8").splitlines()]


class Corrector(Protocol):
    name: str

    def correct(self, texts: list[str], progress: bool) -> list[str]: ...


class ModelCorrector:
    """A model directory, run offline through the engine."""

    def __init__(self, model_dir: str | Path, max_num_seqs: int = 64, max_model_len: int = 256, **engine_args):
        from fleetserve.engine.llm import LLM
        from fleetserve.model.correction_prompt import CorrectionPrompt

        self.name = str(model_dir)
        self.max_model_len = max_model_len
        self.llm = LLM(model_dir, max_num_seqs=max_num_seqs, max_model_len=max_model_len, **engine_args)
        self.prompt = CorrectionPrompt(model_dir, self.llm.tokenizer)

    def correct(self, texts: list[str], progress: bool = False) -> list[str]:
        """Each text as /v1/correct answers it (its sentences corrected together, the guard and
        the characters the model cannot read as there); a text the server would refuse as too
        long stays as it was."""
        plans, prompts, params, where = [], [], [], []
        for i, text in enumerate(texts):
            try:
                todo = self.prompt.plan(text)
                requests = self.prompt.requests(todo, self.max_model_len)
            except ValueError:
                continue
            plans.append(todo)
            where.append((i, len(prompts), len(prompts) + len(requests)))
            for ids, max_tokens in requests:
                prompts.append(ids)
                params.append(SamplingParams(max_tokens=max_tokens, temperature=0.0))
        outputs = list(texts)
        generations = self.llm.generate(prompts, params, progress=progress) if prompts else []
        for todo, (i, lo, hi) in zip(plans, where):
            outputs[i] = todo.answer([(g.text, g.finish_reason == "stop") for g in generations[lo:hi]])
        return outputs


class ServerCorrector:
    """A running server's `/v1/correct` (fleetserve's own API)."""

    def __init__(self, url: str, concurrency: int = 16, timeout: float = 60.0):
        self.name = url
        self.url = url.rstrip("/") + "/v1/correct"
        self.concurrency, self.timeout = concurrency, timeout

    def _one(self, text: str) -> str:
        body = json.dumps({"text": text}).encode()
        req = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return json.loads(r.read())["text"]
        except urllib.error.HTTPError as e:
            raise ConnectionError(f"{self.url}: HTTP {e.code}: {e.read()[:300].decode(errors='replace')}") from e
        except urllib.error.URLError as e:
            raise ConnectionError(f"{self.url}: {e.reason}") from e

    def correct(self, texts: list[str], progress: bool = False) -> list[str]:
        out = []
        with ThreadPoolExecutor(self.concurrency) as pool:
            for i, text in enumerate(pool.map(self._one, texts)):
                out.append(text)
                if progress and (i % 20 == 0 or i == len(texts) - 1):
                    print(f"\r{i + 1}/{len(texts)} sentences", end="", file=sys.stderr, flush=True)
        if progress:
            print(file=sys.stderr)
        return out


class FileCorrector:
    """Outputs another system already wrote, one per line in source order."""

    def __init__(self, path: str | Path):
        self.name = str(path)
        self.lines = Path(path).read_text(encoding="utf-8").splitlines()

    def correct(self, texts: list[str], progress: bool = False) -> list[str]:
        if len(self.lines) < len(texts):
            raise ValueError(f"{self.name}: {len(self.lines)} lines, but the set has {len(texts)} sentences")
        return self.lines[:len(texts)]


def corrector_for(system: str, **engine_args) -> Corrector:
    if system.startswith(("http://", "https://")):
        return ServerCorrector(system)
    path = Path(system)
    if path.is_dir():
        return ModelCorrector(path, **engine_args)
    if path.is_file():
        return FileCorrector(path)
    raise FileNotFoundError(f"{system}: not a model directory, an outputs file or an http(s) URL")


@dataclass
class EvalResult:
    system: str
    eval_set: str
    sentences: int
    gleu: float
    gleu_std: float
    sentence_gleu: float
    unchanged: float  # share of outputs equal to their source
    seconds: float
    outputs: list[str] = field(repr=False)  # tokenised like the set

    def summary(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "outputs"}


def evaluate(corrector: Corrector, eval_set: EvalSet, progress: bool = False) -> EvalResult:
    start = time.monotonic()
    raw = corrector.correct([detokenize(s) for s in eval_set.sources], progress)
    seconds = time.monotonic() - start
    outputs = [tokenize(o) for o in raw]
    return score(corrector.name, outputs, eval_set, seconds)


def score(system: str, outputs: list[str], eval_set: EvalSet, seconds: float = 0.0) -> EvalResult:
    g = gleu(outputs, eval_set.sources, eval_set.references)
    unchanged = sum(o == s for o, s in zip(outputs, eval_set.sources)) / max(len(outputs), 1)
    return EvalResult(system, eval_set.name, len(outputs), round(g.corpus, 2), round(g.std, 2),
                      round(g.sentence_mean, 2), round(unchanged, 4), round(seconds, 1), outputs)


def copy_source(eval_set: EvalSet) -> EvalResult:
    """The baseline every corrector must beat: the sources, unchanged."""
    return score("copy of the source", list(eval_set.sources), eval_set)


def agreement(a: list[str], b: list[str]) -> float:
    """Share of sentences where two systems give exactly the same output."""
    if len(a) != len(b):
        raise ValueError(f"cannot compare {len(a)} outputs with {len(b)}")
    return sum(x == y for x, y in zip(a, b)) / max(len(a), 1)
