"""`fleetserve bench-pod` end to end on the tiny model (real pods, real load, real
py-spy sampling), and the profile summariser on py-spy's collapsed-stack format."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fleetserve.benchmarks.cpu_profile import format_summary, summarize
from fleetserve.benchmarks.pod import _summarize_rounds

pytestmark = pytest.mark.slow  # starts processes or servers (make test-quick skips it)

RAW = """\
process 9:"python -m fleetserve serve";process 10:"spawn_main";<module> (<string>:1);run_core_process (fleetserve/engine/core_process.py:147);CoreLoop.run (fleetserve/engine/core_process.py:105);Linear.forward (torch/nn/modules/linear.py:134) 60
process 9:"python -m fleetserve serve";process 10:"spawn_main";<module> (<string>:1);run_core_process (fleetserve/engine/core_process.py:147);CoreLoop.run (fleetserve/engine/core_process.py:105);Socket.send (zmq/sugar/socket.py:713) 20
process 9:"python -m fleetserve serve";process 11:"spawn_main";<module> (<string>:1);run_frontend (fleetserve/server/frontend.py:59);Runner.run (asyncio/runners.py:118) 12
process 9:"python -m fleetserve serve";process 11:"spawn_main";<module> (<string>:1);Handle._run (asyncio/events.py:84) 3
process 9:"python -m fleetserve serve";main (fleetserve/cli.py:240) 5
"""


def test_profile_summary_splits_samples_by_role_and_function():
    s = summarize(RAW)
    assert s["samples"] == 100
    assert {k: v["share"] for k, v in s["roles"].items()} == {"engine core": 0.8, "frontend": 0.15, "main process": 0.05}
    core = s["roles"]["engine core"]
    assert core["self"][0] == {"function": "Linear.forward (linear.py:134)", "share_of_role": 0.75}
    # a frontend stack cut short is still the frontend's; frames under every sample of a role are left out
    assert all("run_core_process" not in e["function"] for e in core["inclusive"])
    assert "engine core: 80.0% of samples" in format_summary(s)


def test_bench_pod_measures_offline_and_http_and_profiles(tiny_model_dir, tmp_path):
    out = tmp_path / "bench.json"
    prof = tmp_path / "prof"
    r = subprocess.run([sys.executable, "-m", "fleetserve", "bench-pod", "--model", str(tiny_model_dir),
                        "--frontends", "1", "--async-scheduling", "off", "--max-num-seqs", "8", "--seconds", "3",
                        "--warmup", "2", "--rounds", "2", "--profile", str(prof), "--json", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["offline_requests_per_s"] > 0
    assert len(result["rounds"]) == 2
    for rnd in result["rounds"]:  # each round's ratio is against its own offline figure
        r = rnd["http"]["frontends=1"]
        assert r["ratio_to_offline"] == round(r["requests_per_s"] / rnd["offline_requests_per_s"], 3)
    http = result["http"]["frontends=1"]
    assert http["requests_per_s"] > 0 and http["errors"] == {}
    assert http["ratio_min"] <= http["ratio_to_offline"] <= http["ratio_max"]
    assert http["tokens_per_step"] > 0 and http["step_ms"] > 0
    assert {"engine core", "frontend"} <= set(http["cpu_profile"])
    assert "engine core" in (prof / "frontends1.txt").read_text()


def test_rounds_summary_takes_median_ratio_and_sums_errors():
    def run(rps, ratio, errors=None):
        return {"requests_per_s": rps, "ratio_to_offline": ratio, "step_ms": rps / 10, "errors": errors or {}}
    rounds = [{"offline_requests_per_s": 50, "http": {"frontends=1": run(40, 0.8)}},
              {"offline_requests_per_s": 40, "http": {"frontends=1": run(38, 0.95, {"timeout": 1})}},
              {"offline_requests_per_s": 45, "http": {"frontends=1": run(41, 0.91, {"timeout": 2})}}]
    s = _summarize_rounds(rounds)["frontends=1"]
    assert (s["ratio_to_offline"], s["ratio_min"], s["ratio_max"]) == (0.91, 0.8, 0.95)
    assert s["requests_per_s"] == 40 and s["step_ms"] == 4.0
    assert s["errors"] == {"timeout": 3}
