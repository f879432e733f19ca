"""`fleetserve bench-correct`: the benchmark of record for the real workload, grammar
correction of sentences the model never saw in training (the bundled model's held-out
corpus lines and JFLEG dev, detokenised).

(a) Offline through the engine: sentences/s, tokens per step and the share of
proposed tokens accepted, speculative decoding off and on, side by side, with the
outputs compared. (b) Each pod layout, speculation off and on, over HTTP
(`/v1/correct`) at rising open-loop rates until the SLO (p99 end-to-end latency
under 1 s by default) is missed: the capacity at the SLO, what the pod held there,
its CPU per request and its resident memory before and after the ramp by process role; on a quiet host and, with `--busy`, with
busy-loop processes spinning on the cores (a busy host).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fleetserve.benchmarks.procs import busy_loops, pod, pod_cpu, pod_memory
from fleetserve.benchmarks.slo import run_slo_bench
from fleetserve.quality.evaluate import ModelCorrector, load_eval_set
from fleetserve.quality.text import detokenize
from fleetserve.shared_data import default_eval_set


def sentences(model_dir: str | Path, limit: int | None = None) -> list[str]:
    """Held-out corpus lines beside the model (when it has them), then JFLEG dev (when present)."""
    texts = []
    heldout = Path(model_dir) / "heldout.txt"
    if heldout.is_file():
        texts += [line for line in heldout.read_text().splitlines() if line.strip()]
    jfleg = default_eval_set()
    found = (jfleg / "dev.src").is_file()
    if found:
        texts += [detokenize(s) for s in load_eval_set(jfleg).sources]
    if not texts:
        raise ValueError(f"no sentences: neither {heldout} nor {jfleg}/dev.src exists")
    # said on every run: JFLEG's sentences are the longer ones, and a tree without them (a git
    # worktree, whose ../shared/data is elsewhere) measures easier traffic than one with them
    where = f"held-out lines and JFLEG dev from {jfleg}" if found else \
        f"held-out lines only: no JFLEG dev at {jfleg} (set FLEETSERVE_DATA)"
    print(f"sentences: {len(texts)} ({where})" + (f", the first {limit} used" if limit else ""),
          file=sys.stderr, flush=True)
    return texts[:limit] if limit else texts


def offline(model: str, texts: list[str], max_num_seqs: int, modes: list[str],
            engine_args: dict[str, Any] | None = None) -> dict[str, Any]:
    """`engine_args`: more EngineConfig settings (the pods' engine options)."""
    results, outputs = {}, {}
    for mode in modes:
        corrector = ModelCorrector(model, max_num_seqs=max_num_seqs, speculative=mode, **(engine_args or {}))
        engine = corrector.llm.engine
        corrector.correct(texts[:max_num_seqs])  # warm-up
        before, start = engine.snapshot(), time.perf_counter()
        outputs[mode] = corrector.correct(texts)
        seconds = time.perf_counter() - start
        after = engine.snapshot()
        steps = after.steps - before.steps
        drafts = after.draft_tokens - before.draft_tokens
        results[mode] = {
            "sentences_per_s": round(len(texts) / seconds, 2),
            "tokens_per_step": round((after.generated_tokens - before.generated_tokens) / max(steps, 1), 2),
            "steps": steps, "proposed": drafts,
            "acceptance": round((after.accepted_tokens - before.accepted_tokens) / drafts, 3) if drafts else None,
            "identical_to_first": outputs[mode] == outputs[modes[0]],
        }
        r = results[mode]
        print(f"offline, speculative {mode}: {r['sentences_per_s']} sentences/s, {r['tokens_per_step']} tokens/step, "
              f"acceptance {r['acceptance']}, outputs identical to {modes[0]}: {r['identical_to_first']}",
              file=sys.stderr, flush=True)
    return results


def layout_args(layout: str) -> list[str]:
    """`fleetserve serve` options of a pod layout: "F" (F frontend processes; 0 is the
    one-process pod) or "F/E" (and E engine cores; without it, the pod's default)."""
    frontends, slash, engines = layout.partition("/")
    if not frontends.isdigit() or not (engines.isdigit() if slash else engines == ""):
        raise ValueError(f"a pod layout is FRONTENDS or FRONTENDS/ENGINES, got {layout!r}")
    return ["--frontends", frontends] + (["--engines", engines] if engines else [])


def at_slo(model: str, texts: list[str], layouts: list[str], modes: list[str], slo: str, start_rate: float,
           growth: float, step_seconds: float, serve_args: list[str], busy: list[int]) -> dict[str, Any]:
    """Each layout and setting ramped on a quiet host and with each number of busy-loop
    processes: the capacity at the SLO, what the pod held there, the pod's CPU per
    answered request by role (over the whole ramp) and its resident memory by role before
    and after the ramp (a cache that grows with traffic shows there)."""
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        prompts = Path(tmp) / "sentences.txt"
        prompts.write_text("\n".join(texts) + "\n")
        for layout in layouts:
            args = layout_args(layout)
            for mode in modes:
                for n in busy:
                    # "frontends=1,engines=2,speculative=input,busy=2": the options' names and values
                    name = ",".join(f"{k.removeprefix('--')}={v}" for k, v in zip(args[::2], args[1::2])) + \
                           f",speculative={mode}" + (f",busy={n}" if n else "")
                    print(f"{name}: ramping to the SLO ({slo})", file=sys.stderr, flush=True)
                    with busy_loops(n), pod(model, [*args, "--speculative", mode, *serve_args]) as (url, pid):
                        before, memory_before = pod_cpu(pid), pod_memory(pid)
                        out = run_slo_bench(url, slo, start_rate, growth, step_seconds=step_seconds,
                                            base={"endpoint": "correct", "prompts": str(prompts)})
                        after, memory_after = pod_cpu(pid), pod_memory(pid)
                    answered = max(sum(s["completed"] for s in out["steps"]), 1)
                    cpu = {role: round((after[role] - before[role]) / answered * 1e3, 3) for role in after}
                    best = next((s for s in reversed(out["steps"]) if s["met"]), None)
                    results[name] = {"max_rate": out["max_rate"], "in_flight": out["target_per_pod"],
                                     "p50_e2el_ms": best["p50_e2el_ms"] if best else None,
                                     "p99_e2el_ms": best["p99_e2el_ms"] if best else None,
                                     "busy_loops": n, "cpu_ms_per_request": cpu,
                                     "resident_mib": {"before": memory_before, "after": memory_after},
                                     "steps": out["steps"]}
                    print(f"{name}: {out['max_rate']:g} req/s at the SLO, {out['target_per_pod']:g} in flight; "
                          f"CPU ms per request: " + ", ".join(f"{k} {v:g}" for k, v in cpu.items()) +
                          "; resident MiB before -> after the ramp: " +
                          ", ".join(f"{k} {memory_before[k]:g} -> {v:g}" for k, v in memory_after.items()),
                          file=sys.stderr, flush=True)
    return results


def run_bench_correct(model: str, limit: int | None, max_num_seqs: int, modes: list[str], layouts: list[str],
                      slo: str, start_rate: float, growth: float, step_seconds: float,
                      serve_args: list[str], busy: list[int], engine_args: dict[str, Any] | None = None
                      ) -> dict[str, Any]:
    texts = sentences(model, limit)
    result: dict[str, Any] = {"model": model, "sentences": len(texts), "max_num_seqs": max_num_seqs,
                              "serve_args": serve_args, "offline": offline(model, texts, max_num_seqs, modes, engine_args)}
    for layout in layouts:
        layout_args(layout)  # a mistyped layout fails before the offline part's minutes
    if layouts:
        result["http"] = at_slo(model, texts, layouts, modes, slo, start_rate, growth, step_seconds, serve_args,
                                busy)
    return result
