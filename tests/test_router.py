"""`fleetserve router` as a real process in front of real HTTP servers: stub
servers (`fleetserve stub-server`, model-less stand-in pods with set latency,
errors and slots) and, once, a real pod serving a model."""

from __future__ import annotations

import re
import signal
import socket
import threading
import time

import httpx
import pytest

from fleetserve.fleet.discovery.file import write_endpoint_file
from fleetserve.loadtest.runner import LoadTestOptions, run_loadtest
from serving import (MALFORMED_HTTP, announcing_process, error_answer, free_port, raw_http, running_server, stats,
                     stub, stub_process)

pytestmark = pytest.mark.slow  # starts processes or servers (make test-quick skips it)

BODY = {"model": "stub", "prompt": "hello", "max_tokens": 4}


def router(*args: str, port: int = 0):
    """`fleetserve router` in its own process; yields (url, process) once it listens."""
    return announcing_process("router", "--port", str(port), *args, stop_timeout=30)


def wait_for(cond, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def post(url: str, body=BODY, **kw) -> httpx.Response:
    return httpx.post(url + "/v1/completions", json=body, timeout=kw.pop("timeout", 10), **kw)


def metric(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


def load(url: str, rate: float, seconds: float, **kw) -> dict:
    """The overall summary of an open-loop load test at a constant rate."""
    report, _ = run_loadtest(LoadTestOptions(url=url, profile=f"constant:{rate}@{seconds}s", arrival="constant",
                                             progress=False, **kw))
    return report["summary"]["overall"]


def test_traffic_spreads_and_answers_pass_through_unchanged():
    with stub("--delay", "2ms") as a, stub("--delay", "2ms") as b, stub("--delay", "2ms") as c:
        with router("--endpoints", f"{a},{b},{c}") as (url, _):
            direct = post(a).json()
            via = post(url).json()
            assert via == direct
            assert load(url, 300, 2.0)["errors"] == {}
            counts = [stats(s)["requests"] for s in (a, b, c)]
            assert sum(counts) == 600 + 2 and min(counts) > 120, counts
            assert metric(url, "fleetserve_router_requests_total") >= 601


def test_streaming_is_relayed_as_it_is_produced():
    with stub("--token-interval", "30ms") as s, router("--endpoints", s) as (url, _):
        arrivals = []
        with httpx.stream("POST", url + "/v1/completions", json={**BODY, "max_tokens": 8, "stream": True},
                          timeout=10) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                if line.startswith("data:"):
                    arrivals.append(time.monotonic())
        assert len(arrivals) == 9  # 8 tokens and [DONE]
        assert arrivals[-1] - arrivals[0] > 0.15  # not buffered into one write


def test_killed_endpoint_is_ejected_and_no_request_is_lost():
    with stub("--delay", "20ms") as a, stub("--delay", "20ms") as b, stub_process("--delay", "20ms") as (c, cproc):
        with router("--endpoints", f"{a},{b},{c}", "--health-interval", "0") as (url, _):
            threading.Timer(1.0, cproc.kill).start()  # kill -9 mid-run, with requests in flight on it
            overall = load(url, 150, 3.0)
            # every request either never reached the dead endpoint or failed there before any answer
            # byte and was retried on another one
            assert overall["errors"] == {} and overall["completed_requests"] == 450
            assert metric(url, "fleetserve_router_ejections_total") >= 1
            assert metric(url, "fleetserve_router_retries_total") >= 1
            before = stats(a)["requests"] + stats(b)["requests"]
            for _ in range(20):
                assert post(url).status_code == 200
            assert stats(a)["requests"] + stats(b)["requests"] == before + 20
            # every attempt, retried or failed, released its endpoint's in-flight count exactly once
            assert wait_for(lambda: metric(url, "fleetserve_router_endpoint_inflight") == 0, 2.0)


def slow_share(policy: str) -> float:
    with stub("--delay", "10ms") as a, stub("--delay", "10ms") as b, stub("--delay", "40ms") as slow:
        with router("--endpoints", f"{a},{b},{slow}", "--policy", policy) as (url, _):
            assert load(url, 250, 3.0)["errors"] == {}
            counts = {s: stats(s)["requests"] for s in (a, b, slow)}
    return counts[slow] / sum(counts.values())


def test_slow_endpoint_gets_fewer_requests_under_p2c_than_round_robin():
    rr, p2c = slow_share("round_robin"), slow_share("p2c")
    assert abs(rr - 1 / 3) < 0.02, rr
    assert p2c < rr - 0.05, (p2c, rr)


def test_discovery_file_changes_take_effect_without_restart(tmp_path):
    f = tmp_path / "endpoints.json"
    with stub() as a, stub() as b, router("--endpoint-file", str(f), "--health-interval", "0.2") as (url, _):
        assert post(url).status_code == 503  # no file yet: no endpoint
        not_ready = httpx.get(url + "/ready")
        assert not_ready.status_code == 503 and "no ready endpoint" in not_ready.json()["error"]["message"]
        write_endpoint_file(f, [{"url": a}])
        assert wait_for(lambda: httpx.get(url + "/ready").status_code == 200)
        for _ in range(10):
            assert post(url).status_code == 200
        assert stats(a)["requests"] == 10
        write_endpoint_file(f, [{"url": a}, {"url": b}])
        assert wait_for(lambda: post(url).status_code == 200 and stats(b)["requests"] > 0)
        write_endpoint_file(f, [{"url": b}, {"url": a, "ready": False}])
        time.sleep(1.0)
        n = stats(a)["requests"]
        for _ in range(10):
            assert post(url).status_code == 200
        assert stats(a)["requests"] == n


def test_draining_endpoint_503_is_retried_elsewhere():
    with stub("--error-rate", "1", "--error-status", "503") as draining, stub() as ok:
        with router("--endpoints", f"{draining},{ok}", "--health-interval", "0", "--eject-after", "1000",
                    "--policy", "round_robin") as (url, _):
            assert all(post(url).status_code == 200 for _ in range(20))
            assert stats(draining)["requests"] >= 5
            assert metric(url, "fleetserve_router_retries_total") == stats(draining)["requests"]
            assert metric(url, "fleetserve_router_endpoint_inflight") == 0
        # a 500 is not retried: the pod may have done the work
        with stub("--error-rate", "1") as broken, router("--endpoints", broken, "--health-interval", "0") as (url, _):
            r = post(url)
            assert r.status_code == 500 and "injected failure" in r.text


def test_every_endpoint_at_its_cap_gets_429_with_retry_after():
    with stub("--delay", "600ms") as s, router("--endpoints", s, "--max-inflight-per-endpoint", "1") as (url, _):
        first = threading.Thread(target=post, args=(url,))
        first.start()
        assert wait_for(lambda: metric(url, "fleetserve_router_endpoint_inflight") == 1)
        r = post(url)
        first.join()
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        assert "in-flight limit" in r.json()["error"]["message"]
        assert post(url).status_code == 200


def test_bad_requests_get_4xx_error_objects_and_the_router_keeps_serving():
    with stub() as s, router("--endpoints", s, "--max-body-bytes", "1000", "--request-read-timeout", "2") as (url, _):
        for name, data, status, needle in MALFORMED_HTTP:
            got, err = error_answer(raw_http(url, data))
            assert got == status and needle in err["message"], (name, err)
        r = post(url, {"prompt": "x" * 5000})
        assert r.status_code == 413 and "over 1000 bytes" in r.json()["error"]["message"]
        for r, status in ((httpx.get(url + "/v1/nothing"), 404), (httpx.get(url + "/v1/completions"), 405)):
            assert r.status_code == status and r.json()["error"]["message"], r.text
        start = time.monotonic()
        got, err = error_answer(raw_http(url, b"POST /v1/completions HTTP/1.1\r\nContent-Length: 50\r\n\r\n{",
                                         wait=15))
        assert got == 408 and err["code"] == "request_timeout" and 1.5 < time.monotonic() - start < 10
        assert raw_http(url, b"", wait=15).startswith(b"HTTP/1.1 408")  # connected, never sent a byte
        # what the pod rejects passes through unchanged (the stub: body is not JSON)
        r = httpx.post(url + "/v1/completions", content=b"{broken", timeout=5)
        assert r.status_code == 400
        assert post(url).status_code == 200


def test_client_disconnect_cancels_the_upstream_request():
    with stub("--delay", "2s") as s, router("--endpoints", s) as (url, _):
        host, port = url.removeprefix("http://").split(":")
        body = b'{"prompt": "x", "max_tokens": 2}'
        sock = socket.create_connection((host, int(port)))
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        assert wait_for(lambda: metric(url, "fleetserve_router_endpoint_inflight") == 1)
        sock.close()
        assert wait_for(lambda: metric(url, "fleetserve_router_endpoint_inflight") == 0, 1.0)
        assert metric(url, "fleetserve_router_client_disconnects_total") == 1


def test_sigterm_drains_in_flight_requests_then_exits_zero():
    with stub("--delay", "800ms") as s, router("--endpoints", s) as (url, proc):
        result = {}
        t = threading.Thread(target=lambda: result.setdefault("r", post(url)))
        t.start()
        assert wait_for(lambda: metric(url, "fleetserve_router_endpoint_inflight") == 1)
        proc.send_signal(signal.SIGTERM)
        t.join()
        assert result["r"].status_code == 200
        assert proc.wait(timeout=10) == 0
        with pytest.raises(httpx.ConnectError):
            post(url)


def test_several_router_processes_share_the_port():
    port = free_port()
    with stub() as s, router("--endpoints", s, "--workers", "2", port=port) as (url, proc):
        assert wait_for(lambda: httpx.get(url + "/ready").status_code == 200)
        workers = set()
        for _ in range(40):
            with httpx.Client() as c:  # new connections, so the kernel spreads them
                assert c.post(url + "/v1/completions", json=BODY).status_code == 200
                workers.update(re.findall(r'worker="(\d)"', c.get(url + "/metrics").text))
        assert workers == {"0", "1"}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0


def test_router_in_front_of_real_pods(tiny_model_dir):
    """Two real pods serving a model; the router's answers are the pods' answers."""
    with running_server(tiny_model_dir) as a, running_server(tiny_model_dir) as b:
        with router("--endpoints", f"{a},{b}") as (url, _):
            body = {"model": httpx.get(a + "/v1/models").json()["data"][0]["id"], "prompt": "hello world",
                    "max_tokens": 8, "temperature": 0}
            direct = httpx.post(a + "/v1/completions", json=body, timeout=30).json()
            for _ in range(4):
                via = httpx.post(url + "/v1/completions", json=body, timeout=30).json()
                assert via["choices"][0]["text"] == direct["choices"][0]["text"]
            bad = httpx.post(url + "/v1/completions", json={**body, "max_tokens": -1}, timeout=30)
            assert bad.status_code == 400 and "max_tokens" in bad.text


def test_read_timeout_gives_504_and_is_not_retried():
    with stub("--delay", "3s") as a, stub("--delay", "3s") as b:
        with router("--endpoints", f"{a},{b}", "--read-timeout", "0.5", "--health-interval", "0") as (url, _):
            t0 = time.monotonic()
            r = post(url)
            assert r.status_code == 504 and "within 0.5s" in r.json()["error"]["message"]
            assert time.monotonic() - t0 < 2.5
            assert metric(url, "fleetserve_router_retries_total") == 0
            assert stats(a)["requests"] + stats(b)["requests"] == 1
            assert metric(url, "fleetserve_router_endpoint_inflight") == 0


def test_router_follows_kubernetes_endpointslices_from_a_fake_api_server(tmp_path):
    """`fleetserve router --discovery kubernetes` as a process, against a FAKE API server (a local
    aiohttp server speaking the EndpointSlice list/watch JSON, run on a thread here): a pod turning
    ready, a new slice, and a pod turning not ready all take effect without a restart."""
    import asyncio

    from aiohttp import web
    from test_discovery_kubernetes import PATH, FakeApiServer, serve_app, slice_, write_kubeconfig

    fake = FakeApiServer()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    state = {}

    async def serve_api():
        app = web.Application()
        app.router.add_get(PATH, fake.handle)
        state["runner"], state["port"] = await serve_app(app)
        started.set()

    def api_thread():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(serve_api())
        loop.run_forever()

    def on_api(fn, *args):  # the fake's state belongs to its loop's thread
        done = threading.Event()
        loop.call_soon_threadsafe(lambda: (fn(*args), done.set()))
        done.wait(5)

    threading.Thread(target=api_thread, daemon=True).start()
    assert started.wait(10)
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{state['port']}")
    try:
        with stub() as a, stub() as b:
            pa, pb = (int(u.rsplit(":", 1)[1]) for u in (a, b))
            fake.set(slice_("correct-a", [("127.0.0.1", True)], port=pa), event=None)
            with router("--discovery", "kubernetes", "--namespace", "serving", "--service", "correct",
                        "--kubeconfig", kubeconfig, "--health-interval", "0") as (url, _):
                assert wait_for(lambda: httpx.get(url + "/ready").status_code == 200)
                assert all(post(url).status_code == 200 for _ in range(5)) and stats(a)["requests"] == 5
                on_api(fake.set, slice_("correct-b", [("127.0.0.1", True)], port=pb), "ADDED")
                assert wait_for(lambda: post(url).status_code == 200 and stats(b)["requests"] > 0)
                on_api(fake.set, slice_("correct-a", [("127.0.0.1", False)], port=pa), "MODIFIED")
                time.sleep(0.5)
                n = stats(a)["requests"]
                assert all(post(url).status_code == 200 for _ in range(10))
                assert stats(a)["requests"] == n  # not ready: no longer picked
                assert fake.lists == 1  # one list, then the watch carried every change
    finally:
        on_api(fake.end_watches)
        asyncio.run_coroutine_threadsafe(state["runner"].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
