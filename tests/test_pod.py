"""The multi-process pod: an engine-core process and frontend processes sharing
the port, each really started, killed and signalled here."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from serving import free_port, server_process

from fleetserve.benchmarks.procs import pod_processes

pytestmark = pytest.mark.slow  # starts processes or servers (make test-quick skips it)

BUNDLED = Path(__file__).resolve().parents[1] / "models" / "correct-6m"
PROMPTS = ["The quick brown fox", "Once upon a time", "In the beginning", "A B C D", "hello", "one two three"]


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out += [int(c) for c in text]
    return out


def pod_children(pid: int) -> dict[str, list[int]]:
    """The supervisor's engine core and frontends."""
    roles = pod_processes(pid)
    return {"core": roles["engine core"], "frontends": roles["frontends"]}


def complete(url: str, prompt: str, max_tokens: int = 8, timeout: float = 30) -> httpx.Response:
    return httpx.post(url + "/v1/completions", json={"prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                                                      "ignore_eos": True}, timeout=timeout)


def texts(url: str) -> list[str]:
    out = []
    for p in PROMPTS:
        r = complete(url, p)
        assert r.status_code == 200, r.text
        out.append(r.json()["choices"][0]["text"])
    return out


def test_outputs_are_identical_with_one_process_one_frontend_or_two_or_two_engine_cores(tiny_model_dir):
    results = {}
    for layout in (("0",), ("1", "--engines", "1"), ("2", "--engines", "1"), ("1", "--engines", "2")):
        with server_process(tiny_model_dir, "--frontends", *layout, "--max-num-seqs", "4") as (url, proc):
            assert len(pod_processes(proc.pid).get("engine core", [0])) == int(layout[2] if layout[1:] else 1)
            results[layout] = texts(url)
            r = complete(url, "x")
            assert r.headers["x-fleetserve-in-flight"].isdigit()
    assert len({tuple(r) for r in results.values()}) == 1, results


def test_a_killed_frontend_comes_back_and_the_pod_keeps_serving(tiny_model_dir):
    with server_process(tiny_model_dir, "--frontends", "2", "--max-num-seqs", "4") as (url, proc):
        before = pod_children(proc.pid)
        assert before["core"] and len(before["frontends"]) == 2
        os.kill(before["frontends"][0], signal.SIGKILL)
        for _ in range(10):  # the other frontend answers meanwhile (a connection to the dead one may fail)
            try:
                complete(url, "still there?", timeout=10)
            except httpx.TransportError:
                pass
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            now = pod_children(proc.pid)
            if len(now["frontends"]) == 2 and before["frontends"][0] not in now["frontends"]:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"frontend not restarted: {now}")
        time.sleep(3)  # the new frontend loads its tokenizer and connects
        assert all(complete(url, p).status_code == 200 for p in PROMPTS)
        assert now["core"] == before["core"]


@pytest.mark.parametrize("engines", ["1", "2"])
def test_a_killed_engine_core_stops_the_pod_with_an_error(tiny_model_dir, engines):
    with server_process(tiny_model_dir, "--frontends", "1", "--engines", engines, "--max-num-seqs", "4") as (url, proc):
        core = pod_children(proc.pid)["core"][-1]
        os.kill(core, signal.SIGKILL)
        status = proc.wait(timeout=15)
        assert status != 0
        assert not children_alive(proc.pid)


def children_alive(pid: int) -> bool:
    try:
        return bool(children(pid))
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("frontends", ["0", "1"])
def test_sigterm_finishes_every_request_in_flight_then_exits_0(frontends):
    # The bundled model: 8 x 60 of its tokens on 2 slots take long enough to signal mid-way.
    with server_process(BUNDLED, "--frontends", frontends, "--max-num-seqs", "2") as (url, proc):
        results: list[int | str] = []

        def one(i: int) -> None:
            try:
                r = complete(url, f"request {i}", max_tokens=60, timeout=60)
                ok = r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 60
                results.append(r.status_code if ok else f"bad {r.status_code} {r.text[:80]}")
            except httpx.HTTPError as e:
                results.append(repr(e))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while "fleetserve_requests_in_flight 8" not in httpx.get(url + "/metrics").text:
            assert time.monotonic() < deadline, "requests never got in flight"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        try:
            late = complete(url, "too late", timeout=5)
            assert late.status_code == 503 and "draining" in late.text
        except httpx.TransportError:
            pass  # or the listener is already closed: refused is fine too
        for t in threads:
            t.join(timeout=60)
        assert proc.wait(timeout=60) == 0
    assert results == [200] * 8


def test_a_full_waiting_queue_answers_429_then_recovers(tiny_model_dir):
    # One engine core: the slots and the waiting bound are each core's.
    with server_process(tiny_model_dir, "--max-num-seqs", "1", "--max-waiting", "2", "--engines", "1") as (url, _):
        statuses: list[int] = []
        retry_after: list[str | None] = []

        def one() -> None:
            r = complete(url, "busy", max_tokens=40, timeout=60)
            statuses.append(r.status_code)
            retry_after.append(r.headers.get("retry-after"))

        threads = [threading.Thread(target=one) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert statuses.count(429) >= 5 and statuses.count(200) >= 2, statuses
        assert set(statuses) <= {200, 429}
        assert all(ra == "1" for s, ra in zip(statuses, retry_after) if s == 429)
        assert complete(url, "after the rush").status_code == 200


def test_a_bad_model_directory_fails_at_start_with_a_clear_message(tmp_path):
    (tmp_path / "config.json").write_text('{"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}')
    r = subprocess.run([sys.executable, "-m", "fleetserve", "serve", str(tmp_path), "--port", str(free_port()),
                        "--frontends", "1"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "GPT2LMHeadModel" in r.stderr, r.stderr


IDLE_FIGURES = ("fleetserve_slots_running ", "fleetserve_requests_in_flight ", "fleetserve_requests_waiting ",
                "fleetserve_engine_steps_total ", "fleetserve_engine_clock_seconds ")


def still_busy(url: str, seconds: float = 10) -> str:
    """"" once the pod holds no request (no slot running, none in flight at a frontend), waiting
    up to `seconds`; else the figures last seen, for the failure message."""
    deadline = time.monotonic() + seconds
    figures = "no answer from /metrics"
    while time.monotonic() < deadline:
        metrics = httpx.get(url + "/metrics").text
        if "fleetserve_slots_running 0" in metrics and "fleetserve_requests_in_flight 0" in metrics:
            return ""
        figures = "; ".join(line for line in metrics.splitlines() if line.startswith(IDLE_FIGURES))
        time.sleep(0.05)
    return figures


def generated(url: str) -> int:
    time.sleep(0.6)  # the frontends' engine figures come with the core's heartbeat
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith("fleetserve_generation_tokens_total "):
            return int(float(line.split()[1]))
    raise AssertionError("no token counter in /metrics")


@pytest.mark.parametrize("frontends", ["0", "1"])
def test_a_client_that_hangs_up_frees_its_slot_and_a_slow_request_times_out(frontends):
    # The bundled model, not the tiny one: 480 of its tokens take seconds, so 0.3 s is surely too short.
    with server_process(BUNDLED, "--frontends", frontends, "--max-num-seqs", "2", "--max-model-len", "512",
                        "--request-timeout", "0.3") as (url, _):
        before = generated(url)
        with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes the connection
            complete(url, "long", max_tokens=480, timeout=0.05)
        busy = still_busy(url)
        assert not busy, f"slot still held after the client hung up ({busy})"
        after_hangup = generated(url)
        assert after_hangup - before < 400, "the engine kept generating for a client that left"
        r = complete(url, "long", max_tokens=480, timeout=30)
        assert r.status_code == 504 and "timed out" in r.json()["error"]["message"]
        busy = still_busy(url)
        assert not busy, f"slot still held after the timeout ({busy})"
        assert generated(url) - after_hangup < 480
        with httpx.stream("POST", url + "/v1/completions", json={"prompt": "long", "max_tokens": 480,
                                                                 "stream": True, "ignore_eos": True}) as s:
            if s.status_code == 504:  # a slow CPU: timed out before the first token, so before the 200
                s.read()
                assert s.json()["error"]["code"] == "timeout"
            else:  # timed out mid-stream: an error event, then the end
                events = [line for line in s.iter_lines() if line.startswith("data:")]
                assert s.status_code == 200 and '"timeout"' in events[-2] and events[-1] == "data: [DONE]"
        assert complete(url, "short", max_tokens=1).status_code == 200


@pytest.mark.parametrize("frontends", ["0", "1"])
def test_requests_that_cannot_get_a_slot_in_time_get_429(frontends):
    """One slot, long answers: requests that would wait past --max-queue-time are refused
    with 429 and Retry-After at that time, not served tens of seconds late."""
    with server_process(BUNDLED, "--frontends", frontends, "--engines", "1", "--max-num-seqs", "1",
                        "--max-queue-time", "0.5", "--max-model-len", "512") as (url, _):
        answers: list[tuple[int, str, float]] = []

        def one(i: int) -> None:
            start = time.monotonic()
            r = complete(url, f"long {i}", max_tokens=300, timeout=120)
            answers.append((r.status_code, r.headers.get("retry-after", ""), time.monotonic() - start))
            if r.status_code == 429:
                assert "--max-queue-time" in r.json()["error"]["message"]

        threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        refused = [a for a in answers if a[0] == 429]
        assert len(answers) == 4 and {a[0] for a in answers} <= {200, 429} and len(refused) >= 2, answers
        assert all(ra == "1" and took < 10 for _, ra, took in refused), answers
        assert "fleetserve_requests_refused_total" in httpx.get(url + "/metrics").text


@pytest.mark.parametrize("user_setting", [None, ("OMP_WAIT_POLICY", "PASSIVE")])
def test_serving_processes_get_a_short_openmp_spin_unless_the_user_chose(tiny_model_dir, monkeypatch, user_setting):
    """OpenMP threads that spin long at barriers starve each other on a busy host
    (fleetserve/engine/openmp.py): `serve` puts GOMP_SPINCOUNT=10000 in the environment
    before torch loads, so the engine core inherits it; a policy the user set is kept."""
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        monkeypatch.delenv(name, raising=False)
    if user_setting:
        monkeypatch.setenv(*user_setting)
    with server_process(tiny_model_dir, "--frontends", "1") as (url, proc):
        core = pod_children(proc.pid)["core"][0]
        environ = Path(f"/proc/{core}/environ").read_bytes().split(b"\0")
    spin = [v for v in environ if v.startswith(b"GOMP_SPINCOUNT=")]
    if user_setting:
        assert "=".join(user_setting).encode() in environ and not spin
    else:
        assert spin == [b"GOMP_SPINCOUNT=10000"] and not any(v.startswith(b"OMP_WAIT_POLICY=") for v in environ)


def test_nothing_loads_torch_before_serve_sets_how_openmp_waits():
    """libgomp reads its settings once, when torch loads it: the CLI's path to `serve`'s
    run() must not import torch (or the one-process pod would keep spinning threads)."""
    code = ("import sys; from fleetserve.cli import build_parser; build_parser().parse_args(['serve', 'm']); "
            "import fleetserve.model.config; print('torch' in sys.modules, 'numba' in sys.modules)")  # main()'s path
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    # nor numba (the simulator's), which would only slow every command's start
    assert r.stdout.strip() == "False False", r.stderr
