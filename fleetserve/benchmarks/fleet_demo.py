"""`fleetserve demo-fleet`: `fleetserve up` under a load test, with the checks of
issue 8 made explicit.

- `--scenario ramp`: min 1 pod, a ramp that needs more, a hold, then a fall.
  Checks: pods were added while the load rose; none was removed before the load
  fell and the scale-down window passed; the load test saw no errors (drained
  pods finish what they hold).
- `--scenario chaos`: constant load; one ready pod is killed with SIGKILL part way.
  Checks: availability at least 99.9% over the run, and the supervisor replaced it.
- `--scenario contention`: the main job as a user meets it on a busy machine: the
  README's `fleetserve up` (default pods) under a ramp of real correction requests
  (`/v1/correct`, held-out sentences) while busy-loop processes keep every core
  occupied. Checks: every request answered, 200 or 429 (never a dead pod's 503).

Without `--target-per-pod` or `--target-from`, the ramp's target comes from the
profile and one measurement: a pod's mean latency at the profile's first rate,
so that the peak holds about 2.5 pods' worth of requests in flight and the tail
well under one (the demo must need more pods at the peak on any machine).

Writes the load test's report (JSON, PNG, HTML), the fleet's decisions (one JSON
line per second) and a plot of pods over time, into `--out`.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fleetserve.fleet.local_fleet import FleetConfig, bundled_model  # the demo keeps its decision interval
from fleetserve.http_common import free_port
from fleetserve.loadtest.profile import parse_profile
from fleetserve.loadtest.runner import LoadTestOptions, run_loadtest
from fleetserve.benchmarks.procs import busy_loops, cmdline, descendants, pod, wait_ready


def read_events(path: Path) -> list[dict[str, Any]]:
    """The fleet's decisions, one JSON line each (`fleetserve up --events`)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _still_running(pids: dict[int, str], seconds: float = 10.0) -> list[str]:
    """'pid command' of those of `pids` (pid -> its command line when seen) still running
    after `seconds` (processes that exit slowly on a busy host are not left behind)."""
    deadline = time.monotonic() + seconds
    while True:
        alive = [f"{pid} {cmd}" for pid, cmd in sorted(pids.items()) if cmdline(pid) == cmd]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def plot_pods(events: list[dict[str, Any]], path: Path, load_start: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [e["t"] - load_start for e in events]
    fig, ax = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
    ax[0].step(t, [e["ready"] for e in events], where="post", label="ready")
    ax[0].step(t, [e["ready"] + e["starting"] for e in events], where="post", label="ready + starting", ls="--")
    ax[0].step(t, [e["desired"] for e in events], where="post", label="desired", ls=":")
    ax[0].set_ylabel("pods")
    ax[0].legend(loc="upper left")
    ax[1].plot(t, [e["load"] for e in events], label="in flight (short-window mean)")
    ax[1].plot(t, [e["rps"] for e in events], label="requests/s through the router")
    ax[1].set_xlabel("seconds since the load test began")
    ax[1].legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


PEAK_PODS = 2.5  # pods' worth of requests in flight at the profile's peak, when the demo sizes the target


def calibrate_target(model: str | None, serve_args: str, profile: str, options: dict[str, Any], log
                     ) -> tuple[float, str]:
    """A target per pod from the profile and one measurement: the mean latency of one pod
    (`fleetserve serve` with the demo's pod options) at the profile's first rate."""
    rates = _sampled_rates(profile)
    low, peak = max(rates[0][1], 1.0), max(r for _, r in rates)
    with pod(model or bundled_model(), shlex.split(serve_args)) as (url, _):
        rep, _ = run_loadtest(LoadTestOptions(url=url, profile=f"constant:{low:g}@8s", window=8.0, progress=False,
                                              **options))
    latency = rep["summary"]["overall"]["e2el"]["mean"] / 1000
    if not latency > 0:
        raise RuntimeError(f"the calibration pod answered no request: {rep['summary']['overall']['errors']}")
    target = round(peak * latency / PEAK_PODS, 3)
    how = (f"profile + measurement: one pod's mean latency {latency * 1000:.0f} ms at {low:g} req/s; "
           f"the peak {peak:g} req/s then holds {peak * latency:.2f} in flight = {PEAK_PODS} pods at target {target}")
    log(f"target_per_pod {target} ({how})")
    return target, how


def run_demo(scenario: str, out: Path, model: str | None, profile: str, target_per_pod: float | None,
             target_from: str | None, min_pods: int, max_pods: int | None, serve_args: str, scale_down_window: float,
             scale_down_period: float, kill_at: float = 0.5, endpoint: str = "completions",
             prompts: str | None = None, max_tokens: int = 50, scale_up_window: float = 10.0, vocab_size: int = 1000,
             quiet: bool = False, busy: int = 0) -> dict[str, Any]:
    def log(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr, flush=True)

    out.mkdir(parents=True, exist_ok=True)
    load = dict(endpoint=endpoint, prompts=prompts, max_tokens=max_tokens, vocab_size=vocab_size)
    target_how = "given"
    if target_from:
        target_how = f"from {target_from}"
    elif target_per_pod is None:
        if scenario == "ramp":
            target_per_pod, target_how = calibrate_target(model, serve_args, profile, load, log)
        else:
            target_per_pod, target_how = 16.0, "fleetserve up's default"
    events_path = out / "fleet-events.jsonl"
    events_path.unlink(missing_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "fleetserve", "up", "--port", str(port), "--min", str(min_pods),
           *(["--max", str(max_pods)] if max_pods is not None else []), "--scale-up-window", str(scale_up_window),
           "--scale-down-window", str(scale_down_window), "--scale-down-period", str(scale_down_period),
           "--events", str(events_path), "--workdir", str(out / "fleet"), "--no-status", "--serve-args", serve_args]
    if model:
        cmd += ["--model", model]
    cmd += ["--target-from", target_from] if target_from else ["--target-per-pod", str(target_per_pod)]
    log("$ " + " ".join(cmd[2:]))
    fleet = subprocess.Popen(cmd, stdout=open(out / "fleet.log", "w"), stderr=subprocess.STDOUT)
    result: dict[str, Any] = {"scenario": scenario, "profile": profile, "command": "fleetserve " + " ".join(cmd[3:]),
                              "target_per_pod": target_per_pod, "target_how": target_how, "busy_loops": busy,
                              "autoscaler": {"min_replicas": min_pods, "max_replicas": max_pods,
                                             "scale_up_window": scale_up_window,
                                             "scale_down_window": scale_down_window,
                                             "scale_down_period": scale_down_period}}
    killed: dict[str, Any] = {}
    fleet_pids: dict[int, str] = {}
    try:
        wait_ready(url, fleet, 120, "fleetserve up")
        fleet_pids.update((p, cmdline(p)) for p in descendants(fleet.pid))
        t_load = time.monotonic()
        t_up = read_events(events_path)[-1]["t"] if read_events(events_path) else 0.0
        if scenario == "chaos":
            duration = parse_profile(profile).duration

            def chaos() -> None:
                time.sleep(duration * kill_at)
                roots = [p for p in descendants(fleet.pid)
                         if Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")[3:4] == [b"serve"]]
                if roots:
                    victim = roots[0]
                    os.kill(victim, signal.SIGKILL)
                    killed.update(pid=victim, at_s=round(time.monotonic() - t_load, 2))
                    log(f"killed pod process {victim} with SIGKILL at {killed['at_s']}s")

            import threading

            threading.Thread(target=chaos, daemon=True).start()
        log(f"load test: {profile}" + (f", with {busy} busy-loop processes" if busy else ""))
        with busy_loops(busy):
            rep, _ = run_loadtest(LoadTestOptions(url=url, profile=profile, window=5.0, progress=not quiet,
                                                  json_path=str(out / "report.json"),
                                                  png_path=str(out / "report.png"),
                                                  html_path=str(out / "report.html"), **load))
        time.sleep(scale_down_window + 2 * scale_down_period + 5 if scenario == "ramp" else 2)
    finally:
        fleet_pids.update((p, cmdline(p)) for p in descendants(fleet.pid))  # every router and pod process now
        if fleet.poll() is None:
            fleet.send_signal(signal.SIGTERM)
        try:
            result["fleet_exit"] = fleet.wait(timeout=120)
        except subprocess.TimeoutExpired:
            fleet.kill()
            result["fleet_exit"] = fleet.wait()
    result["left_running"] = _still_running(fleet_pids)
    events = read_events(events_path)
    o = rep["summary"]["overall"]
    result.update(sent=o["sent_requests"], completed=o["completed_requests"], errors=o["errors"],
                  availability=o["availability"], p99_e2el_ms=o["e2el"]["p99"], killed=killed)
    load_t0 = t_up  # the events' clock starts with the fleet; the load began once it was ready
    result["load_t0"] = load_t0
    plot_pods(events, out / "pods.png", load_t0)
    duration = parse_profile(profile).duration
    during = [e for e in events if load_t0 <= e["t"] <= load_t0 + duration]
    result["max_pods"] = max((e["ready"] for e in events), default=0)
    result["replaced"] = max((e["replaced"] for e in events), default=0)
    ups = [e["t"] - load_t0 for a, e in zip(events, events[1:]) if e["desired"] > a["desired"]]
    downs = [e["t"] - load_t0 for a, e in zip(events, events[1:]) if e["desired"] < a["desired"]]
    result["scale_ups_at_s"], result["scale_downs_at_s"] = [round(x, 1) for x in ups], [round(x, 1) for x in downs]
    checks: dict[str, bool] = {"fleet exited 0": result["fleet_exit"] == 0,
                               "no child process left": not result["left_running"]}
    if scenario == "ramp":
        peak_end = load_t0 + _last_peak(profile)
        checks["pods added during the ramp"] = bool(ups) and min(ups) < duration
        # The autoscaler samples the load once per decision (every second), so it can see
        # the peak end up to one interval before the load test's clock says it did.
        checks["no scale-down before the load fell and the window passed"] = \
            all(t + load_t0 >= peak_end + scale_down_window - FleetConfig.interval for t in downs)
        checks["pods removed after the load fell"] = bool(downs)
        checks["no errors seen by the load test"] = not o["errors"]
    elif scenario == "contention":
        checks["every request answered 200 or 429"] = o["completed_requests"] + o["errors"].get("http_429", 0) \
            == o["sent_requests"] and set(o["errors"]) <= {"http_429"}
    else:
        checks["a pod was killed"] = bool(killed)
        checks["availability >= 99.9%"] = o["availability"] >= 0.999
        checks["the supervisor replaced it"] = result["replaced"] >= 1
    result["checks"] = checks
    result["passed"] = all(checks.values())
    result["during_load_max_ready"] = max((e["ready"] for e in during), default=0)
    (out / "summary.json").write_text(json.dumps(result, indent=1) + "\n")
    for name, ok in checks.items():
        log(f"{'PASS' if ok else 'FAIL'}  {name}")
    return result


def _sampled_rates(profile: str) -> list[tuple[float, float]]:
    """(seconds into the profile, offered rate) every 0.25 s."""
    prof = parse_profile(profile)
    return [(i * 0.25, float(prof.rate_at(i * 0.25))) for i in range(int(prof.duration / 0.25) + 1)]


def _last_peak(profile: str) -> float:
    """Seconds into the profile when its highest rate was last offered."""
    rates = _sampled_rates(profile)
    top = max(r for _, r in rates)
    return max(t for t, r in rates if r >= top - 1e-9)


ONE_CORE_PODS = "--frontends 0 --threads 1 --max-num-seqs 16"
SCENARIOS = {  # profile, endpoint, pod options, most pods (None: fleetserve up's default), busy loops (None: a core each)
    "ramp": ("ramp:2..18@60s+constant:18@30s+constant:2@90s", "completions", ONE_CORE_PODS, 3, 0),
    "chaos": ("constant:8@60s", "completions", ONE_CORE_PODS, 3, 0),
    "contention": ("ramp:1..20@20s+constant:20@40s", "correct", "", None, None),
}
