"""`fleetserve bench` end to end on a tiny random-weight checkpoint: the engine and the
Hugging Face baseline both run the reference workload's shape, and the reported
figures agree with each other. (Speed itself is for BENCHMARKS.md, not for tests.)"""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # starts processes or servers (make test-quick skips it)


def test_bench_reports_engine_baseline_and_decode_step(tiny_model_dir, tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, "-m", "fleetserve", "bench", "--model", str(tiny_model_dir),
                        "--num-prompts", "8", "--max-num-seqs", "4", "--input-len", "12", "--output-len", "6",
                        "--hf-batch-sizes", "1,4", "--hf-batch1-requests", "2", "--hf-max-requests", "8",
                        "--repeat", "1", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["workload"] == {"input_len": 12, "output_len": 6, "greedy": True, "ignore_eos": True}
    fs, hf, step = res["fleetserve"], res["hf"], res["decode_step"]
    assert fs["requests_per_s"] > 0 and fs["output_tokens_per_s"] == pytest.approx(fs["requests_per_s"] * 6)
    assert set(hf["by_batch_size"]) == {"1", "4"}
    assert hf["requests_per_s"] == max(b["requests_per_s"] for b in hf["by_batch_size"].values())
    assert res["speedup_vs_hf"] == pytest.approx(fs["requests_per_s"] / hf["requests_per_s"])
    assert step["batch"] == 4 and step["seconds"] > 0 and step["matmul_peak_gflops"] > 0
    assert res["dtype"] == "float32" and "threads" in res["machine"]
    assert "speedup" in r.stderr.splitlines()[-1]
