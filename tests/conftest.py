"""Shared fixtures: small real checkpoints, written once per session."""

from __future__ import annotations

import pytest
import torch

from fleetserve.training.init_model import init_model, write_tokenizer

HF_VARIANTS = {
    # Llama with llama3 rope scaling and untied embeddings.
    "llama": dict(
        cls="LlamaForCausalLM", cfg="LlamaConfig", extra=dict(
            tie_word_embeddings=False,
            rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 64})),
    # Qwen2: q/k/v bias, tied embeddings.
    "qwen2": dict(cls="Qwen2ForCausalLM", cfg="Qwen2Config", extra=dict(tie_word_embeddings=True)),
    # Mistral with a sliding window shorter than the prompts, so the window is exercised.
    "mistral": dict(cls="MistralForCausalLM", cfg="MistralConfig", extra=dict(sliding_window=8)),
}


def make_hf_checkpoint(path, variant: str, max_shard_size: str | None = None):
    """A random-weight checkpoint written by transformers itself; returns (dir, hf_model)."""
    import transformers

    spec = HF_VARIANTS[variant]
    cfg = getattr(transformers, spec["cfg"])(
        vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        initializer_range=0.3, **spec["extra"])
    torch.manual_seed(1234)
    model = getattr(transformers, spec["cls"])(cfg).eval()
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(path, **kwargs)
    write_tokenizer(path, 512)
    return path, model


@pytest.fixture(scope="session", params=list(HF_VARIANTS))
def hf_checkpoint(request, tmp_path_factory):
    return make_hf_checkpoint(tmp_path_factory.mktemp(request.param), request.param)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A Llama-shaped random model with a real tokenizer, for engine and server tests."""
    return init_model(tmp_path_factory.mktemp("tiny"), "tiny-llama", seed=3, std=0.3)
