"""`fleetserve bench-start`'s weight loads: every loader it compares fills the same weights
(the object-store cases are covered by tests/test_object_storage.py against SeaweedFS)."""

from __future__ import annotations

import pytest

from fleetserve.benchmarks.start import LOADERS, MOVED, load_once, loaders_for

pytestmark = pytest.mark.slow  # imports runai's and fastsafetensors' native libraries


def test_every_local_loader_fills_the_same_weights(tiny_model_dir, tmp_path):
    local = [n for n in LOADERS if "s3" not in n] + [MOVED]
    runs = {n: load_once(n, str(tiny_model_dir), "", "float32", str(tmp_path / "cache")) for n in local}
    assert len({r["check"] for r in runs.values()}) == 1, runs
    assert all(r["seconds"] > 0 and r["bytes"] == (tiny_model_dir / "model.safetensors").stat().st_size
               for r in runs.values())


def test_a_gpu_run_adds_the_moved_baseline_and_local_only_drops_the_object_store():
    assert loaders_for("cpu", False) == list(LOADERS)
    assert loaders_for("cuda", True) == [n for n in LOADERS if "s3" not in n] + [MOVED]
