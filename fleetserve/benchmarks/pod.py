"""`fleetserve bench-pod`: how much of the engine's offline throughput survives
the trip through HTTP, for each pod layout, in one run.

For the reference workload (50 prompt tokens, 50 generated, ignore_eos) it
measures the offline engine (`LLM.generate`, the ceiling), then starts
`fleetserve serve` with each `--frontends` setting and offers it more requests
per second than it can answer (`fleetserve loadtest`, open loop); the rate it
completes is its throughput at saturation. Each figure is reported as a ratio
to the offline one measured in the same run.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from fleetserve.benchmarks import cpu_profile
from fleetserve.loadtest.runner import LoadTestOptions, run_loadtest
from fleetserve.benchmarks.procs import pod
from fleetserve.fleet.load_signal import pod_metrics


def offline(model: str, engine_args: dict[str, Any], requests: int, vocab: int) -> float:
    from fleetserve.engine.llm import LLM
    from fleetserve.engine.sampling_params import SamplingParams
    from fleetserve.loadtest.workload import reference_prompts

    llm = LLM(model, **engine_args)
    prompts = [list(p) for p in reference_prompts(requests, 50, vocab)]
    params = SamplingParams(max_tokens=50, temperature=0.0, ignore_eos=True)
    llm.generate(prompts[: engine_args["max_num_seqs"]], params)  # warm-up, as a running server would be
    start = time.perf_counter()
    llm.generate(prompts, params)
    return requests / (time.perf_counter() - start)


def saturated(url: str, rate: float, seconds: float, vocab: int, warmup: float) -> dict[str, Any]:
    """Throughput while offered more than the pod can do: completions in the steady part of the run."""
    rep, _ = run_loadtest(LoadTestOptions(url=url, profile=f"constant:{rate:g}@{seconds + warmup:g}s",
                                          window=1.0, vocab_size=vocab, progress=False, timeout=600,
                                          arrival="constant"))
    steady = [w for w in rep["summary"]["windows"] if w["start_s"] >= warmup]
    achieved = sum(w["request_throughput"] for w in steady) / len(steady)
    o = rep["summary"]["overall"]
    return {"requests_per_s": round(achieved, 3), "errors": o["errors"], "e2el_p50_ms": o["e2el"]["median"],
            "client_late_share": o["client_lag"]["late_share"]}


def layouts(frontends: list[int], async_modes: str) -> list[tuple[int, bool]]:
    modes = {"off": [False], "on": [True], "both": [False, True]}
    if async_modes not in modes:
        raise ValueError(f"--async-scheduling must be off, on or both, not {async_modes!r}")
    return [(n, a) for n in frontends for a in modes[async_modes]]


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def _measure_layout(model: str, args: list[str], rate: float, seconds: float, warmup: float, vocab: int,
                    tag: str, profile_dir: str | None, log) -> dict[str, Any]:
    """One pod layout at saturation: request rate over the measured seconds, the engine
    counters over the same seconds and, with `profile_dir`, a py-spy summary."""
    with pod(model, args) as (url, pid):
        spies: list[subprocess.Popen] = []
        before: dict[str, float] = {}
        after: dict[str, float] = {}
        raw = Path(profile_dir or ".") / f"{tag}.raw"

        def measuring() -> None:  # at the end of the warm-up: engine counters, profiler
            before.update(pod_metrics(url))
            if profile_dir is not None:
                spies.append(cpu_profile.record(pid, seconds, raw))

        # The engine counters cover the measured seconds only: not the warm-up, when
        # slots are still filling, nor the drain after the last arrival.
        timers = [threading.Timer(warmup, measuring),
                  threading.Timer(warmup + seconds, lambda: after.update(pod_metrics(url)))]
        for t in timers:
            t.start()
        r = saturated(url, rate, seconds, vocab, warmup)
        for t in timers:
            t.cancel()
        for spy in spies:
            spy.wait(timeout=60)
        if profile_dir is not None and raw.exists():
            roles = cpu_profile.write_summary(raw, Path(profile_dir), tag)["roles"]
            r["cpu_profile"] = {role: v["share"] for role, v in roles.items()}
            log(f"  profile: {Path(profile_dir) / (tag + '.txt')}")
    steps = after.get("fleetserve_engine_steps_total", 0.0) - before.get("fleetserve_engine_steps_total", 0.0)
    if before and after and steps:
        r["step_ms"] = round(1e3 * (after["fleetserve_engine_step_seconds_total"]
                                    - before["fleetserve_engine_step_seconds_total"]) / steps, 2)
        r["tokens_per_step"] = round((after["fleetserve_generation_tokens_total"]
                                      - before["fleetserve_generation_tokens_total"]) / steps, 2)
    return r


def _summarize_rounds(rounds: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per layout: the median over rounds of each figure, the ratio's range, and any errors."""
    http: dict[str, dict[str, Any]] = {}
    for name in rounds[0]["http"]:
        runs = [rd["http"][name] for rd in rounds]
        ratios = [r["ratio_to_offline"] for r in runs]
        s: dict[str, Any] = {"ratio_to_offline": round(_median(ratios), 3),
                             "ratio_min": min(ratios), "ratio_max": max(ratios)}
        for key in ("requests_per_s", "step_ms", "tokens_per_step", "e2el_p50_ms", "client_late_share"):
            vals = [r[key] for r in runs if r.get(key) is not None]
            if vals:
                s[key] = round(_median(vals), 3)
        errors: dict[str, int] = {}
        for r in runs:
            for k, v in r["errors"].items():
                errors[k] = errors.get(k, 0) + v
        s["errors"] = errors
        if "cpu_profile" in runs[0]:
            s["cpu_profile"] = runs[0]["cpu_profile"]
        http[name] = s
    return http


def run_pod_bench(model: str, frontends: list[int], rate: float | None, seconds: float, max_num_seqs: int,
                  extra: list[str], async_modes: str = "both", warmup: float | None = None,
                  profile_dir: str | None = None, rounds: int = 1, log=print) -> dict[str, Any]:
    """`rate` None: 1.25x the offline throughput, enough to keep a queue without
    letting it grow so long that requests time out. `warmup` None: long enough for
    1.5 batches of requests to pass through at the offline rate (at least 5 s).
    `profile_dir`: sample each layout's processes with py-spy over the measured
    seconds of the first round and write a summary per layout there.

    `rounds` > 1 repeats the whole sequence (offline, then every layout) and reports
    the median of each layout's per-round ratios: on a shared host the speed of the
    machine drifts between minutes, so each ratio is taken against the offline figure
    measured minutes before it, and the median discards a round that a neighbour spoiled."""
    import torch

    from fleetserve.model.config import ModelConfig

    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    plan = layouts(frontends, async_modes)
    if profile_dir is not None:
        cpu_profile.py_spy()  # fail before the long part when it is missing
        Path(profile_dir).mkdir(parents=True, exist_ok=True)
    vocab = min(ModelConfig.from_dir(model).vocab_size, 32000)
    engine_args: dict[str, Any] = {"max_num_seqs": max_num_seqs}
    if "dummy" in extra:  # random weights at the config's shape, offline as over HTTP
        engine_args["load_format"] = "dummy"
    # Like for like: the pod's engine gets the offline engine's threads (torch's default), not
    # serve's own default, unless the caller sets them.
    same_threads = [] if "--threads" in extra else ["--threads", str(torch.get_num_threads())]
    out: dict[str, Any] = {"model": model, "max_num_seqs": max_num_seqs, "seconds": seconds,
                           "cores": len(os.sched_getaffinity(0)), "rounds": []}
    for i in range(rounds):
        prefix = f"[round {i + 1}/{rounds}] " if rounds > 1 else ""
        log(f"{prefix}offline engine (LLM.generate) ...")
        base = offline(model, engine_args, max(4 * max_num_seqs, 128), vocab)
        if i == 0:  # the offered rate and warm-up stay fixed across rounds
            rate = rate or round(1.25 * base, 2)
            warmup = warmup if warmup is not None else max(5.0, round(1.5 * max_num_seqs / base))
            out.update(offered_rate=rate, warmup_s=warmup)
        log(f"{prefix}offline engine: {base:.2f} req/s; offering {rate:g} req/s over HTTP, "
            f"{warmup:g} s warm-up + {seconds:g} s")
        rnd: dict[str, Any] = {"offline_requests_per_s": round(base, 3), "http": {}}
        for n, overlap in plan:
            name = f"frontends={n}" + (" async" if overlap else "")
            args = ["--frontends", str(n), "--max-num-seqs", str(max_num_seqs), "--max-waiting", "0",
                    "--max-queue-time", "0", "--request-timeout", "0",
                    "--async-scheduling" if overlap else "--no-async-scheduling", *same_threads, *extra]
            tag = name.replace("=", "").replace(" ", "-")
            r = _measure_layout(model, args, rate, seconds, warmup, vocab, tag,
                                profile_dir if i == 0 else None, log)
            r["ratio_to_offline"] = round(r["requests_per_s"] / base, 3)
            rnd["http"][name] = r
            log(f"{prefix}{name}: {r['requests_per_s']:.2f} req/s over HTTP = {r['ratio_to_offline']:.2f} x offline "
                f"(step {r.get('step_ms')} ms, {r.get('tokens_per_step')} tokens/step; "
                f"errors {r['errors'] or 'none'})")
        out["rounds"].append(rnd)
    out["offline_requests_per_s"] = round(_median([rd["offline_requests_per_s"] for rd in out["rounds"]]), 3)
    out["http"] = _summarize_rounds(out["rounds"])
    if rounds > 1:
        log(f"median of {rounds} rounds (offline {out['offline_requests_per_s']:.2f} req/s):")
        for name, s in out["http"].items():
            log(f"  {name}: {s['ratio_to_offline']:.2f} x offline (rounds {s['ratio_min']:.2f}..{s['ratio_max']:.2f}), "
                f"step {s.get('step_ms')} ms")
    return out
