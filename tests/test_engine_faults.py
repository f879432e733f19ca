"""Nothing one request does can end the engine: sampling values at the edges of
what validation accepts sample safely, and a request whose step fails (a
numerical accident, a kernel that raises) fails alone, in both step loops and
both pod layouts' engine loops, while the others get exactly the tokens they
would have had."""

from __future__ import annotations

import time

import pytest
import torch
import zmq

from fleetserve.engine import ipc
from fleetserve.engine.core_process import CoreTransport
from fleetserve.engine.engine_loop import EngineLoop
from fleetserve.engine.llm import LLM
from fleetserve.engine.outputs import FAILURE_STATUS, FinishReason, StepOutput
from fleetserve.engine.request import Request
from fleetserve.engine.sampler import sample
from fleetserve.engine.sampling_params import SamplingParams

GREEDY = dict(max_tokens=8, temperature=0.0, ignore_eos=True)


@pytest.fixture(scope="module")
def llm(tiny_model_dir):
    return LLM(tiny_model_dir, max_num_seqs=4, max_model_len=64)


@pytest.mark.parametrize("params", [
    dict(temperature=1e-40), dict(temperature=5e-324), dict(temperature=1e-6),
    dict(temperature=1.0, top_p=1e-300), dict(temperature=0.7, top_p=5e-324, top_k=3),
], ids=["temperature 1e-40", "temperature 5e-324", "temperature 1e-6", "top_p 1e-300", "top_p 5e-324 top_k 3"])
def test_vanishing_temperature_or_top_p_is_greedy_not_a_crash(llm, params):
    greedy = llm.generate("The weather", SamplingParams(**GREEDY))[0]
    odd = llm.generate("The weather", SamplingParams(**{**GREEDY, **params, "seed": 1}))[0]
    assert odd.finish_reason == "length" and odd.token_ids == greedy.token_ids


@pytest.mark.parametrize("temperature", [1e-4, 3.0, 1e300])
def test_extreme_but_valid_temperatures_sample_inside_the_vocabulary(llm, temperature):
    out = llm.generate("The weather", SamplingParams(**{**GREEDY, "temperature": temperature, "seed": 3}))[0]
    assert out.finish_reason == "length" and len(out.token_ids) == 8
    assert all(0 <= t < llm.engine.model_config.vocab_size for t in out.token_ids)


@pytest.mark.parametrize("bad", [dict(temperature=float("nan")), dict(temperature=float("inf")),
                                 dict(temperature=-1e-9), dict(top_p=0.0), dict(top_p=float("nan")),
                                 dict(top_k=-2), dict(seed=2**64), dict(stop_token_ids=[1.5])])
def test_validation_refuses_what_makes_no_sense(bad):
    with pytest.raises(ValueError):
        SamplingParams(**bad).validate()


def test_a_row_that_cannot_be_sampled_fails_alone():
    """Non-finite logits (a model accident) in one sampled row: that row is reported
    failed, the greedy and the other sampled rows get their tokens."""
    logits = torch.randn(3, 50)
    logits[1] = float("nan")
    reqs = [Request(f"r{i}", [1], SamplingParams(temperature=1.0, seed=i)) for i in range(3)]
    reqs[0].params.temperature = 0.0
    tokens, failed = sample(logits, reqs)
    assert list(failed) == [1] and "non-finite" in failed[1] and tokens[1] == -1
    assert tokens[0] == int(logits[0].argmax()) and 0 <= tokens[2] < 50


def _poison(llm: LLM, token: int) -> None:
    _poison_core(llm.engine, token)


def _poison_core(core, token: int) -> None:
    """Make the model raise whenever `token` is among a pass's input tokens (a stand-in
    for a kernel that fails on one request's data)."""
    step = core.runner._step

    def run(inputs):
        if bool((inputs.tokens == token).any()):
            raise RuntimeError(f"kernel failed on token {token}")
        return step(inputs)

    core.runner._step = run


@pytest.mark.parametrize("async_scheduling", [False, True], ids=["plain loop", "overlapped loop"])
@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_a_request_whose_step_fails_fails_alone(tiny_model_dir, async_scheduling, phase):
    prompts = [[10 + i, 20 + i, 30 + i, 40 + i] for i in range(4)]
    params = SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True)
    clean = LLM(tiny_model_dir, max_num_seqs=4, max_model_len=64, async_scheduling=async_scheduling)
    want = [o.token_ids for o in clean.generate(prompts, params)]
    victim = 2
    if phase == "prefill":
        poison = prompts[victim][1]
    else:  # a token only the victim generates, met when it is fed back as a decode input
        others = {t for i, ids in enumerate(want) if i != victim for t in ids} | {t for p in prompts for t in p}
        poison = next(t for t in want[victim][:-1] if t not in others)
    faulty = LLM(tiny_model_dir, max_num_seqs=4, max_model_len=64, async_scheduling=async_scheduling)
    _poison(faulty, poison)
    got = faulty.generate(prompts, params)
    assert got[victim].finish_reason == "error" and f"token {poison}" in got[victim].error
    for i, out in enumerate(got):
        if i != victim:
            assert out.finish_reason == "length" and out.token_ids == want[i]
    assert faulty.engine.snapshot().failed == 1
    again = faulty.generate(prompts[:1], params)[0]  # the engine goes on
    assert again.token_ids == want[0]


def test_the_core_process_loop_answers_a_failed_request_with_a_500(tiny_model_dir):
    """The multi-process pod's loop (EngineLoop driven by CoreTransport) over a real ZeroMQ
    socket pair: the failed request gets a 500 failure, the other its tokens, and the loop goes on."""
    llm = LLM(tiny_model_dir, max_num_seqs=4, max_model_len=64)
    _poison(llm, 77)
    ctx = zmq.Context()
    router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    router.bind("inproc://core")
    dealer.connect("inproc://core")
    loop = EngineLoop(llm.engine)
    transport = CoreTransport(loop, router)
    params = SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True)
    for rid, prompt in (("bad", [5, 77, 9]), ("good", [5, 6, 9])):
        dealer.send(ipc.to_core_encoder.encode(ipc.Add(rid, prompt, params, whole=True)))
    got: dict[str, StepOutput] = {}
    turns = iter(range(200))

    def stop() -> bool:
        while dealer.poll(0):
            msg = ipc.to_frontend_decoder.decode(dealer.recv())
            if isinstance(msg, ipc.Outputs):
                got.update((out.request_id, out) for out in msg.items if out.finish_reason)
        return len(got) == 2 or next(turns, None) is None

    loop.run(transport.receive, transport.send, stop)
    router.close()
    dealer.close()
    ctx.term()
    bad, good = got["bad"], got["good"]
    assert FAILURE_STATUS.get(bad.finish_reason) == 500 and "token 77" in bad.error
    assert good.finish_reason == FinishReason.LENGTH and len(good.new_token_ids) == 3


def test_sampling_stays_finite_for_a_tiny_temperature_above_the_greedy_cut():
    """Logits near float32's limit divided by a temperature just above the greedy cut
    overflow to inf (inf/inf: NaN) unless they are shifted first; shifted, the best
    token keeps all the probability."""
    logits = torch.tensor([[1e38, -3e38, 9.9e37, 0.0]])
    req = Request("r", [1], SamplingParams(temperature=2e-5, seed=0))
    tokens, failed = sample(logits, [req])
    assert not failed and tokens == [0]


def test_a_failed_step_is_a_500_for_that_request_alone_over_http(tiny_model_dir):
    """The one-process pod's HTTP face (served on a thread of the test)."""
    import httpx
    from serving import serving_in_thread

    from fleetserve.engine.config import EngineConfig
    from fleetserve.server.serve import build_server

    server = build_server(tiny_model_dir, EngineConfig(max_num_seqs=2, max_model_len=64))
    _poison_core(server.engine.core, 77)
    with serving_in_thread(server) as (url, _), httpx.Client(base_url=url, timeout=30) as client:
        body = {"max_tokens": 3, "temperature": 0, "ignore_eos": True}
        bad = client.post("/v1/completions", json={"prompt": [5, 77, 9], **body})
        assert bad.status_code == 500 and bad.json()["error"]["code"] == "generation_failed"
        assert "token 77" in bad.json()["error"]["message"]
        stream = client.post("/v1/completions", json={"prompt": [5, 77, 9], "stream": True, **body})
        assert stream.status_code == 500  # failed before its first token: still a proper status
        good = client.post("/v1/completions", json={"prompt": [5, 6, 9], **body})
        assert good.status_code == 200 and good.json()["usage"]["completion_tokens"] == 3
        metrics = client.get("/metrics").text
        assert "fleetserve_requests_failed_total 2" in metrics


def test_the_one_process_pod_exits_1_when_its_step_loop_crashes(tiny_model_dir):
    """A failure outside any request's computation (here a scheduler bug) is a broken
    engine: requests get 503, and the process ends with status 1 to be replaced."""
    import httpx
    from serving import serving_in_thread

    from fleetserve.engine.config import EngineConfig
    from fleetserve.server.options import ServerOptions
    from fleetserve.server.serve import build_server

    server = build_server(tiny_model_dir, EngineConfig(max_num_seqs=2, max_model_len=64))
    with serving_in_thread(server, stall_timeout=ServerOptions().engine_stall_timeout) as (url, runner):
        def broken(*args, **kwargs):
            raise RuntimeError("a bug in the scheduler")

        server.engine.core.scheduler.schedule = broken
        r = httpx.post(url + "/v1/completions", json={"prompt": "hi", "max_tokens": 2}, timeout=30)
        assert r.status_code == 503 and r.json()["error"]["code"] == "engine_dead"
        deadline = time.monotonic() + 30
        while not runner.finished and time.monotonic() < deadline:
            time.sleep(0.05)
        assert runner.finished and runner.exit_status == 1


def test_requests_that_wait_too_long_for_a_slot_are_refused(tiny_model_dir):
    """An overloaded engine refuses (REJECTED, a 429 in the pod) what has waited longer than
    max_queue_time, oldest first, and serves the rest as before."""
    from fleetserve.engine.config import EngineConfig
    from fleetserve.engine.engine_core import EngineCore

    core = EngineCore(tiny_model_dir, EngineConfig(max_num_seqs=1, max_model_len=64, max_queue_time=5.0))
    params = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True)
    for i in range(4):
        core.add_request(f"r{i}", [10 + i, 11, 12], params)
    core.step()  # r0 takes the only slot
    now = time.monotonic()
    core.scheduler.get("r1").arrival_time = now - 6.0
    core.scheduler.get("r2").arrival_time = now - 5.5
    refused = [o for o in core.step() if o.finish_reason is not None and not o.new_token_ids]
    assert [o.request_id for o in refused] == ["r1", "r2"]
    assert all(o.finish_reason.value == "rejected" and "--max-queue-time" in o.error for o in refused)
    finished = set()
    while core.has_unfinished():
        finished |= {o.request_id for o in core.step() if o.finish_reason is not None}
    assert finished == {"r0", "r3"} and core.snapshot().refused == 2
