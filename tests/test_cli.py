"""`fleetserve serve` on a bad model directory exits non-zero with a message, never hangs."""

import subprocess
import sys


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fleetserve", *args], capture_output=True, text=True, timeout=60)


def test_serve_missing_directory_fails_fast(tmp_path):
    r = run("serve", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and "nowhere does not exist" in r.stderr


def test_serve_without_weights_names_the_fix(tmp_path):
    assert run("init-model", "--preset", "tiny-llama", "--no-weights", "--out", str(tmp_path)).returncode == 0
    r = run("serve", str(tmp_path))
    assert r.returncode == 2 and "no model.safetensors" in r.stderr and "--load-format dummy" in r.stderr


def test_max_model_len_beyond_the_model_is_refused(tmp_path):
    run("init-model", "--preset", "tiny-llama", "--no-weights", "--out", str(tmp_path))
    r = run("serve", str(tmp_path), "--load-format", "dummy", "--max-model-len", "100000")
    assert r.returncode == 2 and "max_position_embeddings" in r.stderr
