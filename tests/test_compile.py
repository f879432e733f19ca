import pytest
"""The compiled decode step (torch.compile, off by default) gives eager's tokens."""

from fleetserve.engine.llm import LLM
from fleetserve.engine.sampling_params import SamplingParams

pytestmark = pytest.mark.slow  # torch.compile takes seconds (make test-quick skips it)


def test_compiled_decode_matches_eager(tiny_model_dir, tmp_path, monkeypatch):
    # A compile cache of its own: inductor's on-disk cache is keyed by the CPU, not by the ISA torch
    # was told to use, so kernels cached by a run without ATEN_CPU_CAPABILITY=avx2 came back under it
    # and gave token 0 throughout (or crashed), as if the change under test had broken compile.
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    params = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9], [10] * 20]
    eager = LLM(tiny_model_dir, max_num_seqs=4, max_model_len=64).generate(prompts, params)
    compiled = LLM(tiny_model_dir, max_num_seqs=4, max_model_len=64, compile=True).generate(prompts, params)
    assert [o.token_ids for o in compiled] == [o.token_ids for o in eager]
