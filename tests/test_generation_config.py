"""A model's `generation_config.json` supplies the default sampling parameters (as
vLLM does); a request's own values win. The bundled corrector's say greedy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleetserve.model.generation_config import SamplingDefaults

BUNDLED = Path(__file__).resolve().parents[1] / "models" / "correct-6m"


def defaults(tmp_path, cfg) -> SamplingDefaults:
    (tmp_path / "generation_config.json").write_text(json.dumps(cfg))
    return SamplingDefaults.from_dir(tmp_path)


def test_values_present_become_defaults(tmp_path):
    assert SamplingDefaults.from_dir(tmp_path) == SamplingDefaults(1.0, 1.0, 0, None)  # no file: the API's own
    assert defaults(tmp_path, {"temperature": 0.6, "top_p": 0.9, "top_k": 20, "max_new_tokens": 64}) == \
        SamplingDefaults(0.6, 0.9, 20, 64)
    assert defaults(tmp_path, {"do_sample": False, "temperature": 0.6}).temperature == 0.0  # greedy, as HF reads it
    assert defaults(tmp_path, {"eos_token_id": 3}) == SamplingDefaults()


@pytest.mark.parametrize("cfg", [{"temperature": "hot"}, {"top_p": 2.0}, {"top_k": -3}, {"max_new_tokens": 0},
                                 {"temperature": True}, []])
def test_unusable_values_fail_naming_the_file(tmp_path, cfg):
    with pytest.raises(ValueError, match="generation_config.json"):
        defaults(tmp_path, cfg)


def test_the_bundled_model_answers_chat_and_completions_greedily_by_default():
    import httpx
    from serving import serving_in_thread

    from fleetserve.engine.config import EngineConfig
    from fleetserve.server.serve import build_server

    server = build_server(BUNDLED, EngineConfig(max_num_seqs=4))
    chat = {"messages": [{"role": "user", "content": "He dont like insects."}], "max_tokens": 24}
    with serving_in_thread(server) as (url, _), httpx.Client(base_url=url, timeout=60) as client:
        default = [client.post("/v1/chat/completions", json=chat).json()["choices"][0]["message"]["content"]
                   for _ in range(3)]
        greedy = client.post("/v1/chat/completions", json={**chat, "temperature": 0}).json()
        assert default == [greedy["choices"][0]["message"]["content"]] * 3
        # a request's own temperature wins over the model's default
        seeded = [client.post("/v1/completions", json={"prompt": "<|source|>He dont like insects.<|correct|>",
                                                       "temperature": 5.0, "seed": s, "max_tokens": 12}).json()
                  for s in range(4)]
        assert len({r["choices"][0]["text"] for r in seeded}) > 1
