"""`fleetserve loadtest`: build the schedule and the workload, send it from one
or more sender processes, then summarise, check the SLO, compare with the
shadow, and write the reports."""

from __future__ import annotations

import json
import multiprocessing as mp
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from fleetserve.loadtest import metrics, report, shadow, slo
from fleetserve.loadtest.generator import SendPlan, SendResult, run
from fleetserve.loadtest.profile import parse_profile
from fleetserve.loadtest.records import Records
from fleetserve.loadtest.workload import Workload, file_prompts, reference_prompts


@dataclass
class LoadTestOptions:
    url: str
    profile: str = "constant:10@10s"
    arrival: str = "poisson"
    seed: int = 0
    endpoint: str = "completions"
    prompts: str | None = None  # a file, one prompt per line; None: the reference workload
    prompt_len: int = 50
    vocab_size: int = 1000
    max_tokens: int = 50
    ignore_eos: bool | None = None  # default: on for the reference workload, off for prompt files
    stream: bool = False
    model: str | None = None
    timeout: float = 30.0
    window: float = 5.0
    slo: str | None = None
    shadow: str | None = None
    workers: int = 1
    max_connections: int = 10_000
    json_path: str | None = None
    png_path: str | None = None
    html_path: str | None = None
    progress: bool = True


def served_model(url: str, timeout: float = 5.0) -> str | None:
    """The first model a server lists at /v1/models; raises ConnectionError if it cannot be reached."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/v1/models", timeout=timeout) as r:
            data = json.loads(r.read())
        return data["data"][0]["id"]
    except urllib.error.HTTPError:
        return None  # reachable, but lists no models: send requests without a model name
    except (urllib.error.URLError, OSError) as e:
        raise ConnectionError(f"cannot reach {url}: {getattr(e, 'reason', e)}") from e
    except (KeyError, IndexError, ValueError):
        return None


def _workload(o: LoadTestOptions) -> Workload:
    if o.prompts:
        prompts: list = file_prompts(o.prompts)
        ignore_eos = bool(o.ignore_eos)
    else:
        prompts = reference_prompts(256, o.prompt_len, o.vocab_size, o.seed)
        ignore_eos = True if o.ignore_eos is None else o.ignore_eos
    workload = Workload(o.endpoint, tuple(prompts), o.model, o.max_tokens, ignore_eos, o.stream)  # checks first
    if o.model is None and o.endpoint != "correct":
        workload = replace(workload, model=served_model(o.url))
    return workload


class _Progress:
    """A one-line progress report from the senders' counters, once a second."""

    def __init__(self, duration: float, rate_at, enabled: bool, workers: int):
        self.duration, self.rate_at, self.enabled = duration, rate_at, enabled
        self.counts = [[0, 0, 0] for _ in range(workers)]
        self.t0: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def publisher(self, w: int):
        def publish(sent: int, done: int, errors: int) -> None:
            self.counts[w] = [sent, done, errors]
        return publish

    def start(self, t0_wall: float) -> None:
        self.t0 = t0_wall
        if self.enabled:
            self._thread.start()

    def _loop(self) -> None:
        last_done, last_t = 0, time.time()
        while not self._stop.wait(1.0):
            sent, done, errors = (sum(c[k] for c in self.counts) for k in range(3))
            t = time.time()
            elapsed = max(0.0, t - self.t0)
            achieved = (done - last_done) / (t - last_t)
            last_done, last_t = done, t
            offered = float(self.rate_at(min(elapsed, self.duration - 1e-9)))
            print(f"\r[{min(elapsed, self.duration):6.1f}/{self.duration:.0f}s] offered {offered:7.1f}/s  "
                  f"achieved {achieved:7.1f}/s  sent {sent}  in flight {sent - done}  errors {errors}   ",
                  end="", file=sys.stderr, flush=True)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
            print(file=sys.stderr)


def _sender(plan: SendPlan, w: int, shared, ready, go, start, results) -> None:
    """A sender process: waits until every sender is ready, then runs its share."""
    def publish(sent: int, done: int, errors: int) -> None:
        shared[3 * w:3 * w + 3] = [sent, done, errors]

    ready.put(w)
    go.wait()
    try:
        results.put((w, run(plan, start.value, publish)))
    except BaseException as e:  # the parent must hear of it rather than wait forever
        results.put((w, e))


def _send(plans: list[SendPlan], progress: _Progress) -> list[SendResult]:
    if len(plans) == 1:
        start = time.time() + 0.05
        progress.start(start)
        try:
            return [run(plans[0], start, progress.publisher(0))]
        finally:
            progress.stop()
    ctx = mp.get_context("spawn")  # the parent may hold threads; spawned senders start clean
    shared = ctx.Array("q", 3 * len(plans), lock=False)
    ready, results, go, start = ctx.Queue(), ctx.Queue(), ctx.Event(), ctx.Value("d", 0.0, lock=False)
    procs = [ctx.Process(target=_sender, args=(p, w, shared, ready, go, start, results), daemon=True)
             for w, p in enumerate(plans)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=60)
    start.value = time.time() + 0.2
    go.set()
    progress.counts = _SharedCounts(shared, len(plans))
    progress.start(start.value)
    out: dict[int, SendResult] = {}
    try:
        while len(out) < len(plans):
            w, res = results.get()
            if isinstance(res, BaseException):
                raise RuntimeError(f"sender {w} failed: {res!r}") from res
            out[w] = res
    finally:
        progress.stop()
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
    return [out[w] for w in range(len(plans))]


class _SharedCounts:
    """The senders' shared counters, read as the per-sender lists `_Progress` expects."""

    def __init__(self, shared, n: int):
        self.shared, self.n = shared, n

    def __iter__(self):
        return iter([list(self.shared[3 * w:3 * w + 3]) for w in range(self.n)])


def run_loadtest(o: LoadTestOptions) -> tuple[dict[str, Any], int]:
    """Run the test; returns (report, exit status): 0, or 1 when the SLO failed."""
    profile = parse_profile(o.profile)
    objectives = slo.parse_slo(o.slo) if o.slo else []
    needs_stream = [ob.text for ob in objectives if ob.latency in ("ttft", "tpot", "itl")]
    if needs_stream and not o.stream:
        raise ValueError(f"SLO {', '.join(needs_stream)}: token timings need --stream")
    if o.workers < 1 or o.window <= 0 or o.timeout <= 0:
        raise ValueError("--workers, --window and --timeout must be positive")
    workload = _workload(o)
    if o.shadow:
        served_model(o.shadow)  # fail now, not after the run, if the candidate is unreachable
    due = profile.arrivals(o.arrival, o.seed)
    if len(due) == 0:
        raise ValueError(f"{o.profile!r} schedules no request; raise the rate or the duration")
    index = np.arange(len(due))
    prompt = index % len(workload.prompts)
    plans = [SendPlan(o.url, workload, due[w::o.workers], index[w::o.workers], prompt[w::o.workers], o.timeout,
                      max(1, o.max_connections // o.workers), o.shadow) for w in range(o.workers)]
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    progress = _Progress(profile.duration, profile.rate_at, o.progress, o.workers)
    results = _send(plans, progress)

    records = Records(texts=[] if o.shadow else None)
    candidate = Records(texts=[]) if o.shadow else None
    for r in results:
        records.extend(r.records)
        if candidate is not None:
            candidate.extend(r.shadow)
    records = records.sorted_by_index()
    thresholds = slo.goodput_thresholds(objectives) or {"e2el": 1.0}
    summary = metrics.summarize(records.arrays(), records.error, profile.duration, o.window, thresholds, due)
    out: dict[str, Any] = {
        "target": o.url, "profile": o.profile, "arrival": o.arrival, "seed": o.seed, "started": started,
        "workload": (f"{workload.endpoint}, {'prompts from ' + o.prompts if o.prompts else f'{o.prompt_len}-token prompts'}"
                     f", max_tokens {workload.max_tokens}{', stream' if workload.stream else ''}"
                     f"{', ignore_eos' if workload.ignore_eos else ''}"),
        "model": workload.model, "window_s": o.window, "timeout_s": o.timeout, "workers": o.workers,
        "goodput_thresholds_s": thresholds,
        "peak_connections": sum(r.peak_connections for r in results),
        "summary": summary,
        "slo_latency_lines_ms": [ob.threshold * 1e3 for ob in objectives if ob.latency == "e2el"],
        "knee": metrics.knee(summary["windows"], 1e3 * min([ob.threshold for ob in objectives
                                                            if ob.path == ("e2el", "p99")] or [1.0])),
    }
    status = 0
    if objectives:
        failures = slo.check(objectives, summary)
        out["slo"] = {"spec": o.slo, "passed": not failures, "failures": [str(f) for f in failures]}
        status = 1 if failures else 0
    if o.shadow:
        out["shadow_target"] = o.shadow
        out["shadow"] = shadow.compare(records, candidate, list(workload.prompts))
    for path, write in ((o.json_path, report.write_json), (o.png_path, report.write_png),
                        (o.html_path, report.write_html)):
        if path:
            write(out, path)
    return out, status


def describe(rep: dict[str, Any]) -> str:
    """The human summary printed at the end of a run."""
    o = rep["summary"]["overall"]
    lines = [f"{rep['target']}  {rep['profile']}  ({rep['workload']})",
             f"  offered {o['offered_rate']:.1f} req/s, achieved {o['request_throughput']:.1f} req/s, "
             f"goodput {o['request_goodput']:.1f} req/s; {o['sent_requests']} sent, "
             f"availability {o['availability']}, errors {o['errors'] or 'none'}",
             f"  client lag: {o['client_lag']['late_requests']} sent >10 ms late "
             f"(p99 {o['client_lag']['p99_ms']} ms)"]
    if rep.get("knee"):
        k = rep["knee"]
        lines.append(f"  knee: {k['offered_rate']:.1f} req/s offered ({k['request_throughput']:.1f} achieved) with "
                     f"e2el p99 {k['p99_e2el_ms']:.0f} ms, the highest window before latency or errors broke")
    for m in ("ttft", "tpot", "itl", "e2el"):
        s = o[m]
        if s["mean"] is not None:
            lines.append(f"  {m:5s} ms  mean {s['mean']:9.2f}  p50 {s['median']:9.2f}  p90 {s['p90']:9.2f}  "
                         f"p99 {s['p99']:9.2f}  p99.9 {s['p99.9']:9.2f}")
    if "shadow" in rep:
        s = rep["shadow"]
        lines.append(f"  shadow {rep['shadow_target']}: exact match {s['exact_match_rate']} over {s['compared']}, "
                     f"candidate errors {s['candidate_errors'] or 'none'}, "
                     f"e2el difference p50 {s['e2el_difference']['median']} ms")
        for e in s["examples"][:3]:
            lines.append(f"    differs: {str(e['prompt'])[:60]!r}: {e['primary'][:50]!r} vs {e['candidate'][:50]!r}")
    if "slo" in rep:
        v = rep["slo"]
        lines.append(f"  SLO {v['spec']}: " + ("met" if v["passed"] else "FAILED"))
        lines += [f"    {f}" for f in v["failures"][:20]]
        if len(v["failures"]) > 20:
            lines.append(f"    ... and {len(v['failures']) - 20} more")
    return "\n".join(lines)


def default_report_paths(o: LoadTestOptions, out_dir: str | None) -> None:
    """With --out DIR, write report.json, report.png and report.html there."""
    if out_dir:
        d = Path(out_dir)
        o.json_path = o.json_path or str(d / "report.json")
        o.png_path = o.png_path or str(d / "report.png")
        o.html_path = o.html_path or str(d / "report.html")
