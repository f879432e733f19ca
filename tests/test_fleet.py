"""`fleetserve up` as real processes (router, supervisor, autoscaler, pods serving a
model) under short load tests: it scales up on a ramp and back down after it with
no errors, survives a pod killed with SIGKILL, and leaves no process behind."""

import json

import pytest

from fleetserve.fleet.local_fleet import pod_serve_args, target_from_file
from fleetserve.benchmarks.fleet_demo import run_demo

pytestmark = pytest.mark.slow  # starts processes or servers (make test-quick skips it)

POD = "--frontends 0 --threads 1 --max-num-seqs 4"


def test_fleet_scales_up_on_a_ramp_and_down_after_it(tiny_model_dir, tmp_path):
    r = run_demo("ramp", tmp_path, str(tiny_model_dir), "ramp:2..40@8s+constant:40@4s+constant:1@6s",
                 target_per_pod=0.25, target_from=None, min_pods=1, max_pods=2, serve_args=POD,
                 scale_down_window=4.0, scale_down_period=1.0, max_tokens=64, scale_up_window=2.0, vocab_size=500,
                 quiet=True)
    assert r["checks"] and r["passed"], json.dumps(r, indent=1)
    assert r["max_pods"] == 2 and r["errors"] == {}
    assert (tmp_path / "pods.png").stat().st_size > 1000 and (tmp_path / "report.json").exists()
    # every pod's time to ready, and to the router's first request to it (the scale-up's pod too)
    last = json.loads((tmp_path / "fleet-events.jsonl").read_text().splitlines()[-1])
    ready, serving = last["ready_in_s"], last["serving_in_s"]
    assert len(ready) >= 2 and len(serving) >= 2, last
    assert all(0 < x < 60 for x in ready + serving) and sorted(serving)[1] >= sorted(ready)[1], last


def test_fleet_replaces_a_killed_pod_without_losing_requests(tiny_model_dir, tmp_path):
    r = run_demo("chaos", tmp_path, str(tiny_model_dir), "constant:20@8s", target_per_pod=100, target_from=None,
                 min_pods=2, max_pods=2, serve_args=POD, scale_down_window=60.0, scale_down_period=10.0,
                 kill_at=0.4, max_tokens=16, scale_up_window=2.0, vocab_size=500, quiet=True)
    assert r["killed"], r
    assert r["passed"], json.dumps(r, indent=1)


def test_target_from_a_bench_slo_result(tmp_path):
    f = tmp_path / "slo.json"
    f.write_text(json.dumps({"target_per_pod": 6.7, "max_rate": 11.4}))
    assert target_from_file(f) == 6.7
    f.write_text(json.dumps({"target_per_pod": 0.0}))
    with pytest.raises(ValueError, match="met the SLO at no load"):
        target_from_file(f)
    f.write_text("{}")
    with pytest.raises(ValueError, match="not a fleetserve bench-slo result"):
        target_from_file(f)
    with pytest.raises(FileNotFoundError, match="bench-slo"):
        target_from_file(tmp_path / "missing.json")


def test_local_pods_share_the_cores_unless_the_options_set_threads():
    assert pod_serve_args([], max_pods=2, cores=2) == ["--threads", "1"]
    assert pod_serve_args(["--max-num-seqs", "8"], max_pods=1, cores=2) == ["--max-num-seqs", "8", "--threads", "2"]
    assert pod_serve_args([], max_pods=3, cores=16) == ["--threads", "5"]
    assert pod_serve_args([], max_pods=10, cores=2) == ["--threads", "1"]  # at least one each
    for given in (["--threads", "2"], ["--threads=2"]):
        assert pod_serve_args(given, max_pods=4, cores=2) == given


def test_bench_slo_finds_the_knee_of_a_stand_in_pod():
    """A stub server with 2 slots and 50 ms per request can take 40 req/s; p99 < 300 ms holds
    until the queue starts to grow."""
    from fleetserve.benchmarks.slo import run_slo_bench
    from serving import stub

    with stub("--delay", "50ms", "--concurrency", "2") as url:
        r = run_slo_bench(url, "p99_e2el<300ms", start_rate=5, growth=2, step_seconds=3, quiet=True,
                          base={"model": "stub", "max_tokens": 4})
    rates = [s["rate"] for s in r["steps"]]
    assert rates[:3] == [5, 10, 20] and not r["steps"][-1]["met"]
    assert all(s["met"] for s in r["steps"][:-1])
    assert 10 <= r["max_rate"] <= 40  # never above the stub's capacity
    best = [s for s in r["steps"] if s["met"]][-1]
    # Little's law at the highest good step: in flight = rate x mean latency (2 in service + a queue)
    assert abs(r["target_per_pod"] - best["achieved"] * best["mean_e2el_ms"] / 1e3) < 0.11
    assert 0.5 <= r["target_per_pod"] <= 6


def test_fleet_replaces_a_pod_that_is_alive_but_sick(tiny_model_dir, tmp_path):
    """A pod whose own supervisor is frozen (SIGSTOP) while its engine core is killed:
    nothing inside the pod can end it, and its frontend answers /health 503.
    `fleetserve up` takes it out of the endpoint file, kills it and starts another."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import httpx

    from fleetserve.http_common import free_port
    from fleetserve.benchmarks.procs import cmdline, descendants, wait_ready
    from test_pod import pod_children

    port, events = free_port(), tmp_path / "events.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "fleetserve", "up", "--model", str(tiny_model_dir), "--port",
                             str(port), "--min", "1", "--max", "1", "--serve-args", "--frontends 1 --max-num-seqs 4",
                             "--events", str(events), "--workdir", str(tmp_path / "fleet"), "--no-status"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    body = {"prompt": "hello", "max_tokens": 4}
    try:
        wait_ready(url, proc, 120, "fleetserve up")
        pod = next(p for p in descendants(proc.pid) if " serve " in cmdline(p))
        core = pod_children(pod)["core"][0]
        os.kill(pod, signal.SIGSTOP)
        os.kill(core, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while True:
            last = json.loads(events.read_text().splitlines()[-1])
            if last["sick"] >= 1 and last["ready"] == 1:
                break
            assert time.monotonic() < deadline, f"the sick pod was not replaced: {last}"
            time.sleep(0.5)
        assert pod not in descendants(proc.pid)
        deadline = time.monotonic() + 10  # the router follows the endpoint file within a second or two
        while httpx.post(url + "/v1/completions", json=body, timeout=30).status_code != 200:
            assert time.monotonic() < deadline, "the replacement pod does not serve through the router"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=90)[0].decode()
    assert proc.returncode == 0, out[-2000:]
    assert "is sick (/health answered 503" in out, out[-2000:]
