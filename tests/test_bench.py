"""`fleetserve bench` end to end on a tiny random-weight checkpoint: the engine, the
Hugging Face baseline and CTranslate2 (converted from the same checkpoint) all run the
reference workload's shape, and the reported figures agree with each other. (Speed
itself is for BENCHMARKS.md, not for tests.)"""

import json
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # starts processes or servers (make test-quick skips it)


def test_bench_reports_engine_baselines_and_decode_step(tiny_model_dir, tmp_path):
    model = shutil.copytree(tiny_model_dir, tmp_path / "model")  # the conversions are written next to it
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, "-m", "fleetserve", "bench", "--model", str(model), "--ct2-batch-sizes", "4",
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
    assert "speedup" in r.stderr.splitlines()[-1] and "CTranslate2 int8" in r.stderr.splitlines()[-1]
    for t in ("float32", "int8"):
        ct2 = res["ct2"][t]
        assert set(ct2["by_batch_size"]) == {"4"} and ct2["by_batch_size"]["4"]["requests"] == 8
        assert res["ratio_to_ct2"][t] == pytest.approx(fs["requests_per_s"] / ct2["requests_per_s"])
        assert (model / f"ctranslate2-{t}" / "model.bin").is_file()


def test_bench_refuses_a_ctranslate2_baseline_without_weights(tiny_model_dir):
    r = subprocess.run([sys.executable, "-m", "fleetserve", "bench", "--model", str(tiny_model_dir), "--load-format",
                        "dummy", "--baseline", "ct2"], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "cannot run with --load-format dummy" in r.stderr
    r = subprocess.run([sys.executable, "-m", "fleetserve", "bench", "--model", str(tiny_model_dir), "--baseline",
                        "hf,tgi"], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "unknown tgi" in r.stderr


def test_the_ctranslate2_baseline_runs_the_same_model(tiny_model_dir, tmp_path):
    """Its float32 conversion generates what our engine generates, token for token: the ratio
    compares two implementations of one model, not two models."""
    import ctranslate2

    from fleetserve.benchmarks.ctranslate2_baseline import converted
    from fleetserve.benchmarks.offline import reference_prompts
    from fleetserve.engine.llm import LLM
    from fleetserve.engine.sampling_params import SamplingParams

    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    llm = LLM(str(model), max_num_seqs=8)
    prompts = reference_prompts(16, 20, min(llm.engine.model_config.vocab_size, llm.tokenizer.vocab_size))
    greedy = SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True)
    ours = [list(o.token_ids) for o in llm.generate(prompts, greedy)]
    path = converted(model, "float32")
    vocab = json.loads((path / "vocabulary.json").read_text())
    res = ctranslate2.Generator(str(path), compute_type="float32").generate_batch(
        [[vocab[i] for i in p] for p in prompts], max_length=10, min_length=10, sampling_topk=1,
        include_prompt_in_result=False)
    assert [r.sequences_ids[0] for r in res] == ours
