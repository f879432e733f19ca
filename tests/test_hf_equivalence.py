"""Greedy output must equal Hugging Face transformers token for token."""

from __future__ import annotations

import pytest
import torch

from fleetserve.engine.config import EngineConfig
from fleetserve.engine.engine_core import EngineCore
from fleetserve.engine.llm import LLM
from fleetserve.engine.sampling_params import SamplingParams
from tests.conftest import make_hf_checkpoint

MAX_NEW = 12


def hf_greedy(model, prompt: list[int], n: int = MAX_NEW) -> list[int]:
    out = model.generate(torch.tensor([prompt]), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                         pad_token_id=0, eos_token_id=None)
    return out[0, len(prompt):].tolist()


def prompts(seed: int, lengths) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 512, (n,), generator=g).tolist() for n in lengths]


def test_single_request_matches_transformers(hf_checkpoint):
    path, hf = hf_checkpoint
    llm = LLM(path, max_num_seqs=4, max_model_len=64)
    [prompt] = prompts(0, [9])
    [out] = llm.generate([prompt], SamplingParams(max_tokens=MAX_NEW, temperature=0, ignore_eos=True))
    expected = hf_greedy(hf, prompt)
    assert len(set(expected)) > 3, "degenerate reference: the comparison would prove little"
    assert out.token_ids == expected


@pytest.mark.parametrize("loop", [{"speculative": "off"}, {"async_scheduling": True}, {"speculative": "ngram"},
                                  {"speculative": "input"}],
                         ids=["sync", "async-scheduling", "speculative-ngram", "speculative-input"])
def test_staggered_batch_matches_transformers(hf_checkpoint, loop):
    """Prompts of different lengths join while others decode, on fewer slots than
    requests, so continuous batching, waiting and slot reuse are all exercised;
    with the plain, the overlapped and the speculative step loop."""
    path, hf = hf_checkpoint
    engine = EngineCore(path, EngineConfig(max_num_seqs=3, max_model_len=64, **loop))
    batch = prompts(1, [5, 17, 1, 11, 23, 3, 14])
    arrivals = {0: [0, 1], 2: [2], 3: [3, 4], 7: [5, 6]}  # step -> prompts arriving then
    got: dict[str, list[int]] = {}
    step = 0
    while step <= max(arrivals) or engine.has_unfinished():
        for i in arrivals.get(step, []):
            engine.add_request(str(i), batch[i], SamplingParams(max_tokens=MAX_NEW - i, temperature=0, ignore_eos=True))
        for out in engine.step():
            got.setdefault(out.request_id, []).extend(out.new_token_ids)
        step += 1
    assert engine.scheduler.num_unfinished == 0 and len(engine.scheduler._free) == 3
    for i, prompt in enumerate(batch):
        assert got[str(i)] == hf_greedy(hf, prompt, MAX_NEW - i), f"prompt {i} (length {len(prompt)})"
    if loop.get("speculative") == "ngram":  # random models repeat tokens: proposals were made and checked
        assert engine.stats.draft_tokens > 0


def test_sharded_checkpoint_matches_transformers(tmp_path):
    path, hf = make_hf_checkpoint(tmp_path, "qwen2", max_shard_size="100KB")
    assert (path / "model.safetensors.index.json").is_file()
    llm = LLM(path, max_num_seqs=2, max_model_len=64)
    batch = prompts(2, [6, 13])
    outs = llm.generate(batch, SamplingParams(max_tokens=MAX_NEW, temperature=0, ignore_eos=True))
    assert [o.token_ids for o in outs] == [hf_greedy(hf, p) for p in batch]


def assert_equal_up_to_rounding(got: torch.Tensor, want: torch.Tensor) -> None:
    """Equal up to float32 rounding: the same computation run over a different number of
    rows may sum in another order (the AVX2 products of an AMD EPYC block by row count and
    differed by 1.6e-5 on logits of magnitude 12, where AVX-512 ones agreed to 1e-5), so the
    tolerance is relative to the tensor's largest value; a wrong position, mask or cache row
    moves values by a sizeable fraction of it."""
    scale = max(1.0, want.abs().max().item())
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * scale)


def _runners(path, n: int):
    from fleetserve.engine.model_runner import ModelRunner
    from fleetserve.model.config import ModelConfig
    from fleetserve.model.loader import load_model

    cfg = ModelConfig.from_dir(path)
    return [ModelRunner(load_model(path, cfg, "auto", "float32", 0), 6, 64) for _ in range(n)]


def _requests(token_lists, first_slot: int):
    from fleetserve.engine.request import Request

    reqs = [Request(str(first_slot + i), ids, SamplingParams()) for i, ids in enumerate(token_lists)]
    for i, r in enumerate(reqs):
        r.slot = first_slot + i
    return reqs


def test_one_pass_step_equals_separate_decode_and_prefill(hf_checkpoint):
    """The engine runs decoding slots and new prompts through the model in one pass
    (`Transformer.step`); its logits and KV cache must equal two separate passes."""
    path, _ = hf_checkpoint
    runners = _runners(path, 2)
    history = _requests(prompts(2, [13] * 4), 0)  # 4 slots already hold 13 tokens each
    for runner in runners:
        runner.run(runner.prepare([], history))
    for i, r in enumerate(history):
        r.output_ids.append(7 + i)
    new = _requests(prompts(3, [11, 7]), 4)
    one, two = runners
    both = one.run(one.prepare(history, new))
    assert_equal_up_to_rounding(both[:4], two.run(two.prepare(history, [])))
    assert_equal_up_to_rounding(both[4:], two.run(two.prepare([], new)))
    for a, b in zip(one.model.layers, two.model.layers):
        assert_equal_up_to_rounding(a.self_attn.k_cache, b.self_attn.k_cache)
        assert_equal_up_to_rounding(a.self_attn.v_cache, b.self_attn.v_cache)


def test_several_query_tokens_of_a_slot_equal_one_token_steps(hf_checkpoint):
    """A step may give a running sequence several query tokens past its prompt (draft
    tokens to verify): their logits and K/V equal those of one-token steps run in turn,
    with other slots decoding in the same pass."""
    from fleetserve.engine.model_runner import Sequence

    path, _ = hf_checkpoint
    one, two = _runners(path, 2)
    history = _requests(prompts(5, [13, 9]), 0)
    for runner in (one, two):
        runner.run(runner.prepare([], history))
    drafts = [5, 17, 2, 30]
    bucket = [Sequence(0, [0], 63, 0), Sequence(1, [3], 9)]  # slot 1 decodes; slot 0 is empty there
    several = one.run(one.build(bucket, [1], [Sequence(0, drafts, 13, logits=4)]))
    steps = [two.run(two.build(bucket if i == 0 else [], [1] if i == 0 else [], [Sequence(0, [t], 13 + i)]))
             for i, t in enumerate(drafts)]
    assert_equal_up_to_rounding(several[0], steps[0][0])  # slot 1's next token
    assert_equal_up_to_rounding(several[1:], torch.cat([s[-1:] for s in steps]))
    for a, b in zip(one.model.layers, two.model.layers):
        assert_equal_up_to_rounding(a.self_attn.k_cache[:2, :, :17], b.self_attn.k_cache[:2, :, :17])
