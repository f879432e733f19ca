"""`--device`: where the engine runs. Names are checked at start-up with a clear
message; the test that compares a GPU's tokens with the CPU's runs only on a
machine with CUDA (it is skipped on the project's CPU machines)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from fleetserve.engine.llm import LLM
from fleetserve.engine.sampling_params import SamplingParams
from fleetserve.model.config import ModelConfig
from fleetserve.model.device import resolve_device
from fleetserve.model.loader import bfloat16_hint, resolve_dtype

pytestmark = pytest.mark.slow  # loads models on each device (make test-quick skips it)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
without_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")


def test_device_names_are_checked_with_a_clear_message():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="only cpu and cuda"):
        resolve_device("meta")
    with pytest.raises(ValueError, match="not a device name"):
        resolve_device("gpu0")


def test_auto_dtype_is_float32_on_cpu_and_bfloat16_on_a_gpu(tiny_model_dir):
    cfg = ModelConfig.from_dir(tiny_model_dir)
    assert resolve_dtype("auto", cfg, "cpu") == torch.float32
    assert resolve_dtype("auto", cfg, "cuda") == torch.bfloat16
    assert resolve_dtype("float16", cfg, "cuda") == torch.float16


def test_a_pod_left_on_float32_on_an_amx_cpu_is_told_of_bfloat16(monkeypatch):
    """The hint reads torch's own AMX check; both answers are SIMULATED here, whatever this CPU has."""
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert "--dtype bfloat16" in bfloat16_hint("auto", "cpu")
    assert bfloat16_hint("float32", "cpu") is None and bfloat16_hint("bfloat16", "cpu") is None
    assert bfloat16_hint("auto", "cuda") is None
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # oneDNN told to stay below AMX
    assert bfloat16_hint("auto", "cpu") is None
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    assert bfloat16_hint("auto", "cpu") is not None
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert bfloat16_hint("auto", "cpu") is None


@without_cuda
def test_a_gpu_this_machine_lacks_is_refused_at_start_up(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="sees no CUDA device"):
        LLM(tiny_model_dir, max_num_seqs=2, max_model_len=32, device="cuda")
    (tmp_path / "one.src").write_text("She go home .\n")
    (tmp_path / "one.ref0").write_text("She goes home .\n")
    for command in (["bench", "--model", str(tiny_model_dir), "--num-prompts", "2", "--baseline", "none"],
                    ["eval", str(tiny_model_dir), "--set", str(tmp_path)],
                    ["bench-start", "--parts", "weights", "--out", str(tmp_path / "bench-start")]):
        r = subprocess.run([sys.executable, "-m", "fleetserve", *command, "--device", "cuda:1"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode != 0 and "sees no CUDA device" in r.stderr and "Traceback" not in r.stderr, r.stderr


@needs_cuda
def test_gpu_tokens_equal_the_cpus(tiny_model_dir):
    """Greedy and seeded sampling on the GPU give the CPU's tokens (float32 on both)."""
    prompts = [[5, 6, 7], [9] * 12, [3, 1, 4, 1, 5]]
    params = [SamplingParams(max_tokens=20, temperature=0, ignore_eos=True),
              SamplingParams(max_tokens=20, temperature=0.8, top_p=0.9, seed=3, ignore_eos=True),
              SamplingParams(max_tokens=20, temperature=0, ignore_eos=True)]

    def tokens(device: str) -> list[list[int]]:
        llm = LLM(tiny_model_dir, max_num_seqs=2, max_model_len=64, dtype="float32", device=device)
        return [o.token_ids for o in llm.generate(prompts, params)]

    assert tokens("cuda") == tokens("cpu")


@needs_cuda
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_weights_streamed_to_the_gpu_equal_the_cpus(tiny_model_dir, tmp_path, dtype):
    """A model served on a GPU is filled on the device as its tensors arrive (pinned staging
    buffers, copies on a stream of the load's own): from a mapped local file and from blocks
    through a block cache it holds exactly the weights of a CPU load moved there (bfloat16:
    converted from the float32 file on the way)."""
    from fleetserve.model.loader import load_model
    from fleetserve.storage.block_cache import BlockCache
    from fleetserve.storage.sources import LocalSource

    reference = {k: v.to("cuda") for k, v in load_model(tiny_model_dir, dtype=dtype).state_dict().items()}
    for cache in (None, BlockCache(tmp_path / "blocks", 1 << 30)):
        model = load_model(tiny_model_dir, dtype=dtype, device="cuda", weights_from=LocalSource(tiny_model_dir),
                           cache=cache)
        state = model.state_dict()
        assert state.keys() == reference.keys()
        for k, v in state.items():
            assert v.device.type == "cuda" and torch.equal(v, reference[k]), k
