"""`fleetserve demo-fleet`: `fleetserve up` under a load test, with the checks of
issue 8 made explicit.

- `--scenario ramp`: min 1 pod, a ramp that needs more, a hold, then a fall.
  Checks: pods were added while the load rose; none was removed before the load
  fell and the scale-down window passed; the load test saw no errors (drained
  pods finish what they hold).
- `--scenario chaos`: constant load; one ready pod is killed with SIGKILL part way.
  Checks: availability at least 99.9% over the run, and the supervisor replaced it.

Writes the load test's report (JSON, PNG, HTML), the fleet's decisions (one JSON
line per second) and a plot of pods over time, into `--out`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fleetserve.fleet.local_fleet import FleetConfig  # the demo keeps its decision interval
from fleetserve.fleet.supervisor import free_port
from fleetserve.tools.loadtest.profile import parse_profile
from fleetserve.tools.loadtest.runner import LoadTestOptions, run_loadtest
from fleetserve.tools.procs import wait_ready


def _events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _children_alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
            alive.append(pid)
        except ProcessLookupError:
            pass
    return alive


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            kids = [int(k) for t in Path(f"/proc/{p}/task").iterdir()
                    for k in (t / "children").read_text().split()]
        except OSError:
            kids = []
        out += kids
        todo += kids
    return out


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


def run_demo(scenario: str, out: Path, model: str | None, profile: str, target_per_pod: float | None,
             target_from: str | None, min_pods: int, max_pods: int, serve_args: str, scale_down_window: float,
             scale_down_period: float, kill_at: float = 0.5, endpoint: str = "completions",
             prompts: str | None = None, max_tokens: int = 50, scale_up_window: float = 10.0, vocab_size: int = 1000,
             quiet: bool = False) -> dict[str, Any]:
    def log(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr, flush=True)

    out.mkdir(parents=True, exist_ok=True)
    events_path = out / "fleet-events.jsonl"
    events_path.unlink(missing_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "fleetserve", "up", "--port", str(port), "--min", str(min_pods), "--max",
           str(max_pods), "--scale-up-window", str(scale_up_window), "--scale-down-window", str(scale_down_window),
           "--scale-down-period",
           str(scale_down_period), "--events", str(events_path), "--workdir", str(out / "fleet"), "--no-status",
           "--serve-args", serve_args]
    if model:
        cmd += ["--model", model]
    cmd += ["--target-from", target_from] if target_from else ["--target-per-pod", str(target_per_pod or 16)]
    log("$ " + " ".join(cmd[2:]))
    fleet = subprocess.Popen(cmd, stdout=open(out / "fleet.log", "w"), stderr=subprocess.STDOUT)
    result: dict[str, Any] = {"scenario": scenario, "profile": profile, "command": "fleetserve " + " ".join(cmd[3:])}
    killed: dict[str, Any] = {}
    fleet_pids: set[int] = set()
    try:
        wait_ready(url, fleet, 120, "fleetserve up")
        fleet_pids.update(_descendants(fleet.pid))
        t_load = time.monotonic()
        t_up = _events(events_path)[-1]["t"] if _events(events_path) else 0.0
        if scenario == "chaos":
            duration = parse_profile(profile).duration

            def chaos() -> None:
                time.sleep(duration * kill_at)
                roots = [p for p in _descendants(fleet.pid)
                         if Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")[3:4] == [b"serve"]]
                if roots:
                    victim = roots[0]
                    os.kill(victim, signal.SIGKILL)
                    killed.update(pid=victim, at_s=round(time.monotonic() - t_load, 2))
                    log(f"killed pod process {victim} with SIGKILL at {killed['at_s']}s")

            import threading

            threading.Thread(target=chaos, daemon=True).start()
        log(f"load test: {profile}")
        rep, _ = run_loadtest(LoadTestOptions(url=url, profile=profile, window=5.0, progress=not quiet,
                                              endpoint=endpoint, prompts=prompts, max_tokens=max_tokens,
                                              vocab_size=vocab_size,
                                              json_path=str(out / "report.json"), png_path=str(out / "report.png"),
                                              html_path=str(out / "report.html")))
        time.sleep(scale_down_window + 2 * scale_down_period + 5 if scenario == "ramp" else 2)
    finally:
        fleet_pids.update(_descendants(fleet.pid))  # every router and pod process alive now
        if fleet.poll() is None:
            fleet.send_signal(signal.SIGTERM)
        try:
            result["fleet_exit"] = fleet.wait(timeout=120)
        except subprocess.TimeoutExpired:
            fleet.kill()
            result["fleet_exit"] = fleet.wait()
    time.sleep(0.5)
    result["left_running"] = _children_alive(sorted(fleet_pids))
    events = _events(events_path)
    o = rep["summary"]["overall"]
    result.update(sent=o["sent_requests"], completed=o["completed_requests"], errors=o["errors"],
                  availability=o["availability"], p99_e2el_ms=o["e2el"]["p99"], killed=killed)
    load_t0 = t_up  # the events' clock starts with the fleet; the load began once it was ready
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


def _last_peak(profile: str) -> float:
    """Seconds into the profile when its highest rate was last offered."""
    prof = parse_profile(profile)
    steps = [i * 0.25 for i in range(int(prof.duration / 0.25) + 1)]
    rates = [float(prof.rate_at(t)) for t in steps]
    top = max(rates)
    return max(t for t, r in zip(steps, rates) if r >= top - 1e-9)


def add_arguments(p) -> None:
    p.add_argument("--scenario", choices=["ramp", "chaos"], default="ramp")
    p.add_argument("--out", default="build/demo-fleet", help="where reports go (default %(default)s)")
    p.add_argument("--model", default=None, help="default: the bundled model")
    p.add_argument("--profile", default=None,
                   help="load profile (default: ramp 2..18/s over 60 s, hold 30 s, 2/s for 90 s; chaos: 8/s for 60 s)")
    p.add_argument("--target-per-pod", type=float, default=None)
    p.add_argument("--target-from", default=None, metavar="FILE", help="a saved fleetserve bench-slo result")
    p.add_argument("--min", type=int, default=1, dest="min_pods")
    p.add_argument("--max", type=int, default=3, dest="max_pods")
    p.add_argument("--serve-args", default="--frontends 0 --threads 1 --max-num-seqs 16",
                   help="pod options (default %(default)s: one core per pod, so pods add capacity on a small machine)")
    p.add_argument("--scale-down-window", type=float, default=30.0)
    p.add_argument("--scale-down-period", type=float, default=10.0)
    p.add_argument("--endpoint", choices=["completions", "chat", "correct"], default="completions")
    p.add_argument("--prompts", default=None)


def run_cli(a) -> None:
    profile = a.profile or ("ramp:2..18@60s+constant:18@30s+constant:2@90s" if a.scenario == "ramp"
                            else "constant:8@60s")
    r = run_demo(a.scenario, Path(a.out), a.model, profile, a.target_per_pod, a.target_from, a.min_pods, a.max_pods,
                 a.serve_args, a.scale_down_window, a.scale_down_period, endpoint=a.endpoint, prompts=a.prompts)
    print(json.dumps(r, indent=1))
    sys.exit(0 if r["passed"] else 1)
