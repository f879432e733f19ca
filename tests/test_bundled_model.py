"""The bundled correction model: served by the main job's command, it corrects
real sentences; and the quality gate passes it against itself and fails a
deliberately degraded copy."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import torch
from safetensors.torch import load_file, save_file
from serving import running_fleet, running_server

from fleetserve.quality.evaluate import ModelCorrector, ServerCorrector, evaluate, load_eval_set

pytestmark = pytest.mark.slow  # starts processes or servers (make test-quick skips it)

BUNDLED = Path(__file__).resolve().parents[1] / "models" / "correct-6m"

# A small evaluation set in the JFLEG layout, written by hand (learner-style errors, two references).
SOURCES = [
    ("She go to school every days .", "She goes to school every day .", "She goes to school every day ."),
    ("He have two cat .", "He has two cats .", "He has two cats ."),
    ("I am agree with this idea .", "I agree with this idea .", "I agree with this idea ."),
    ("The childrens are playing in the garden .", "The children are playing in the garden .",
     "The children are playing in the garden ."),
    ("We was very happy yesterday .", "We were very happy yesterday .", "We were very happy yesterday ."),
    ("My brother work in a bank .", "My brother works in a bank .", "My brother works at a bank ."),
    ("This is a interesting book .", "This is an interesting book .", "This is an interesting book ."),
    ("They goes to the market on sunday .", "They go to the market on Sunday .", "They go to the market on Sunday ."),
    ("I have visit London last year .", "I visited London last year .", "I visited London last year ."),
    ("The weather are fine today .", "The weather is fine today .", "The weather is fine today ."),
    ("he is a good teacher .", "He is a good teacher .", "He is a good teacher ."),
    ("She dont like coffee .", "She does n't like coffee .", "She does not like coffee ."),
]


def write_set(path: Path) -> Path:
    path.mkdir()
    for k, name in enumerate(["mini.src", "mini.ref0", "mini.ref1"]):
        (path / name).write_text("\n".join(row[k] for row in SOURCES) + "\n")
    return path


def run_eval(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fleetserve", "eval", *args], capture_output=True, text=True,
                          timeout=600)


def test_main_job_corrects_the_readme_sentence(tmp_path):
    """`make run` is `fleetserve up` with the bundled model: the router answers for the pods."""
    with running_fleet(BUNDLED) as url:
        r = httpx.post(url + "/v1/correct", json={"text": "They was late and the childrens was hungry."}, timeout=60)
        assert r.status_code == 200
        assert r.json()["text"] == "They were late and the children were hungry."
        assert len(r.json()["edits"]) == 3  # the character edits that turn the input into it
        # The issue's own example comes out grammatical (in the past tense: "She goes" would be
        # the smaller edit, which this 6M-parameter model does not make).
        r = httpx.post(url + "/v1/correct", json={"text": "She go to school every days."}, timeout=60)
        assert r.json()["text"] == "She went to school every day."
        ok = httpx.post(url + "/v1/correct", json={"text": "She goes to school every day."}, timeout=60)
        assert ok.json() == {"text": "She goes to school every day.", "edits": []}
        # `fleetserve eval URL` scores the server the same as the directory run offline.
        mini = load_eval_set(write_set(tmp_path / "mini"))
        served = evaluate(ServerCorrector(url), mini)
    offline = evaluate(ModelCorrector(BUNDLED), mini)
    assert served.outputs == offline.outputs and served.gleu == offline.gleu


# What users send that the bundled model never saw in training, and what they get back. Before
# correction_text.py most of these came back as unrelated words ("José go to school" -> "Jos and
# noises go to school", "  I has a apple.  " -> "ultttt...", "a" -> "AAAAAAAA", "SHE GO TO SCHOOL
# EVERY DAYS." -> "SHE GO TO SCHOOO EVERY DA youngS.", "I love NASA." -> "I love NASASASA.").
ODD_INPUTS = [
    ("We was at the café yesterday.", "We were at the café yesterday."),
    ("She said “I has a apple” yesterday.", "She said “I have a apple” yesterday."),
    ("He don't like it — really.", "He doesn't like it — really."),
    ("I has\ta apple.", "I have\ta apple."),
    ("I has a apple.\nShe go home.", "I have a apple.\nShe went home."),
    ("  I has a apple.  ", "  I have a apple.  "),
    ("Visit https://example.com/a?b=1 for more informations.",
     "Visit https://example.com/a?b=1 for more informations."),
    ("我 is a student.", "我 is a student."),
    ("I has a apple 😀.", "I have a apple 😀."),
    ("!!!", "!!!"),
    ("a", "a"),
    ("SHE GO TO SCHOOL EVERY DAYS.", "SHE WENT TO SCHOOL EVERY DAY."),
    ("I love NASA.", "I love NASA."),
]


def test_odd_inputs_come_back_corrected_not_rewritten():
    with running_server(BUNDLED) as url:
        for text, expected in ODD_INPUTS:
            r = httpx.post(url + "/v1/correct", json={"text": text}, timeout=60)
            assert r.status_code == 200, r.text
            assert r.json()["text"] == expected, text
        # A paragraph longer than the model's context is corrected sentence by sentence.
        paragraph = " ".join(["She go to school every days."] * 40)
        r = httpx.post(url + "/v1/correct", json={"text": paragraph}, timeout=120)
        assert r.status_code == 200 and r.json()["text"] == " ".join(["She went to school every day."] * 40)
        r = httpx.post(url + "/v1/correct", json={"text": "She go. " * 65}, timeout=60)
        assert r.status_code == 400 and "more than 64 sentences or lines to correct" in r.json()["error"]["message"]
        r = httpx.post(url + "/v1/correct", json={"text": "a" * 100_001}, timeout=60)
        assert r.status_code == 400 and "100,001 characters, at most 100,000" in r.json()["error"]["message"]
        r = httpx.post(url + "/v1/correct", content=b'{"text": "a \\ud800 b"}',
                       headers={"Content-Type": "application/json"}, timeout=60)
        assert r.status_code == 400 and "lone UTF-16 surrogate" in r.json()["error"]["message"]
        r = httpx.post(url + "/v1/correct", content=b"", headers={"Content-Type": "application/json"}, timeout=60)
        assert r.status_code == 400 and "body is empty" in r.json()["error"]["message"]


def test_gate_passes_the_model_against_itself(tmp_path):
    mini = write_set(tmp_path / "mini")
    r = run_eval(str(BUNDLED), "--set", str(mini), "--baseline", str(BUNDLED),
                 "--max-gleu-drop", "0.5", "--min-agreement", "0.99")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "quality gate: PASSED" in r.stdout and "100.0% of sentences identical" in r.stdout


def test_gate_fails_a_model_with_a_layer_zeroed_and_shows_the_disagreements(tmp_path):
    mini = write_set(tmp_path / "mini")
    broken = tmp_path / "broken"
    shutil.copytree(BUNDLED, broken)
    weights = load_file(broken / "model.safetensors")
    for name in list(weights):
        if name.startswith("model.layers.0."):
            weights[name] = torch.zeros_like(weights[name])
    save_file(weights, str(broken / "model.safetensors"), metadata={"format": "pt"})
    r = run_eval(str(broken), "--set", str(mini), "--baseline", str(BUNDLED),
                 "--max-gleu-drop", "0.5", "--min-agreement", "0.9")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "quality gate: FAILED" in r.stdout
    assert "source:" in r.stdout and "candidate:" in r.stdout and ("[-" in r.stdout or "{+" in r.stdout)


def test_bundled_model_beats_copying_the_source_on_the_mini_set(tmp_path):
    mini = write_set(tmp_path / "mini")
    r = run_eval(str(BUNDLED), "--set", str(mini), "--json", str(tmp_path / "r.json"))
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["candidate"]["gleu"] > report["copy_source"]["gleu"]
