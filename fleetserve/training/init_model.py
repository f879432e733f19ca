"""Build a Hugging Face model directory with random weights at a chosen shape.

Used by `fleetserve init-model`, by `make run` (until a trained model ships),
by the tests and by the benchmarks. The directory is a real checkpoint: the
same loader that serves a downloaded model serves this one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer

from fleetserve.training.bpe import byte_level_bpe

SAMPLE_TEXT = Path(__file__).parent / "data" / "tokenizer_sample.txt"
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

PRESETS: dict[str, dict[str, Any]] = {
    # Tiny models for tests: seconds to build and run.
    "tiny-llama": dict(
        architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=512,
        tie_word_embeddings=False,
    ),
    "tiny-qwen2": dict(
        architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=512,
        tie_word_embeddings=True,
    ),
    # About 5M parameters: the small-model regime where per-step overhead dominates.
    "5m": dict(
        architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=256, intermediate_size=1280,
        num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, vocab_size=1024,
        tie_word_embeddings=True,
    ),
    # The shape of Qwen2.5-0.5B (use with --load-format dummy: 2 GB of fp32 weights otherwise).
    "qwen2.5-0.5b": dict(
        architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_size=896, intermediate_size=4864,
        num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
        tie_word_embeddings=True, rope_theta=1000000.0, rms_norm_eps=1e-6,
    ),
}


def build_tokenizer(vocab_size: int) -> Tokenizer:
    """A byte-level BPE trained on a small shipped text."""
    return byte_level_bpe(SAMPLE_TEXT.read_text().splitlines(keepends=True), vocab_size, SPECIAL_TOKENS)


def write_tokenizer(out: Path, model_vocab_size: int) -> list[int]:
    """Write tokenizer.json, tokenizer_config.json (ChatML template); return EOS ids."""
    tok = build_tokenizer(min(model_vocab_size, 1024))
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "chat_template": CHATML_TEMPLATE,
    }, indent=2))
    return [tok.token_to_id("<|im_end|>"), tok.token_to_id("<|endoftext|>")]


def random_state_dict(cfg: dict[str, Any], seed: int, std: float) -> dict[str, torch.Tensor]:
    """Hugging Face tensor names and shapes for a Llama/Qwen2 config."""
    gen = torch.Generator().manual_seed(seed)
    h, inter, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hd = cfg.get("head_dim") or h // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    qwen = cfg["model_type"] == "qwen2"

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * std

    sd = {"model.embed_tokens.weight": rand(v, h), "model.norm.weight": torch.ones(h)}
    if not cfg["tie_word_embeddings"]:
        sd["lm_head.weight"] = rand(v, h)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        for name, shape in [("q_proj", (q, h)), ("k_proj", (kv, h)), ("v_proj", (kv, h)), ("o_proj", (h, q))]:
            sd[f"{p}self_attn.{name}.weight"] = rand(*shape)
            if qwen and name != "o_proj":
                sd[f"{p}self_attn.{name}.bias"] = rand(shape[0])
        for name, shape in [("gate_proj", (inter, h)), ("up_proj", (inter, h)), ("down_proj", (h, inter))]:
            sd[f"{p}mlp.{name}.weight"] = rand(*shape)
        sd[f"{p}input_layernorm.weight"] = torch.ones(h)
        sd[f"{p}post_attention_layernorm.weight"] = torch.ones(h)
    return sd


def init_model(
    out: str | Path, preset: str = "5m", weights: bool = True, seed: int = 0, std: float = 0.02,
    **overrides: Any,
) -> Path:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = {
        "hidden_act": "silu", "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "torch_dtype": "float32", **PRESETS[preset], **overrides,
    }
    eos = write_tokenizer(out, cfg["vocab_size"])
    cfg["eos_token_id"] = eos[0]
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    (out / "generation_config.json").write_text(json.dumps({"eos_token_id": eos}, indent=2))
    if weights:
        save_file(random_state_dict(cfg, seed, std), str(out / "model.safetensors"), metadata={"format": "pt"})
    return out
