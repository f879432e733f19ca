"""A real pod's step-time model, measured, for the simulator's `batching` pods.

The pod is driven by open-loop load (the load tester, the reference workload unless told
otherwise) at rising rates; before and after each rate its `/metrics` counters are read: engine
steps and the seconds they took, prompt tokens, generated tokens and accepted speculative tokens.
Every request in a step gets one token plus the proposals accepted for it, so requests per step =
(generated - accepted) / steps. Per rate that gives a mean step time, a mean batch and prompt
tokens per step; a least-squares
fit of step time = base + per_seq x batch + per_prompt_token x prompt tokens per step (terms that
come out negative are dropped and the rest refitted) is the pod's model, with its slots (the
engine's max_num_seqs) and output tokens per request and step (above 1 with speculative decoding).
With one request size (the default workload) the measured points themselves are the model too
(`step_points_ms`, which the simulator interpolates in place of the line).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np

from fleetserve.fleet.load_signal import pod_metrics
from fleetserve.loadtest.runner import LoadTestOptions, run_loadtest

COUNTERS = ("fleetserve_engine_steps_total", "fleetserve_engine_step_seconds_total",
            "fleetserve_prompt_tokens_total", "fleetserve_generation_tokens_total",
            "fleetserve_requests_admitted_total", "fleetserve_speculative_accepted_tokens_total")


def read_metrics(url: str) -> dict[str, float]:
    """The pod's metrics, with every counter the calibration needs."""
    out = pod_metrics(url, timeout=2.0)
    missing = [n for n in COUNTERS + ("fleetserve_slots_total",) if n not in out]
    if missing:
        raise ValueError(f"{url}/metrics lacks {', '.join(missing)}: is it a fleetserve pod?")
    return out


def measure(url: str, rates: list[float], seconds: float, base: dict[str, Any],
            progress: bool = True) -> list[dict[str, Any]]:
    # A fresh pod's first requests run slower steps (first allocations and kernels): warm it up at
    # the first rate, unmeasured, so that they do not skew the lowest point of the fit.
    run_loadtest(LoadTestOptions(url=url, profile=f"constant:{rates[0]:g}@{min(seconds, 2.0):g}s", progress=False,
                                 **base))
    rows = []
    for rate in rates:
        before = read_metrics(url)
        started = time.monotonic()
        rep, _ = run_loadtest(LoadTestOptions(url=url, profile=f"constant:{rate:g}@{seconds:g}s", window=seconds,
                                              progress=False, **base))
        after = read_metrics(url)
        d = {n: after[n] - before[n] for n in COUNTERS}
        steps = d["fleetserve_engine_steps_total"]
        generated = d["fleetserve_generation_tokens_total"]
        request_steps = generated - d["fleetserve_speculative_accepted_tokens_total"]
        if steps <= 0 or request_steps <= 0:
            raise ValueError(f"the pod ran no engine step at {rate:g} req/s: is it serving?")
        batch = request_steps / steps
        o = rep["summary"]["overall"]
        row = {"rate": rate, "achieved": o["request_throughput"], "p99_e2el_ms": o["e2el"]["p99"],
               "mean_e2el_ms": o["e2el"]["mean"], "p50_e2el_ms": o["e2el"]["median"], "p90_e2el_ms": o["e2el"]["p90"],
               "errors": sum(o["errors"].values()), "seconds": round(time.monotonic() - started, 2),
               "steps": int(steps), "step_ms": d["fleetserve_engine_step_seconds_total"] / steps * 1e3,
               "batch": batch, "prompt_tokens_per_step": d["fleetserve_prompt_tokens_total"] / steps,
               "tokens_per_step": generated / request_steps,
               "output_tokens": generated / max(d["fleetserve_requests_admitted_total"], 1),
               "slots": int(after["fleetserve_slots_total"])}
        if "fleetserve_inflight_seconds_total" in after:  # time each request spent in the engine's count
            row["engine_ms_per_request"] = (after["fleetserve_inflight_seconds_total"] -
                                            before["fleetserve_inflight_seconds_total"]) / \
                max(d["fleetserve_requests_admitted_total"], 1) * 1e3
        rows.append(row)
        if progress:
            print(f"{rate:8.1f} req/s: step {row['step_ms']:.2f} ms at batch {batch:.1f} "
                  f"(+{row['prompt_tokens_per_step']:.1f} prompt tokens/step), p99 {row['p99_e2el_ms']} ms",
                  file=sys.stderr, flush=True)
        if row["errors"] or row["achieved"] < 0.8 * o["offered_rate"]:
            break  # past saturation: steps here no longer say more
    return rows


def fit(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Least squares of step time on batch and prompt tokens per step (non-negative terms).
    With one request size the two rise together (each request brings its prompt once per
    output length): then the per-request term alone carries both, which predicts that
    workload's steps as well, and `collinear` says so."""
    y = np.array([r["step_ms"] for r in rows])
    batch = np.array([r["batch"] for r in rows])
    prompt = np.array([r["prompt_tokens_per_step"] for r in rows])
    cols = {"step_base_ms": np.ones(len(rows)), "step_per_seq_ms": batch, "step_per_prompt_token_ms": prompt}
    names = list(cols)
    collinear = len(rows) < 4 or abs(float(np.corrcoef(batch, prompt)[0, 1])) > 0.98
    if collinear:
        names.remove("step_per_prompt_token_ms")
    while True:
        x = np.stack([cols[n] for n in names], axis=1)
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        negative = [n for n, c in zip(names, coef) if c < 0 and n != "step_base_ms"]
        if not negative or len(names) == 1:
            break
        names.remove(negative[0])
    params = {n: 0.0 for n in cols} | {n: round(float(c), 5) for n, c in zip(names, coef)}
    params["step_base_ms"] = max(params["step_base_ms"], 0.0)
    pred = np.stack([cols[n] for n in cols], axis=1) @ np.array([params[n] for n in cols])
    ss = float(((y - y.mean()) ** 2).sum())
    return {"params": params, "r2": round(1 - float(((y - pred) ** 2).sum()) / ss, 4) if ss > 0 else None,
            "predicted_step_ms": [round(float(p), 3) for p in pred], "collinear": collinear}


def monotone_points(points: list[tuple[float, float]]) -> list[list[float]]:
    """(batch, step ms) sorted by batch, with step times made non-decreasing by pooling adjacent
    violators (a larger batch measured a little faster is noise, not a property of the pod)."""
    blocks: list[list[float]] = []  # [sum of ms, count, first batch index]
    pts = sorted(points)
    for i, (_, ms) in enumerate(pts):
        blocks.append([ms, 1, i])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            total, n, _ = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += n
    out = []
    for total, n, first in blocks:
        out += [[round(pts[first + k][0], 3), round(total / n, 3)] for k in range(int(n))]
    return out


SPREADS = tuple(round(0.02 * k, 2) for k in range(21))  # sigmas tried, 0 .. 0.4


def fit_spread(pods: dict[str, Any], rows: list[dict[str, Any]], seconds: float = 120.0) -> dict[str, Any]:
    """The `service_spread` with which the simulated pod's latencies spread as the measured ones did:
    each candidate sigma simulates every measured rate well below the pod's slots (where the spread is
    the pod's own, not a queue's), and the one whose p90 / mean ratios come closest (in log, each rate
    counting once) wins. p90, not p99: a rate's few seconds hold tens of requests, whose
    p99 is their slowest one."""
    from fleetserve.simulate.scenario import from_dict
    from fleetserve.simulate.simulator import simulate

    used = [r for r in rows if not r["errors"] and r.get("mean_e2el_ms") and r.get("p90_e2el_ms")
            and r["batch"] < 0.8 * r["slots"]]
    if not used:
        return {"service_spread": 0.0, "rates": []}

    def ratios(sigma: float) -> list[float]:
        out = []
        for r in used:
            data = {"name": "calibration", "seed": 1, "window": seconds,
                    "traffic": {"profile": f"constant:{r['rate']:g}@{seconds:g}s",
                                "output_tokens": str(max(1, round(r.get("output_tokens", 50))))},
                    "pods": pods | {"count": 1, "service_spread": sigma}}
            o = simulate(from_dict(data))["overall"]
            out.append(o["p90_ms"] / o["mean_ms"] if o["mean_ms"] else 1.0)
        return out

    measured = np.log([r["p90_e2el_ms"] / r["mean_e2el_ms"] for r in used])
    # Each rate counts once: weighting by requests let the busiest rates, where the simulated batch's own
    # spread already runs above the measured one, fit the spread of the quiet ones to nothing.
    best = min(((float(((np.log(ratios(s)) - measured) ** 2).sum()), s) for s in SPREADS))[1]
    fitted = ratios(best)
    return {"service_spread": best,
            "rates": [{"rate": r["rate"], "measured_p90_over_mean": round(r["p90_e2el_ms"] / r["mean_e2el_ms"], 3),
                       "simulated_p90_over_mean": round(x, 3)} for r, x in zip(used, fitted)]}


def calibrate(url: str, rates: list[float], seconds: float = 8.0, base: dict[str, Any] | None = None,
              progress: bool = True) -> dict[str, Any]:
    """Measure the pod at `url` and fit its model; {"pods": scenario keys, "fit", "steps"}."""
    if len(rates) < 2:
        raise ValueError("calibration needs at least two rates")
    rows = measure(url, rates, seconds, base or {}, progress)
    if len(rows) < 2:
        raise ValueError(f"the pod saturated at the first rate ({rates[0]:g} req/s): start lower (--rates)")
    f = fit(rows)
    below = [r for r in rows if not r["errors"]]
    tokens = float(np.mean([r["tokens_per_step"] for r in below or rows]))
    pods = {"model": "batching", "slots": rows[-1]["slots"], **f["params"],
            "tokens_per_step": round(max(tokens, 1.0), 3)}
    if f["collinear"]:
        # One request size: each rate's (batch, step) point is that workload's step, prompts included.
        # The simulator interpolates them: measured, a pod's step is flat at small batches and steeper at
        # large ones, which the line misses at both ends (BENCHMARKS.md, issue 20).
        pods["step_points_ms"] = monotone_points([(r["batch"], r["step_ms"]) for r in rows])
    spread = fit_spread(pods, rows)
    pods["service_spread"] = spread["service_spread"]
    if progress and not spread["rates"]:
        print("latency spread beyond the steps: not fitted (no rate measured below 80% of the slots); sigma 0",
              file=sys.stderr, flush=True)
    elif progress:
        print(f"latency spread beyond the steps: sigma {spread['service_spread']:g} "
              f"(p90 / mean measured vs simulated: " + ", ".join(
                  f"{r['measured_p90_over_mean']:.2f} vs {r['simulated_p90_over_mean']:.2f}" for r in spread["rates"])
              + ")", file=sys.stderr, flush=True)
    return {"url": url, "pods": pods, "fit": {k: f[k] for k in ("r2", "predicted_step_ms", "collinear")},
            "spread_fit": spread["rates"], "steps": rows}
