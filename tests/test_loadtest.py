"""The load tester against real local HTTP servers it starts: the stub server
(`fleetserve stub-server`, a real server with set latency, errors and answers
but no model) and, once, the real pod server with the bundled model."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from fleetserve.loadtest.profile import parse_duration, parse_profile, parse_rate
from fleetserve.loadtest.runner import LoadTestOptions, run_loadtest
from fleetserve.loadtest.slo import check, goodput_thresholds, parse_slo
from fleetserve.loadtest.stub_server import parse_delay
from serving import free_port, stats, stub

pytestmark = pytest.mark.slow  # starts processes or servers (make test-quick skips it)


def run(url: str, **kw):
    kw.setdefault("progress", False)
    return run_loadtest(LoadTestOptions(url=url, **kw))


# ---- profiles --------------------------------------------------------------------------------

def test_profiles_parse_and_schedule_the_expected_load():
    assert parse_duration("500ms") == 0.5 and parse_duration("2m") == 120 and parse_rate("1.5k") == 1500
    ramp = parse_profile("ramp:0..100@10s")
    due = ramp.arrivals("constant")
    assert len(due) == 500
    assert (due < 5).sum() == 125  # a linear ramp sends a quarter of its requests in the first half
    poisson = ramp.arrivals("poisson", seed=1)
    assert abs(len(poisson) - 500) < 4 * np.sqrt(500) and np.all(np.diff(poisson) >= 0)
    step = parse_profile("step:10@1s,30@1s").arrivals("constant")
    assert (step < 1).sum() == 10 and (step >= 1).sum() == 30
    day = parse_profile("diurnal:0..100@100s")
    assert day.expected_requests() == pytest.approx(5000, rel=1e-3)
    counts = np.histogram(day.arrivals("constant"), bins=4, range=(0, 100))[0]
    assert counts[1] > counts[0] * 2 and counts[2] > counts[3] * 2  # peak in the middle of the "day"
    chained = parse_profile("constant:10@2s+ramp:10..30@2s")
    assert chained.duration == 4 and len(chained.arrivals("constant")) == 60


@pytest.mark.parametrize("bad, message", [
    ("ramp:10@5s", "not a FROM..TO range"), ("constant:10", "DURATION"), ("sine:1..2@3s", "unknown profile kind"),
    ("constant:0@5s", "never sends"), ("constant:x@5s", "not a rate"), ("constant:5@-1s", "not a duration"),
])
def test_bad_profiles_say_what_is_wrong(bad, message):
    with pytest.raises(ValueError, match=message):
        parse_profile(bad)


def test_slo_parsing_and_goodput_thresholds():
    objs = parse_slo("p99_e2e<1s, error_rate<0.0001, p90_ttft<200ms, availability>=0.999")
    assert [o.path for o in objs] == [("e2el", "p99"), ("error_rate",), ("ttft", "p90"), ("availability",)]
    assert goodput_thresholds(objs) == {"e2el": 1.0, "ttft": 0.2}
    summary = {"overall": {"e2el": {"p99": 1500.0}, "error_rate": 0.0, "ttft": {"p90": 100.0}, "availability": 1.0,
                           "sent_requests": 10}, "windows": []}
    failures = check(objs, summary)
    assert [str(f) for f in failures] == ["SLO p99_e2e<1s failed overall: 1500.0 ms"]
    for bad in ("p98_e2el<1s", "p99_speed<1s", "error_rate<lots", "p99_e2el"):
        with pytest.raises(ValueError, match="SLO"):
            parse_slo(bad)


# ---- against the stub server ------------------------------------------------------------------

def test_percentiles_match_the_injected_latency_distribution():
    delay = parse_delay("lognormal:40ms,0.5")
    with stub("--delay", "lognormal:40ms,0.5") as url:
        rep, status = run(url, profile="constant:300@8s")
    e2el = rep["summary"]["overall"]["e2el"]
    assert status == 0 and rep["summary"]["overall"]["sent_requests"] > 2000
    for stat, q in (("median", 0.5), ("p90", 0.9), ("p99", 0.99)):
        expected_ms = delay.quantile(q) * 1e3
        # timers tick in whole milliseconds and the request itself takes a little
        assert expected_ms * 0.93 - 1 < e2el[stat] < expected_ms * 1.12 + 3, (stat, e2el[stat], expected_ms)


def test_an_injected_error_rate_is_reported_exactly():
    with stub("--error-rate", "0.01", "--seed", "3") as url:
        rep, _ = run(url, profile="constant:500@6s", arrival="constant")
        served = stats(url)
    o = rep["summary"]["overall"]
    assert o["sent_requests"] == served["requests"] == 3000
    assert o["errors"] == {"http_500": served["failed"]}
    assert 0.006 < o["error_rate"] < 0.014 and o["availability"] == pytest.approx(1 - o["error_rate"])
    assert sum(w["errors"].get("http_500", 0) for w in rep["summary"]["windows"]) == served["failed"]


def test_slo_gate_fails_when_the_server_turns_slow_in_the_second_half():
    slo = "p99_e2el<500ms,error_rate<0.01"
    with stub("--delay", "5ms", "--slow-after", "3s", "--slow-delay", "800ms") as url:
        rep, status = run(url, profile="ramp:20..60@6s", window=1.0, slo=slo)
    assert status == 1 and not rep["slo"]["passed"]
    failed_windows = [f for f in rep["slo"]["failures"] if "window" in f]
    assert failed_windows and all(re.search(r"window [3-5]-[4-6]s", f) for f in failed_windows), failed_windows
    assert any(f.startswith("SLO p99_e2el<500ms failed overall") for f in rep["slo"]["failures"])
    with stub("--delay", "5ms") as url:
        rep, status = run(url, profile="ramp:20..60@6s", window=1.0, slo=slo)
    assert status == 0 and rep["slo"] == {"spec": slo, "passed": True, "failures": []}


def test_shadow_agrees_with_itself_and_notices_a_candidate_that_answers_differently(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(f"Sentence number {i} is here." for i in range(200)) + "\n")
    with stub() as primary, stub("--disagree", "0.3") as other, stub("--error-rate", "0.2") as flaky:
        same, _ = run(primary, profile="constant:100@3s", arrival="constant", prompts=str(prompts), endpoint="chat", shadow=primary)
        differs, _ = run(primary, profile="constant:100@3s", arrival="constant", prompts=str(prompts), endpoint="chat", shadow=other)
        failing, _ = run(primary, profile="constant:100@3s", arrival="constant", prompts=str(prompts), endpoint="chat", shadow=flaky)
    assert same["shadow"]["exact_match_rate"] == 1.0 and same["shadow"]["compared"] == 300
    d = differs["shadow"]
    assert 0.55 < d["exact_match_rate"] < 0.85 and d["examples"]
    assert d["examples"][0]["candidate"].startswith("other") and "Sentence number" in d["examples"][0]["prompt"]
    # the candidate's failures are its own: the primary's figures stay clean
    assert failing["shadow"]["candidate_errors"].get("http_500", 0) > 20
    assert failing["summary"]["overall"]["errors"] == {} and failing["summary"]["overall"]["availability"] == 1.0


def test_streaming_gives_token_timings():
    with stub("--delay", "20ms", "--token-interval", "5ms") as url:
        rep, _ = run(url, profile="constant:20@3s", stream=True, max_tokens=10, slo="p99_ttft<1s")
    o = rep["summary"]["overall"]
    assert 18 < o["ttft"]["median"] < 30
    assert 4 < o["itl"]["median"] < 8 and 4 < o["tpot"]["median"] < 8
    # 20 ms, 9 gaps of 5 ms between tokens, 2 more before the usage event and [DONE]; timers tick in ms
    assert 60 < o["e2el"]["median"] < 120
    assert o["output_throughput"] == pytest.approx(10 * o["request_throughput"], rel=0.2)


def test_a_client_that_cannot_keep_up_reports_lag_and_drops_nothing():
    # one connection and a 50 ms server: at 60 requests/s most requests wait for the connection
    with stub("--delay", "50ms") as url:
        rep, _ = run(url, profile="constant:60@2s", arrival="constant", max_connections=1, timeout=60)
    o = rep["summary"]["overall"]
    assert o["sent_requests"] == o["offered_requests"] == 120 and o["completed_requests"] == 120
    assert o["client_lag"]["late_requests"] > 60 and o["client_lag"]["max_ms"] > 1000


def test_timeouts_and_refused_connections_are_errors_of_their_own_kind():
    with stub("--delay", "3s") as url:
        rep, _ = run(url, profile="constant:10@1s", arrival="constant", timeout=0.3)
    assert rep["summary"]["overall"]["errors"] == {"timeout": 10}
    port = free_port()  # its socket is closed again: nothing listens there
    rep, _ = run(f"http://127.0.0.1:{port}", profile="constant:10@1s", arrival="constant", model="m")
    assert rep["summary"]["overall"]["errors"] == {"connection": 10}
    with pytest.raises(ConnectionError, match="cannot reach"):
        run(f"http://127.0.0.1:{port}", profile="constant:10@1s")


def test_several_sender_processes_share_the_schedule():
    with stub() as url:
        rep, _ = run(url, profile="constant:200@2s", arrival="constant", workers=2)
        served = stats(url)
    o = rep["summary"]["overall"]
    assert o["sent_requests"] == o["completed_requests"] == served["requests"] == 400


def test_cli_writes_json_png_and_html_and_rejects_bad_options(tmp_path):
    with stub("--delay", "5ms") as url:
        r = subprocess.run([sys.executable, "-m", "fleetserve", "loadtest", url, "--profile", "ramp:10..40@3s",
                            "--window", "1", "--out", str(tmp_path / "rep"), "--slo", "p99_e2el<1s"],
                           capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "SLO p99_e2el<1s: met" in r.stdout and "offered" in r.stderr  # the progress line
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert len(rep["summary"]["windows"]) == 3
    assert (tmp_path / "rep" / "report.png").read_bytes()[:4] == b"\x89PNG"
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "<svg" in page and "src=" not in page  # self-contained
    r = subprocess.run([sys.executable, "-m", "fleetserve", "loadtest", "http://127.0.0.1:1", "--profile", "ramp:5"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "FROM..TO" in r.stderr
    r = subprocess.run([sys.executable, "-m", "fleetserve", "loadtest", "http://127.0.0.1:1", "--endpoint", "chat"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--prompts FILE" in r.stderr


# ---- against the real pod server ---------------------------------------------------------------

def test_against_fleetserve_serve_with_the_bundled_model(tmp_path):
    from pathlib import Path

    from serving import running_server

    model = Path(__file__).resolve().parent.parent / "models" / "correct-6m"
    prompts = tmp_path / "learner.txt"
    prompts.write_text("She go to school every days.\nI has a apple.\nThey was late yesterday.\n")
    with running_server(model, "--max-num-seqs", "8") as url:
        corr, status = run(url, profile="constant:4@2s", arrival="constant", endpoint="correct",
                           prompts=str(prompts), shadow=url, slo="error_rate<0.01")
        streamed, _ = run(url, profile="constant:4@2s", arrival="constant", stream=True, max_tokens=8,
                          vocab_size=4000)
    assert status == 0 and corr["summary"]["overall"]["completed_requests"] == 8
    assert corr["shadow"]["exact_match_rate"] == 1.0  # greedy: the same server answers the same
    o = streamed["summary"]["overall"]
    assert o["completed_requests"] == 8 and o["errors"] == {}
    assert o["output_throughput"] == pytest.approx(8 * o["request_throughput"])  # ignore_eos: all 8 tokens
    assert o["ttft"]["median"] is not None and o["itl"]["median"] is not None


def test_knee_is_the_last_window_before_latency_breaks():
    from fleetserve.loadtest.metrics import knee

    def w(start, offered, achieved, p99, errors=0.0):
        return {"start_s": start, "sent_requests": 10, "offered_rate": offered, "request_throughput": achieved,
                "e2el": {"p99": p99}, "error_rate": errors}

    ramp = [w(0, 10, 10, 50), w(5, 20, 20, 80), w(10, 30, 29, 400), w(15, 40, 31, 1500), w(20, 50, 31, 300)]
    assert knee(ramp)["offered_rate"] == 30
    assert knee(ramp, p99_limit_ms=100)["offered_rate"] == 20
    assert knee([w(0, 10, 10, 50, errors=0.1)]) is None
    assert knee([w(0, 10, 5, 50)])["offered_rate"] == 10  # the first window's answers may still be in flight
    assert knee([w(0, 10, 10, 50), w(5, 20, 12, 50)])["offered_rate"] == 10  # then fell behind the offered rate
