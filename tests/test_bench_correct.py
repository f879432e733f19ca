"""`fleetserve bench-correct` end to end, short: the bundled model offline and one pod
layout over HTTP, speculation off and on, outputs compared. (Speed is for BENCHMARKS.md.)"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # starts pods and load tests (make test-quick skips it)


def test_bench_correct_reports_offline_and_slo_figures_per_setting(tmp_path):
    out = tmp_path / "correct.json"
    r = subprocess.run([sys.executable, "-m", "fleetserve", "bench-correct", "--sentences", "24",
                        "--max-num-seqs", "8", "--frontends", "0", "--start-rate", "2", "--growth", "4",
                        "--step-seconds", "2", "--slo", "p99_e2el<5s", "--json", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["sentences"] == 24
    off, on = result["offline"]["off"], result["offline"]["input"]
    assert on["identical_to_first"] is True
    assert off["proposed"] == 0 and on["proposed"] > 0 and 0 < on["acceptance"] <= 1
    assert on["tokens_per_step"] > off["tokens_per_step"]
    for mode in ("off", "input"):
        http = result["http"][f"frontends=0,speculative={mode}"]
        assert http["max_rate"] > 0 and http["steps"][0]["met"]
