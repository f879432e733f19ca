"""`fleetserve bench-correct` end to end, short: the bundled model offline and the
multi-process pod over HTTP, speculation off and on, on a quiet host and beside a busy
loop, outputs compared, the pod's CPU per request and resident memory split by process role.
(Speed is for BENCHMARKS.md.)"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # starts pods and load tests (make test-quick skips it)


def test_bench_correct_reports_offline_and_slo_figures_per_setting(tmp_path):
    out = tmp_path / "correct.json"
    r = subprocess.run([sys.executable, "-m", "fleetserve", "bench-correct", "--sentences", "24",
                        "--max-num-seqs", "8", "--frontends", "1", "--busy", "0,1", "--start-rate", "2", "--growth", "4",
                        "--step-seconds", "2", "--slo", "p99_e2el<5s", "--json", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["sentences"] == 24
    off, on = result["offline"]["off"], result["offline"]["input"]
    assert on["identical_to_first"] is True
    assert off["proposed"] == 0 and on["proposed"] > 0 and 0 < on["acceptance"] <= 1
    assert on["tokens_per_step"] > off["tokens_per_step"]
    for name in ("off", "input", "off,busy=1", "input,busy=1"):
        http = result["http"][f"frontends=1,speculative={name}"]
        assert http["max_rate"] > 0 and http["steps"][0]["met"]
        assert http["busy_loops"] == (1 if "busy" in name else 0)
        cpu = http["cpu_ms_per_request"]
        assert set(cpu) == {"engine core", "frontends", "supervisor"}
        assert cpu["engine core"] > 0 and cpu["frontends"] > 0
        memory = http["resident_mib"]
        assert set(memory["before"]) == set(memory["after"]) == set(cpu)
        assert memory["after"]["engine core"] > memory["after"]["frontends"] > 10  # the model and torch, an HTTP process


def test_the_offline_part_runs_the_engine_options_the_pods_get(tmp_path):
    """`--serve-args` reaches the offline engine too: one proposed token a step at most for the
    one request in flight means at most 2 tokens a step (about 3 with the default 8)."""
    out = tmp_path / "offline.json"
    r = subprocess.run([sys.executable, "-m", "fleetserve", "bench-correct", "--sentences", "6", "--max-num-seqs", "1",
                        "--frontends", "", "--speculative", "input",
                        "--serve-args", "--speculative-max-tokens 1 --frontends 1 --max-num-seqs 9", "--json", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["max_num_seqs"] == 1 and result["serve_args"][-1] == "9"
    assert 1 < result["offline"]["input"]["tokens_per_step"] <= 2
