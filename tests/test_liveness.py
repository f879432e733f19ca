"""Slow is not dead, dead is dead: pods as real processes, paused with SIGSTOP,
killed with SIGKILL, or held in one long step.

- A paused engine core or frontend (a busy host, a debugger) leaves the pod not
  ready while it lasts, then ready again: no restart, no request lost.
- A core that is gone, or stuck for longer than --engine-stall-timeout, ends the
  pod with a non-zero status within seconds, so that its supervisor replaces it.
- A request a frontend gives up on while the core is paused is aborted there.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from serving import server_process
from test_pod import children_alive, complete, pod_children, still_busy

pytestmark = pytest.mark.slow  # starts processes or servers (make test-quick skips it)

BUNDLED = Path(__file__).resolve().parents[1] / "models" / "correct-6m"


def in_flight(url: str, n: int, seconds: float = 15) -> None:
    """Wait until the engine holds n requests (running or waiting: the core's own count, the
    same whichever frontend answers; a frontend's in-flight gauge counts only its own)."""
    deadline = time.monotonic() + seconds
    while True:
        values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in
                  httpx.get(url + "/metrics", timeout=5).text.splitlines() if line and line[0] != "#"}
        if values["fleetserve_slots_running"] + values["fleetserve_requests_waiting"] >= n:
            return
        assert time.monotonic() < deadline, f"{n} requests never got in flight"
        time.sleep(0.02)


def start_requests(url: str, n: int, max_tokens: int) -> tuple[list[threading.Thread], list]:
    results: list = []

    def one(i: int) -> None:
        try:
            r = complete(url, f"request {i}", max_tokens=max_tokens, timeout=120)
            ok = r.status_code == 200 and r.json()["usage"]["completion_tokens"] == max_tokens
            results.append(200 if ok else f"{r.status_code} {r.text[:120]}")
        except httpx.HTTPError as e:
            results.append(repr(e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    return threads, results


def status_of(url: str, path: str) -> tuple[int, str]:
    r = httpx.get(url + path, timeout=10)
    return r.status_code, (r.json().get("error") or {}).get("code", "") if r.status_code != 200 else ""


def test_a_paused_engine_core_serves_again_without_a_restart():
    with server_process(BUNDLED, "--frontends", "1", "--engines", "1", "--max-num-seqs", "4") as (url, proc):
        core = pod_children(proc.pid)["core"][0]
        threads, results = start_requests(url, 4, max_tokens=80)
        in_flight(url, 4)
        os.kill(core, signal.SIGSTOP)
        try:
            time.sleep(3.5)  # longer than the frontend waits for a heartbeat (2 s)
            assert status_of(url, "/ready") == (503, "engine_stalled")
            assert status_of(url, "/health") == (200, "")
            with pytest.raises(httpx.ReadTimeout):  # a client that gives up meanwhile
                complete(url, "impatient", max_tokens=200, timeout=0.5)
        finally:
            os.kill(core, signal.SIGCONT)
        for t in threads:
            t.join(timeout=120)
        assert results == [200] * 4
        deadline = time.monotonic() + 10
        while status_of(url, "/ready")[0] != 200:
            assert time.monotonic() < deadline, "the pod never turned ready again"
            time.sleep(0.1)
        busy = still_busy(url)  # the figures say which side still counts it, if one does
        assert not busy, f"the abandoned request still holds a slot ({busy})"
        assert pod_children(proc.pid)["core"] == [core] and proc.poll() is None
        assert complete(url, "after", max_tokens=4).status_code == 200


def test_with_two_engine_cores_one_paused_the_other_takes_the_new_requests():
    """A pod with two engine cores stays ready while one is paused: new requests go to the
    other and are answered meanwhile; the paused one's finish when it resumes."""
    with server_process(BUNDLED, "--frontends", "1", "--engines", "2", "--max-num-seqs", "4") as (url, proc):
        cores = pod_children(proc.pid)["core"]
        assert len(cores) == 2
        threads, results = start_requests(url, 4, max_tokens=240)  # two on each core, long enough to be seen
        in_flight(url, 4)
        os.kill(cores[0], signal.SIGSTOP)
        try:
            time.sleep(3.5)  # longer than the frontend waits for a heartbeat (2 s)
            assert status_of(url, "/ready") == (200, "")
            for i in range(3):
                r = complete(url, f"meanwhile {i}", max_tokens=4, timeout=10)
                assert r.status_code == 200, r.text
            assert len(results) < 4  # the paused core's requests are still waiting
        finally:
            os.kill(cores[0], signal.SIGCONT)
        for t in threads:
            t.join(timeout=120)
        assert results == [200] * 4
        assert pod_children(proc.pid)["core"] == cores and proc.poll() is None


def test_a_paused_frontend_answers_every_request_when_it_resumes():
    # One engine core: its four requests stay in flight long enough to be seen there together.
    with server_process(BUNDLED, "--frontends", "1", "--engines", "1", "--max-num-seqs", "4") as (url, proc):
        before = pod_children(proc.pid)
        threads, results = start_requests(url, 4, max_tokens=60)
        in_flight(url, 4)
        os.kill(before["frontends"][0], signal.SIGSTOP)
        time.sleep(3.5)  # the core finishes meanwhile and its answers wait in the socket
        os.kill(before["frontends"][0], signal.SIGCONT)
        for t in threads:
            t.join(timeout=60)
        assert results == [200] * 4
        assert pod_children(proc.pid) == before
        assert status_of(url, "/ready")[0] == 200


@pytest.mark.parametrize("frontends", ["1", "2"])
def test_a_killed_engine_core_ends_the_pod_quickly_and_fails_what_it_held(frontends):
    # One engine core holds both (with two, the other core's request may finish as the pod drains).
    with server_process(BUNDLED, "--frontends", frontends, "--engines", "1", "--max-num-seqs", "2") as (url, proc):
        core = pod_children(proc.pid)["core"][0]
        threads, results = start_requests(url, 2, max_tokens=200)
        in_flight(url, 2)
        start = time.monotonic()
        os.kill(core, signal.SIGKILL)
        status = proc.wait(timeout=20)
        took = time.monotonic() - start
        for t in threads:
            t.join(timeout=30)
        assert status != 0 and took < 10, (status, took)
        assert not children_alive(proc.pid)
        assert all(r != 200 for r in results) and not any(t.is_alive() for t in threads)


def test_a_core_stuck_beyond_the_stall_limit_ends_the_pod():
    with server_process(BUNDLED, "--frontends", "1", "--engine-stall-timeout", "2") as (url, proc):
        core = pod_children(proc.pid)["core"][0]
        start = time.monotonic()
        os.kill(core, signal.SIGSTOP)
        try:
            status = proc.wait(timeout=30)
        finally:
            try:
                os.kill(core, signal.SIGCONT)
            except ProcessLookupError:
                pass
        assert status == 1 and 2 <= time.monotonic() - start < 15
        assert not children_alive(proc.pid)
        assert "stuck" in proc.stdout.read().decode()


LONG_STEP = ("--max-num-seqs", "64", "--max-prefill-tokens", "32768", "--max-model-len", "512", "--threads", "1")


def _long_prompts(url: str, n: int = 64) -> list[int]:
    """n prompts of ~400 tokens each, all admitted in one step (one long prefill)."""
    statuses: list[int] = []
    prompt = [5 + (i % 200) for i in range(400)]

    def one() -> None:
        try:
            r = httpx.post(url + "/v1/completions", json={"prompt": prompt, "max_tokens": 4, "ignore_eos": True},
                           timeout=120)
            statuses.append(r.status_code)
        except httpx.HTTPError:
            statuses.append(0)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    return statuses


@pytest.mark.parametrize("frontends", ["0", "1"])
def test_one_long_step_is_waited_for(frontends):
    """The issue's recipe for a step over the old 2 s heartbeat limit on a busy host."""
    with server_process(BUNDLED, "--frontends", frontends, *LONG_STEP) as (url, proc):
        assert _long_prompts(url) == [200] * 64
        assert proc.poll() is None and status_of(url, "/ready")[0] == 200


def test_the_one_process_pod_exits_when_its_step_loop_is_stuck():
    """With a stall limit below one long step, the one-process pod counts the loop stuck
    and exits 1 (the mechanism that replaces a truly hung engine)."""
    with server_process(BUNDLED, "--frontends", "0", *LONG_STEP, "--engine-stall-timeout", "0.3") as (url, proc):
        threading.Thread(target=_long_prompts, args=(url,), daemon=True).start()
        assert proc.wait(timeout=60) == 1
        assert "stuck" in proc.stdout.read().decode()
