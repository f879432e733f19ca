"""Commands that cannot start exit non-zero with one clear line, never hang: a bad
model directory, a port already in use (before any model loads)."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest

BUNDLED = str(Path(__file__).resolve().parents[1] / "models" / "correct-6m")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fleetserve", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.slow
def test_serve_missing_directory_fails_fast(tmp_path):
    r = run("serve", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and "nowhere does not exist" in r.stderr


@pytest.mark.slow
def test_serve_without_weights_names_the_fix(tmp_path):
    assert run("init-model", "--preset", "tiny-llama", "--no-weights", "--out", str(tmp_path)).returncode == 0
    r = run("serve", str(tmp_path))
    assert r.returncode == 2 and "no model.safetensors" in r.stderr and "--load-format dummy" in r.stderr


@pytest.mark.slow
def test_max_model_len_beyond_the_model_is_refused(tmp_path):
    run("init-model", "--preset", "tiny-llama", "--no-weights", "--out", str(tmp_path))
    r = run("serve", str(tmp_path), "--load-format", "dummy", "--max-model-len", "100000")
    assert r.returncode == 2 and "max_position_embeddings" in r.stderr


@pytest.mark.parametrize("command", [["serve", BUNDLED, "--frontends", "0"], ["serve", BUNDLED, "--frontends", "1"],
                                     ["router", "--endpoints", "http://127.0.0.1:9"], ["up"]],
                         ids=["serve one process", "serve core + frontend", "router", "up"])
@pytest.mark.slow
def test_a_port_in_use_fails_at_once_in_one_line(command):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = run(*command, "--port", str(port))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "already in use" in lines[0], r.stderr
    assert "loaded" not in r.stdout + r.stderr  # failed before the model was loaded


def test_every_option_of_every_command_has_help_text():
    import argparse

    from fleetserve.cli import COMMANDS, build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(COMMANDS)
    missing = [f"{name} {a.option_strings or a.dest}" for name, p in sub.choices.items() for a in p._actions
               if not isinstance(a, argparse._HelpAction) and not a.help]
    assert not missing, missing
