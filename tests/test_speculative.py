"""Speculative decoding: the proposer's policy as pure code, and outputs identical to
decoding one token at a time, whatever the proposals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fleetserve.engine.config import EngineConfig
from fleetserve.engine.engine_core import EngineCore
from fleetserve.engine.llm import LLM
from fleetserve.engine.sampling_params import SamplingParams
from fleetserve.engine.speculative import DraftState, Proposer, accept
from fleetserve.model.correction_prompt import CorrectionPrompt
from fleetserve.quality.evaluate import load_eval_set
from fleetserve.quality.text import detokenize
from fleetserve.shared_data import default_eval_set

BUNDLED = Path(__file__).resolve().parents[1] / "models" / "correct-6m"


def test_accept_keeps_the_drafts_greedy_decoding_agrees_with_then_the_models_token():
    assert accept([5, 6, 7], [5, 6, 7, 8]) == [5, 6, 7, 8]
    assert accept([5, 6, 7], [5, 9, 7, 8]) == [5, 9]
    assert accept([5, 6, 7], [4, 6, 7, 8]) == [4]
    assert accept([], [3]) == [3]


def test_the_proposer_continues_the_copy_of_the_source_and_realigns_after_an_edit():
    source = [1, 10, 11, 12, 13, 14, 15, 16, 2]  # <s> the text </s>
    p, state = Proposer("input", max_k=8), DraftState(k=3)
    assert p.propose(state, source, [10], room=10) == [11, 12, 13]
    assert p.propose(state, source, [10, 11, 12, 13], room=10) == [14, 15, 16]
    # an edit: 99 replaced 14; the copy resumes after the source's 14, found by the longer suffix
    assert p.propose(state, source, [10, 11, 12, 13, 99], room=10) == []  # 99 is not in the source
    assert p.propose(state, source, [10, 11, 12, 13, 99, 15], room=10) == [16, 2]
    assert p.propose(state, source, [10], room=2) == [11, 12]  # never past the room left
    assert Proposer("off").propose(DraftState(), source, [10], room=10) == []
    with pytest.raises(ValueError, match="speculative mode"):
        Proposer("sometimes")


def test_the_draft_length_follows_what_is_accepted_and_repeated_misses_back_off():
    s = DraftState(k=4)
    s.update(4, 4, max_k=8)
    assert s.k == 8
    s.update(8, 8, max_k=8)
    assert s.k == 8
    s.update(8, 2, max_k=8)  # an edit: the copy goes on after it
    assert (s.k, s.wait) == (8, 0)
    s.update(8, 0, max_k=8)  # one miss: half as many, at once
    assert (s.k, s.wait) == (4, 0)
    s.update(4, 0, max_k=8)  # misses in a row: back off
    assert (s.k, s.wait) == (1, 2)
    s.update(1, 0, max_k=8)
    assert (s.k, s.wait) == (1, 4)
    p = Proposer("input")
    assert [p.propose(s, [1, 2, 3], [1], room=5) for _ in range(5)] == [[], [], [], [], [2]]


def correction_requests(llm: LLM, n: int) -> tuple[list[list[int]], list[SamplingParams]]:
    jfleg = default_eval_set()
    if (jfleg / "dev.src").is_file():
        texts = [detokenize(s) for s in load_eval_set(jfleg).sources[:n]]
    else:
        texts = (BUNDLED / "heldout.txt").read_text().splitlines()[:n]
    prompt = CorrectionPrompt(BUNDLED, llm.tokenizer)
    reqs = [prompt.request(t, 256) for t in texts]
    return [ids for ids, _ in reqs], [SamplingParams(max_tokens=m, temperature=0.0) for _, m in reqs]


def staggered(engine: EngineCore, prompts, params, every: int = 3) -> dict[str, list[int]]:
    """Add two requests every `every` steps (slots are reused as requests end); all outputs.
    Counts the step outputs in engine.outputs_seen."""
    got: dict[str, list[int]] = {}
    engine.outputs_seen = 0
    i = step = 0
    while i < len(prompts) or engine.has_unfinished():
        if step % every == 0:
            for j in range(i, min(i + 2, len(prompts))):
                engine.add_request(str(j), prompts[j], params[j])
            i = min(i + 2, len(prompts))
        for out in engine.step():
            got.setdefault(out.request_id, []).extend(out.new_token_ids)
            engine.outputs_seen += 1
        step += 1
    return got


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["input", "ngram"])
def test_corrections_are_identical_with_speculation_and_most_proposals_are_accepted(mode):
    """Real sentences through the bundled model, arriving while others decode, on fewer
    slots than requests: the same tokens as one token per step, several per step."""
    off = LLM(BUNDLED, max_num_seqs=8, speculative="off")
    prompts, params = correction_requests(off, 48)
    want = staggered(off.engine, prompts, params)
    on = LLM(BUNDLED, max_num_seqs=8, speculative=mode)
    assert staggered(on.engine, prompts, params) == want
    s = on.engine.stats
    assert s.accepted_tokens > 0.5 * s.draft_tokens
    assert off.engine.stats.generated_tokens == off.engine.outputs_seen  # one token per request and step
    assert s.generated_tokens > 1.5 * on.engine.outputs_seen


def test_random_prompts_are_identical_with_speculation(tiny_model_dir):
    g = torch.Generator().manual_seed(5)
    prompts = [torch.randint(3, 200, (n,), generator=g).tolist() for n in (7, 30, 12, 3, 25, 18)]
    params = [SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True)] * len(prompts)
    plain = EngineConfig(max_num_seqs=3, max_model_len=64, speculative="off")
    want = staggered(EngineCore(tiny_model_dir, plain), prompts, params, 2)
    on = EngineCore(tiny_model_dir, EngineConfig(max_num_seqs=3, max_model_len=64, speculative="ngram"))
    assert staggered(on, prompts, params, 2) == want


@pytest.mark.slow
def test_proposals_that_are_always_wrong_still_give_the_right_output():
    off = LLM(BUNDLED, max_num_seqs=4, speculative="off")
    prompts, params = correction_requests(off, 8)
    want = [o.token_ids for o in off.generate(prompts, params)]
    on = LLM(BUNDLED, max_num_seqs=4, speculative="input")
    vocab = on.engine.model_config.vocab_size
    real = on.engine.proposer.propose

    def wrong(state, prompt, output, room):
        state.wait = 0  # never back off: every step carries wrong proposals
        return [(t + 1) % vocab for t in real(state, prompt, output, room)] or [(output[-1] + 7) % vocab][:room]

    on.engine.proposer.propose = wrong
    assert [o.token_ids for o in on.generate(prompts, params)] == want
    s = on.engine.stats
    assert s.draft_tokens > 0 and s.accepted_tokens < 0.1 * s.draft_tokens  # (a shifted token is rarely right)


def test_sampled_requests_decode_one_token_at_a_time_with_speculation_on():
    on = LLM(BUNDLED, max_num_seqs=4, speculative="input")
    prompts, _ = correction_requests(on, 4)
    seeded = [SamplingParams(max_tokens=20, temperature=0.8, seed=i) for i in range(4)]
    off = LLM(BUNDLED, max_num_seqs=4, speculative="off")
    assert [o.token_ids for o in on.generate(prompts, seeded)] == [o.token_ids for o in off.generate(prompts, seeded)]
    assert on.engine.stats.draft_tokens == 0


@pytest.mark.slow
def test_speculation_gives_the_same_corrections_with_int8_weights():
    off = LLM(BUNDLED, max_num_seqs=8, speculative="off", quantization="int8")
    prompts, params = correction_requests(off, 16)
    on = LLM(BUNDLED, max_num_seqs=8, speculative="input", quantization="int8")
    assert [o.token_ids for o in on.generate(prompts, params)] == [o.token_ids for o in off.generate(prompts, params)]
    assert on.engine.stats.accepted_tokens > 0
