"""Engine behaviour on a real (random-weight) checkpoint: sampling, stops, limits."""

from __future__ import annotations

import pytest
import torch

from fleetserve.engine.config import EngineConfig
from fleetserve.engine.engine_core import EngineCore
from fleetserve.engine.llm import LLM
from fleetserve.engine.sampling_params import SamplingParams


@pytest.fixture(scope="module")
def llm(tiny_model_dir):
    return LLM(tiny_model_dir, max_num_seqs=4, max_model_len=64)


def test_seeded_sampling_is_reproducible_alone_or_batched(llm):
    p = SamplingParams(max_tokens=16, temperature=1.0, top_p=0.9, top_k=50, seed=7, ignore_eos=True)
    alone = llm.generate("The weather", p)[0].token_ids
    batched = llm.generate(["The weather", "A serving platform", "Numbers"],
                           [p, SamplingParams(max_tokens=5, temperature=1.0), SamplingParams(max_tokens=9)])[0].token_ids
    assert alone == batched
    other_seed = llm.generate("The weather", SamplingParams(max_tokens=16, temperature=1.0, seed=8, ignore_eos=True))
    assert other_seed[0].token_ids != alone


def test_top_k_one_is_greedy(llm):
    greedy = llm.generate("Hello", SamplingParams(max_tokens=10, temperature=0, ignore_eos=True))[0]
    top1 = llm.generate("Hello", SamplingParams(max_tokens=10, temperature=0.8, top_k=1, ignore_eos=True))[0]
    assert greedy.token_ids == top1.token_ids


def test_prompt_as_string_or_token_ids(llm):
    ids = llm.tokenizer.encode("Grammar correction")
    a = llm.generate("Grammar correction", SamplingParams(max_tokens=6, temperature=0, ignore_eos=True))[0]
    b = llm.generate([ids], SamplingParams(max_tokens=6, temperature=0, ignore_eos=True))[0]
    assert a.prompt_token_ids == ids and a.token_ids == b.token_ids and a.text == b.text
    assert a.text == llm.tokenizer.decode(a.token_ids)


def test_stop_token_ids_and_eos(llm):
    base = llm.generate("Hello", SamplingParams(max_tokens=12, temperature=0, ignore_eos=True))[0]
    stop_at = base.token_ids[4]
    first = base.token_ids.index(stop_at)
    out = llm.generate("Hello", SamplingParams(max_tokens=12, temperature=0, stop_token_ids=[stop_at]))[0]
    assert out.token_ids == base.token_ids[: first + 1] and out.finish_reason == "stop"
    # The same token as EOS ends generation unless ignore_eos is set.
    engine = llm.engine
    saved = engine.eos_token_ids
    engine.eos_token_ids = frozenset({stop_at})
    try:
        eos = llm.generate("Hello", SamplingParams(max_tokens=12, temperature=0))[0]
        ignored = llm.generate("Hello", SamplingParams(max_tokens=12, temperature=0, ignore_eos=True))[0]
    finally:
        engine.eos_token_ids = saved
    assert eos.token_ids == base.token_ids[: first + 1] and eos.finish_reason == "stop"
    assert ignored.token_ids == base.token_ids and ignored.finish_reason == "length"


def test_stop_string_truncates_text(llm):
    base = llm.generate("The river", SamplingParams(max_tokens=20, temperature=0, ignore_eos=True))[0]
    assert len(base.text) > 6
    stop = base.text[3:6]
    out = llm.generate("The river", SamplingParams(max_tokens=20, temperature=0, stop=[stop], ignore_eos=True))[0]
    assert out.finish_reason == "stop"
    assert out.text == base.text[: base.text.index(stop)]
    assert len(out.token_ids) < len(base.token_ids)


def test_requests_that_cannot_fit_are_refused(tiny_model_dir):
    engine = EngineCore(tiny_model_dir, EngineConfig(max_num_seqs=2, max_model_len=32))
    with pytest.raises(ValueError, match="maximum context length is 32"):
        engine.add_request("a", [1] * 40, SamplingParams(max_tokens=1))
    with pytest.raises(ValueError, match="30 prompt tokens and max_tokens=5"):
        engine.add_request("b", [1] * 30, SamplingParams(max_tokens=5))
    with pytest.raises(ValueError, match="empty"):
        engine.add_request("c", [], SamplingParams())
    with pytest.raises(ValueError, match="outside the vocabulary"):
        engine.add_request("d", [1, 99999], SamplingParams())
    with pytest.raises(ValueError, match="temperature"):
        engine.add_request("e", [1], SamplingParams(temperature=-1))
    assert not engine.has_unfinished()


def test_generation_stops_at_max_model_len(tiny_model_dir):
    engine = EngineCore(tiny_model_dir, EngineConfig(max_num_seqs=1, max_model_len=32))
    engine.add_request("a", [5] * 30, SamplingParams(max_tokens=2, temperature=0, ignore_eos=True))
    outs = [o for _ in range(3) for o in engine.step()]
    assert [o.finish_reason for o in outs][-1].value == "length" and len(outs) == 2


def test_abort_frees_the_slot(tiny_model_dir):
    engine = EngineCore(tiny_model_dir, EngineConfig(max_num_seqs=1, max_model_len=32))
    engine.add_request("a", [5, 6], SamplingParams(max_tokens=20, ignore_eos=True))
    engine.add_request("b", [7, 8], SamplingParams(max_tokens=2, ignore_eos=True))
    engine.step()
    assert engine.num_running == 1 and engine.num_waiting == 1
    assert engine.abort_request("a")
    outs = engine.step()
    assert [o.request_id for o in outs] == ["b"]


def test_snapshots_integrate_the_requests_in_flight_over_time(tiny_model_dir):
    """inflight_seconds is the time integral of waiting + running: with two requests held
    between two clock readings it grows by twice the time between them, and once every
    request has finished it stops growing."""
    import time

    engine = EngineCore(tiny_model_dir, EngineConfig(max_num_seqs=1, max_model_len=32))
    empty = engine.snapshot()
    engine.add_request("a", [5, 6], SamplingParams(max_tokens=3, ignore_eos=True))
    engine.add_request("b", [7, 8], SamplingParams(max_tokens=3, ignore_eos=True))
    held_from = time.monotonic()
    time.sleep(0.05)
    held = engine.snapshot()
    assert held.waiting == 2 and empty.inflight_seconds <= 2 * (held_from - empty.clock) + 1e-9
    assert 2 * (held.clock - held_from) <= held.inflight_seconds - empty.inflight_seconds \
        <= 2 * (held.clock - empty.clock) + 1e-9
    while engine.has_unfinished():
        engine.step()
    done = engine.snapshot()
    time.sleep(0.02)
    later = engine.snapshot()
    assert held.inflight_seconds < done.inflight_seconds == later.inflight_seconds and later.clock > done.clock


@pytest.mark.parametrize("speculative", ["off", "input"])
def test_requests_moved_into_freed_slots_keep_their_outputs(tiny_model_dir, speculative):
    """Requests of different lengths finish out of order; each freed slot below the highest
    is filled by moving that request (and its KV cache) down, so the running requests always
    hold slots 0..n-1, and every output is what the request gives alone."""
    prompts = [[5, 6, 7], [9] * 12, [3, 1, 4, 1, 5], [2, 7], [8, 8, 8, 8], [11, 13], [4, 4, 6]]
    lengths = [6, 30, 3, 17, 9, 22, 12]
    params = [SamplingParams(max_tokens=n, temperature=0, ignore_eos=True) for n in lengths]
    single = EngineCore(tiny_model_dir, EngineConfig(max_num_seqs=1, max_model_len=64, speculative=speculative))
    alone = []
    for i, (p, q) in enumerate(zip(prompts, params)):
        single.add_request(str(i), p, q)
        alone.append([t for _ in range(64) for o in single.step() for t in o.new_token_ids])
    engine = EngineCore(tiny_model_dir, EngineConfig(max_num_seqs=4, max_model_len=64, speculative=speculative))
    got: dict[str, list[int]] = {}
    moved = step = 0
    while step < len(prompts) or engine.has_unfinished():
        if step < len(prompts):
            engine.add_request(str(step), prompts[step], params[step])
        moved += len(engine.scheduler.moves)
        for out in engine.step():
            got.setdefault(out.request_id, []).extend(out.new_token_ids)
        assert sorted(engine.scheduler.running) == list(range(engine.num_running))
        step += 1
    assert moved > 0
    assert [got[str(i)] for i in range(len(prompts))] == alone


def test_async_scheduling_gives_the_same_outputs(tiny_model_dir):
    """The overlapped step loop (next step launched before the last one's bookkeeping)
    changes when work happens, never what comes out: greedy, seeded sampling, stop
    tokens, max_tokens up to the model length, and a request aborted while its step ran."""
    def run(overlap: bool) -> dict[str, list[int]]:
        engine = EngineCore(tiny_model_dir, EngineConfig(max_num_seqs=3, max_model_len=48,
                                                         async_scheduling=overlap))
        ids = [[5, 6, 7], [9] * 12, [3, 1, 4, 1, 5], [2, 7], [8, 8, 8, 8], [11, 13]]
        params = [SamplingParams(max_tokens=20, temperature=0, ignore_eos=True),
                  SamplingParams(max_tokens=30, temperature=0.9, top_p=0.8, seed=3, ignore_eos=True),
                  SamplingParams(max_tokens=43, temperature=0, ignore_eos=True),  # fills the model length
                  SamplingParams(max_tokens=25, temperature=0, stop_token_ids=[]),
                  SamplingParams(max_tokens=15, temperature=0, ignore_eos=True),
                  SamplingParams(max_tokens=25, temperature=0, ignore_eos=True)]
        got: dict[str, list[int]] = {}
        step = 0
        while step < 4 or engine.has_unfinished():
            if step < len(ids):
                engine.add_request(str(step), ids[step], params[step])
            if step == 6:
                engine.abort_request("1")  # running: in the overlapped loop its next step is in flight
            for out in engine.step():
                got.setdefault(out.request_id, []).extend(out.new_token_ids)
            step += 1
        assert engine.scheduler.num_unfinished == 0 and len(engine.scheduler._free) == 3
        return got

    sync = run(False)
    assert len(sync["2"]) == 43 and len(sync["0"]) == 20 and 0 < len(sync["1"]) < 30
    stop_at = sync["3"][4]
    overlapped = run(True)
    # the aborted request got fewer tokens out before the abort (they arrive a step later): a prefix
    aborted_sync, aborted_overlapped = sync.pop("1"), overlapped.pop("1")
    assert aborted_overlapped and aborted_sync[: len(aborted_overlapped)] == aborted_overlapped
    assert overlapped == sync
    # a stop token found by the overlapped loop ends the request at the same place
    def with_stop(overlap: bool) -> list[int]:
        engine = EngineCore(tiny_model_dir, EngineConfig(max_num_seqs=2, max_model_len=48, async_scheduling=overlap))
        engine.add_request("s", [2, 7], SamplingParams(max_tokens=25, temperature=0, stop_token_ids=[stop_at]))
        engine.add_request("t", [5], SamplingParams(max_tokens=25, temperature=0, ignore_eos=True))
        out: list[int] = []
        while engine.has_unfinished():
            out += [t for o in engine.step() if o.request_id == "s" for t in o.new_token_ids]
        return out
    assert with_stop(True) == with_stop(False) == sync["3"][: sync["3"].index(stop_at) + 1]


def test_held_answers_deliver_every_token_once_at_the_end():
    from fleetserve.engine.outputs import FinishReason, HeldAnswers, StepOutput

    held = HeldAnswers()
    held.hold("a")
    held.hold("gone")
    steps = [[StepOutput("a", [1]), StepOutput("b", [7]), StepOutput("gone", [5])],
             [StepOutput("a", [2]), StepOutput("b", [8], FinishReason.LENGTH)],
             [StepOutput("a", [3], FinishReason.STOP)]]
    delivered = [held.filter(s) for s in steps[:1]]
    held.drop("gone")  # aborted: nothing of it is ever delivered
    delivered += [held.filter(s) for s in steps[1:]]
    assert delivered == [[StepOutput("b", [7])], [StepOutput("b", [8], FinishReason.LENGTH)],
                         [StepOutput("a", [1, 2, 3], FinishReason.STOP)]]
    assert len(held) == 0


def test_greedy_tokens_follow_argmax_on_ties_nan_and_infinities():
    """The engine's greedy pick (`max`'s indices, faster) is argmax's, ties included."""
    from fleetserve.engine.sampler import greedy_tokens

    x = torch.randint(0, 3, (300, 4096)).float()
    x[0, 5], x[1, 9], x[2] = float("nan"), float("inf"), float("-inf")
    assert greedy_tokens(x) == x.argmax(dim=-1).tolist()
