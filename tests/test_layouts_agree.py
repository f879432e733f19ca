"""The offline engine, the one-process pod and the multi-process pod give the same
corrections, token for token, on real sentences (JFLEG dev where ../shared/data has it,
else the bundled model's held-out corpus lines, which its training never saw), with
speculative decoding off and on."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from serving import running_server

from fleetserve.quality.evaluate import ModelCorrector, ServerCorrector, load_eval_set
from fleetserve.quality.text import detokenize
from fleetserve.shared_data import default_eval_set

BUNDLED = Path(__file__).resolve().parents[1] / "models" / "correct-6m"
SENTENCES = 96


def sentences() -> list[str]:
    jfleg = default_eval_set()
    if (jfleg / "dev.src").is_file():
        return [detokenize(s) for s in load_eval_set(jfleg).sources[:SENTENCES]]
    return (BUNDLED / "heldout.txt").read_text().splitlines()[:SENTENCES]


def metric(text: str, name: str) -> float:
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


@pytest.mark.slow
def test_offline_engine_and_both_pod_layouts_correct_alike():
    texts = sentences()
    assert len(texts) == SENTENCES
    offline = ModelCorrector(BUNDLED, max_num_seqs=16, speculative="off").correct(texts)
    for frontends in ("0", "1"):
        for speculative in ("off", "input"):
            with running_server(BUNDLED, "--frontends", frontends, "--max-num-seqs", "16",
                                "--speculative", speculative) as url:
                served = ServerCorrector(url, concurrency=16).correct(texts)
                metrics = httpx.get(url + "/metrics").text
            if speculative == "input":  # /metrics counts the proposals (the core's, via its heartbeat)
                assert metric(metrics, "fleetserve_speculative_accepted_tokens_total") > 0
            assert served == offline, f"--frontends {frontends} --speculative {speculative} differs from offline"
    assert sum(o != t for o, t in zip(offline, texts)) > 0  # the model did correct something
