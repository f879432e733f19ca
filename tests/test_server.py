"""A live pod: `fleetserve serve` in its own process (both layouts: one process,
and engine core + frontend), driven over real HTTP by the `openai` client and by
raw requests for every kind of bad input. Every 4xx and 5xx is an OpenAI error
object, and the pod keeps serving after each."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest
from serving import MALFORMED_HTTP, error_answer, raw_http, running_server


@pytest.fixture(scope="module", params=["0", "1"], ids=["one process", "core + frontend"])
def server(tiny_model_dir, request):
    with running_server(tiny_model_dir, "--max-num-seqs", "4", "--max-model-len", "128",
                        "--max-body-bytes", "4096", "--served-model-name", "tiny", "--frontends", request.param,
                        "--request-read-timeout", "2") as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0)


@pytest.mark.slow
def test_completion_via_openai_client(client):
    r = client.completions.create(model="tiny", prompt="The weather", max_tokens=7, temperature=0,
                                  extra_body={"ignore_eos": True})
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 7 and r.usage.prompt_tokens > 0
    again = client.completions.create(model="tiny", prompt="The weather", max_tokens=7, temperature=0,
                                      extra_body={"ignore_eos": True})
    assert again.choices[0].text == r.choices[0].text  # greedy is deterministic


def test_streaming_completion_equals_non_streaming(client):
    kwargs = dict(model="tiny", prompt="A serving platform", max_tokens=10, temperature=0, extra_body={"ignore_eos": True})
    full = client.completions.create(**kwargs).choices[0].text
    chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == full
    assert chunks[-1].usage.completion_tokens == 10
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


def test_chat_and_chat_streaming(client):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    r = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=6, temperature=0)
    assert r.choices[0].message.role == "assistant"
    stream = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=6, temperature=0, stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == r.choices[0].message.content


def test_models_health_ready(server, client):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert httpx.get(server + "/health").json() == {"status": "ok"}
    assert httpx.get(server + "/ready").status_code == 200


def test_correct_returns_text_and_consistent_edits(server):
    source = "she go to school yesterday"
    r = httpx.post(server + "/v1/correct", json={"text": source}, timeout=30)
    assert r.status_code == 200
    body = r.json()
    rebuilt = source
    for e in sorted(body["edits"], key=lambda e: e["start"], reverse=True):
        rebuilt = rebuilt[: e["start"]] + e["replacement"] + rebuilt[e["end"]:]
    assert rebuilt == body["text"]


def test_metrics_count_requests_and_tokens(server, client):
    client.completions.create(model="tiny", prompt="x", max_tokens=3, extra_body={"ignore_eos": True})
    list(client.completions.create(model="tiny", prompt="x", max_tokens=1, stream=True))  # times its first token
    # A frontend's engine counters come with the core's heartbeat (four a second): read until one has
    # arrived since the request, at most 5 s (CI once read them 0 right after the answer).
    deadline = time.monotonic() + 5.0
    while True:
        text = httpx.get(server + "/metrics").text
        values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line and line[0] != "#"}
        if values["fleetserve_generation_tokens_total"] >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert values['fleetserve_requests_total{route="/v1/completions",status="200"}'] >= 1
    assert values["fleetserve_generation_tokens_total"] >= 3
    assert values["fleetserve_request_latency_seconds_count"] >= 1
    assert values["fleetserve_time_to_first_token_seconds_count"] >= 1
    for name in ("fleetserve_requests_in_flight", "fleetserve_requests_waiting", "fleetserve_slots_running"):
        assert name in values


BAD_REQUESTS = [
    ("malformed JSON", "/v1/completions", b'{"prompt": "hi",', 400, "malformed JSON"),
    ("not an object", "/v1/completions", b'["hi"]', 400, "Expected `object`"),
    ("wrong type", "/v1/completions", json.dumps({"prompt": "hi", "max_tokens": "ten"}).encode(), 400, "$.max_tokens"),
    ("missing prompt", "/v1/completions", b"{}", 400, "prompt"),
    ("unknown model", "/v1/completions", json.dumps({"prompt": "hi", "model": "gpt-9"}).encode(), 404, "gpt-9"),
    ("empty prompt", "/v1/completions", json.dumps({"prompt": ""}).encode(), 400, "empty"),
    ("empty token list", "/v1/completions", json.dumps({"prompt": []}).encode(), 400, "empty"),
    ("prompt too long", "/v1/completions", json.dumps({"prompt": [5] * 200}).encode(), 400, "maximum context length is 128"),
    ("max_tokens zero", "/v1/completions", json.dumps({"prompt": "hi", "max_tokens": 0}).encode(), 400, "max_tokens"),
    ("max_tokens negative", "/v1/completions", json.dumps({"prompt": "hi", "max_tokens": -3}).encode(), 400, "max_tokens"),
    ("max_tokens beyond limit", "/v1/completions", json.dumps({"prompt": "hi", "max_tokens": 1000}).encode(), 400, "max_tokens=1000"),
    ("negative temperature", "/v1/completions", json.dumps({"prompt": "hi", "temperature": -0.5}).encode(), 400, "temperature"),
    ("bad top_p", "/v1/completions", json.dumps({"prompt": "hi", "top_p": 1.5}).encode(), 400, "top_p"),
    ("token id out of vocab", "/v1/completions", json.dumps({"prompt": [1, 10**6]}).encode(), 400, "vocabulary"),
    ("batch of prompts", "/v1/completions", json.dumps({"prompt": ["a", "b"]}).encode(), 400, "one per request"),
    ("n > 1", "/v1/completions", json.dumps({"prompt": "hi", "n": 2}).encode(), 400, "n: not supported"),
    ("invalid UTF-8", "/v1/completions", b'{"prompt": "caf\xe9"}', 400, "UTF-8"),
    ("body too large", "/v1/completions", json.dumps({"prompt": "x" * 10000}).encode(), 413, "limit"),
    ("chat without messages", "/v1/chat/completions", json.dumps({"messages": []}).encode(), 400, "messages"),
    ("chat bad role type", "/v1/chat/completions", json.dumps({"messages": [{"role": 1}]}).encode(), 400, "role"),
    ("correct wrong type", "/v1/correct", json.dumps({"text": 5}).encode(), 400, "$.text"),
    ("correct too long", "/v1/correct", json.dumps({"text": "word " * 500}).encode(), 400, "too long"),
    ("correct wrong model", "/v1/correct", json.dumps({"text": "hi", "model": "gpt-9"}).encode(), 404, "gpt-9"),
    ("correct unknown field", "/v1/correct", json.dumps({"text": "hi", "lang": "en"}).encode(), 400, "`lang`"),
    ("unknown field", "/v1/completions", json.dumps({"prompt": "hi", "foo": 1}).encode(), 400, "`foo`"),
    ("JSON 2,000 deep", "/v1/completions", b"{\"prompt\": " + b"[" * 2000 + b"]" * 2000 + b"}", 400,
     "nested too deeply"),
    ("seed over 64 bits", "/v1/completions", json.dumps({"prompt": "hi", "seed": 2**70}).encode(), 400, "$.seed"),
    ("top_k over 64 bits", "/v1/completions", json.dumps({"prompt": "hi", "top_k": 2**70}).encode(), 400, "$.top_k"),
    ("stop id over 64 bits", "/v1/completions", json.dumps({"prompt": "hi", "stop_token_ids": [2**70]}).encode(),
     400, "stop_token_ids"),
    ("stop id outside vocab", "/v1/completions", json.dumps({"prompt": "hi", "stop_token_ids": [10**6]}).encode(),
     400, "vocabulary"),
    ("max_tokens over 64 bits", "/v1/completions", json.dumps({"prompt": "hi", "max_tokens": 2**64}).encode(), 400,
     "max_tokens"),
    ("temperature beyond float", "/v1/completions", b'{"prompt": "hi", "temperature": 1e999}', 400, "temperature"),
    ("best_of", "/v1/completions", json.dumps({"prompt": "hi", "best_of": 3}).encode(), 400, "best_of"),
    ("logit_bias", "/v1/completions", json.dumps({"prompt": "hi", "logit_bias": {"5": 10}}).encode(), 400,
     "logit_bias"),
    ("suffix", "/v1/completions", json.dumps({"prompt": "hi", "suffix": "!"}).encode(), 400, "suffix"),
    ("echo", "/v1/completions", json.dumps({"prompt": "hi", "echo": True}).encode(), 400, "echo"),
    ("logprobs", "/v1/completions", json.dumps({"prompt": "hi", "logprobs": 2}).encode(), 400, "logprobs"),
    ("response_format", "/v1/chat/completions", json.dumps({"messages": [{"role": "user", "content": "hi"}],
     "response_format": {"type": "json_object"}}).encode(), 400, "response_format"),
    ("tools", "/v1/chat/completions", json.dumps({"messages": [{"role": "user", "content": "hi"}], "tools": [
        {"type": "function", "function": {"name": "f"}}]}).encode(), 400, "tools"),
    ("top_logprobs", "/v1/chat/completions", json.dumps({"messages": [{"role": "user", "content": "hi"}],
     "top_logprobs": 3}).encode(), 400, "top_logprobs"),
    ("invalid UTF-8 in an ignored field", "/v1/completions", b'{"prompt": "hi", "user": "\xff\xfe"}', 400, "UTF-8"),
]


@pytest.mark.slow
@pytest.mark.parametrize("name,path,body,status,needle", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_input_gets_4xx_and_server_keeps_serving(server, client, name, path, body, status, needle):
    r = httpx.post(server + path, content=body, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert needle in err["message"] and err["type"]
    ok = client.completions.create(model="tiny", prompt="still alive?", max_tokens=2)
    assert ok.usage.completion_tokens >= 1


NEUTRAL_OPENAI_PARAMETERS = {"n": 1, "best_of": 1, "logit_bias": {}, "presence_penalty": 0, "frequency_penalty": 0.0,
                             "suffix": "", "echo": False, "user": "u-1", "seed": -5, "top_k": -1,
                             "stream_options": None, "logprobs": None}


def test_openai_parameters_at_their_neutral_values_are_accepted(server):
    body = {"prompt": "hi", "max_tokens": 3, "temperature": 0, "ignore_eos": True, **NEUTRAL_OPENAI_PARAMETERS}
    r = httpx.post(server + "/v1/completions", json=body, timeout=30)
    assert r.status_code == 200, r.text
    chat = {"messages": [{"role": "user", "content": "hi", "name": "ann"}], "max_tokens": 2, "tools": [],
            "tool_choice": "none", "response_format": {"type": "text"}, "top_logprobs": 0, "metadata": {"k": "v"}}
    r = httpx.post(server + "/v1/chat/completions", json=chat, timeout=30)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("params", [{"temperature": 1e-40}, {"temperature": 5e-324}, {"top_p": 1e-300},
                                    {"temperature": 1e300, "seed": 1}, {"temperature": 1e-4, "top_k": 10**9}],
                         ids=["temperature 1e-40", "temperature 5e-324", "top_p 1e-300", "temperature 1e300",
                              "temperature 1e-4 top_k 1e9"])
def test_odd_but_valid_sampling_values_are_served(server, params):
    r = httpx.post(server + "/v1/completions", json={"prompt": "hi", "max_tokens": 4, "ignore_eos": True, **params},
                   timeout=30)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4, r.text
    ok = httpx.post(server + "/v1/completions", json={"prompt": "still alive?", "max_tokens": 2}, timeout=30)
    assert ok.status_code == 200


@pytest.mark.parametrize("name,data,status,needle", MALFORMED_HTTP, ids=[m[0] for m in MALFORMED_HTTP])
def test_malformed_http_gets_an_error_object(server, name, data, status, needle):
    got, err = error_answer(raw_http(server, data))
    assert got == status and needle in err["message"], err
    assert httpx.get(server + "/health").status_code == 200


def test_unknown_paths_and_methods_get_error_objects(server):
    for r, status in ((httpx.get(server + "/v2/nothing"), 404), (httpx.get(server + "/v1/completions"), 405),
                      (httpx.delete(server + "/v1/models"), 405)):
        assert r.status_code == status and r.json()["error"]["message"], r.text


@pytest.mark.slow
def test_a_request_sent_too_slowly_gets_408_and_the_connection_closes(server):
    start = time.monotonic()
    answer = raw_http(server, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"pro",
                      wait=15)
    status, err = error_answer(answer)
    assert status == 408 and err["code"] == "request_timeout" and 1.5 < time.monotonic() - start < 10
    start = time.monotonic()
    assert raw_http(server, b"", wait=15).startswith(b"HTTP/1.1 408")  # a connection that never sends
    assert time.monotonic() - start < 10


@pytest.mark.slow
def test_client_disconnect_mid_stream_frees_the_slot(server):
    with httpx.stream("POST", server + "/v1/completions", json={
        "prompt": "long", "max_tokens": 60, "stream": True, "ignore_eos": True}, timeout=30) as r:
        next(r.iter_lines())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        metrics = httpx.get(server + "/metrics").text
        if "fleetserve_slots_running 0" in metrics and "fleetserve_requests_in_flight 0" in metrics:
            return
        time.sleep(0.05)
    pytest.fail("slot still held after the client went away")
