"""Weights from object storage: a real SeaweedFS (S3 API and its filer's plain HTTP) started by
fleetserve/benchmarks/object_store.py, the bundled model uploaded to it; the block cache on
local disk; start-up failures that name the object at fault."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import torch

from fleetserve.benchmarks.object_store import seaweedfs
from fleetserve.model.checkpoint import load_weights
from fleetserve.model.config import ModelConfig, ModelLoadError
from fleetserve.model.loader import load_model
from fleetserve.storage.block_cache import BlockCache
from fleetserve.storage.blocks import BlockFetcher, Progress
from fleetserve.storage.model_files import fetch_model_files
from fleetserve.storage.sources import HttpSource, LocalSource, S3Source, StorageError

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "models" / "correct-6m"
pytestmark = pytest.mark.slow  # a SeaweedFS server, pods as processes


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    broken = tmp_path_factory.mktemp("broken")
    with seaweedfs() as s:
        s.upload(BUNDLED, "models", "correct-6m")
        for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"):
            (broken / name).write_bytes((BUNDLED / name).read_bytes())
        s.upload(broken, "models", "no-weights")  # the config and tokenizer, no model.safetensors
        weights = (BUNDLED / "model.safetensors").read_bytes()
        (broken / "model.safetensors").write_bytes(weights[: len(weights) // 2])
        s.upload(broken, "models", "truncated")  # the header promises more than the object holds
        old = dict(os.environ)
        os.environ.update(s.env())
        try:
            yield s
        finally:
            os.environ.clear()
            os.environ.update(old)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items()}


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_the_same_weights_from_s3_from_http_and_from_local_files(store, tmp_path):
    local = load_model(BUNDLED)
    assert_same_weights(load_model(BUNDLED, weights_from=S3Source("s3://models/correct-6m")), local)
    assert_same_weights(load_model(BUNDLED, weights_from=HttpSource(store.http_url("models", "correct-6m"))), local)


def test_small_files_come_first_and_name_what_is_missing(store, tmp_path):
    local = fetch_model_files(S3Source("s3://models/correct-6m"), tmp_path)
    assert (local / "config.json").read_bytes() == (BUNDLED / "config.json").read_bytes()
    assert (local / "tokenizer.json").is_file() and not (local / "model.safetensors").exists()
    http = fetch_model_files(HttpSource(store.http_url("models", "correct-6m")), tmp_path)  # no listing: known names
    assert (http / "tokenizer.json").read_bytes() == (BUNDLED / "tokenizer.json").read_bytes()
    with pytest.raises(StorageError, match="s3://models/nothing-here: no files there"):
        fetch_model_files(S3Source("s3://models/nothing-here"), tmp_path)
    with pytest.raises(StorageError, match=r"/buckets/models/nothing-here/config.json: not found"):
        fetch_model_files(HttpSource(store.http_url("models", "nothing-here")), tmp_path)


def test_a_second_load_reads_the_cache_and_a_damaged_block_is_fetched_again(store, tmp_path):
    cfg = ModelConfig.from_dir(BUNDLED)
    reference = load_model(BUNDLED)
    source = S3Source("s3://models/correct-6m")
    size = (BUNDLED / "model.safetensors").stat().st_size

    def load(cache: BlockCache) -> tuple[torch.nn.Module, dict[str, int]]:
        model = load_model(BUNDLED, cfg, load_format="dummy")  # then overwritten, every tensor
        return model, load_weights(model, BUNDLED, source, cache)

    model, first = load(BlockCache(tmp_path / "blocks", 1 << 30))
    assert first["fetched_bytes"] == size and first["cached_bytes"] == 0
    assert_same_weights(model, reference)
    model, second = load(BlockCache(tmp_path / "blocks", 1 << 30))
    assert second["fetched_bytes"] == 0 and second["cached_bytes"] == size
    assert_same_weights(model, reference)

    victim = sorted((tmp_path / "blocks").glob("??/*"))[0]
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped bit of a byte, as a bad disk would
    victim.write_bytes(bytes(raw))
    cache = BlockCache(tmp_path / "blocks", 1 << 30)
    model, third = load(cache)
    assert cache.corrupt == 1 and 0 < third["fetched_bytes"] <= 4 << 20
    assert_same_weights(model, reference)


@pytest.mark.parametrize("case, env, needle", [
    ("no-weights", {}, "s3://models/no-weights/model.safetensors"),
    ("truncated", {}, "s3://models/truncated/model.safetensors: truncated: tensor"),
    ("correct-6m", {"AWS_SECRET_ACCESS_KEY": "wrong"}, "s3://models/correct-6m: access denied"),
    ("correct-6m", {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}, "cannot reach the endpoint http://127.0.0.1:9"),
], ids=["missing file", "truncated tensor", "wrong credentials", "unreachable endpoint"])
def test_serve_fails_at_start_up_naming_the_object(store, tmp_path, case, env, needle):
    r = subprocess.run([sys.executable, "-m", "fleetserve", "serve", f"s3://models/{case}", "--frontends", "0",
                        "--cache-dir", str(tmp_path)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, **env})
    assert r.returncode == 2, r.stderr[-2000:]
    assert needle in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]


def test_a_pod_serving_from_s3_answers_as_one_serving_local_files(store, tmp_path):
    """Both pod layouts: the frontends read the tokenizer the pod fetched; the core streams the weights."""
    from fleetserve.benchmarks.procs import pod

    sentences = ["She go to school every days.", "He have two cat and one dogs.", "I am agree with you."]

    def corrections(model: str, frontends: str) -> list[str]:
        with pod(model, ["--frontends", frontends, "--cache-dir", str(tmp_path)]) as (url, _):
            out = []
            for s in sentences:
                req = urllib.request.Request(f"{url}/v1/correct", json.dumps({"text": s}).encode(),
                                             {"content-type": "application/json"})
                with urllib.request.urlopen(req, timeout=60) as r:
                    out.append(json.loads(r.read())["text"])
            return out

    local = corrections(str(BUNDLED), "0")
    assert corrections("s3://models/correct-6m", "0") == local
    assert corrections("s3://models/correct-6m", "1") == local


# --- without a server ----------------------------------------------------------------------------
def test_block_cache_stays_under_its_bound_dropping_the_least_recently_used(tmp_path):
    cache = BlockCache(tmp_path, max_bytes=10_000)
    for i in range(6):
        cache.put(f"{i:064x}", bytes([i]) * 3000)
        os.utime(tmp_path / f"{i:064x}"[:2] / f"{i:064x}"[2:], (i, i))  # i-th written, i-th oldest
    assert sum(p.stat().st_size for p in tmp_path.glob("??/*")) <= 10_000
    assert cache.get(f"{5:064x}", 3000) == bytes([5]) * 3000  # the newest kept
    assert cache.get(f"{0:064x}", 3000) is None  # the oldest gone


def test_blocks_arrive_whole_and_aligned_from_a_local_source(tmp_path):
    data = os.urandom(10_000)
    (tmp_path / "f").write_bytes(data)
    source = LocalSource(tmp_path)
    fetcher = BlockFetcher(source, block_size=4096, inflight=3)
    got: dict[int, bytes] = {}
    fetcher.fetch_all([("f", source.stat("f"))], lambda name, off, b: got.__setitem__(off, bytes(b)))
    assert sorted(got) == [0, 4096, 8192] and b"".join(got[k] for k in sorted(got)) == data
    with pytest.raises(StorageError, match="truncated"):
        source.read("f", 9000, 11_000)


def test_a_checkpoint_whose_header_is_not_safetensors_is_named(tmp_path):
    for name in ("config.json", "tokenizer.json"):
        (tmp_path / name).write_bytes((BUNDLED / name).read_bytes())
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    with pytest.raises(ModelLoadError, match="model.safetensors: not a safetensors file"):
        load_model(tmp_path)


def test_progress_prints_on_long_loads_only(capsys):
    t = [0.0]
    p = Progress("fetching", clock=lambda: t[0])
    p(1 << 20, 8 << 20)
    assert capsys.readouterr().err == ""  # under a second: quiet
    t[0] = 2.0
    p(4 << 20, 8 << 20)
    t[0] = 3.0
    p.finish(8 << 20)
    err = capsys.readouterr().err
    assert "fetching: 4 of 8 MiB (2 MiB/s)" in err and "fetching: 8 MiB in 3.0 s" in err


@pytest.mark.parametrize("blocks", [True, False], ids=["in-blocks", "mapped"])
def test_a_checkpoint_in_another_dtype_is_converted_as_its_tensors_complete(tmp_path, blocks):
    """bf16 on disk, float32 in the model: in blocks (through a block cache; small blocks here, so
    tensors span several) each tensor is gathered and converted once whole; mapped (a local file,
    no cache) each is converted by its one copy; the same values as converting the file's tensors."""
    from safetensors.torch import load_file, save_file

    from fleetserve.model.checkpoint import Targets
    from fleetserve.training.init_model import init_model

    src = init_model(tmp_path / "m", "tiny-qwen2", seed=0)
    stored = {k: v.bfloat16() for k, v in load_file(src / "model.safetensors").items()}
    save_file(stored, str(src / "model.safetensors"))
    cfg = ModelConfig.from_dir(src)
    model = load_model(src, cfg, load_format="dummy")
    cache = BlockCache(tmp_path / "blocks", 1 << 30) if blocks else None
    loaded = load_weights(model, src, cache=cache, block_size=1000, inflight=3)
    # mapped, only the headers' blocks are read as blocks
    assert (loaded["fetched_bytes"] == loaded["bytes"]) == blocks
    targets = Targets(model)
    for name, value in stored.items():
        target = targets(name, "test")
        if target is not None:
            assert torch.equal(target, value.float()), name


def test_the_offline_llm_reads_a_model_from_s3(store, tmp_path):
    from fleetserve.engine.llm import LLM
    from fleetserve.engine.sampling_params import SamplingParams

    params = SamplingParams(max_tokens=12, temperature=0.0)
    remote = LLM("s3://models/correct-6m", cache_dir=str(tmp_path), max_num_seqs=4)
    local = LLM(str(BUNDLED), max_num_seqs=4)
    prompts = ["She go to school every days.", "He have two cat."]
    assert [o.token_ids for o in remote.generate(prompts, params)] == \
        [o.token_ids for o in local.generate(prompts, params)]


def test_up_checks_a_remote_model_before_starting_anything(store, tmp_path):
    from fleetserve.http_common import free_port

    r = subprocess.run([sys.executable, "-m", "fleetserve", "up", "--model", "s3://models/nothing-here", "--port",
                        str(free_port()), "--workdir", str(tmp_path / "fleet"), "--no-status"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "s3://models/nothing-here: no files there" in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "fleet" / "router.log").exists()  # nothing was started
