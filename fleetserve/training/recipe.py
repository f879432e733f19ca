"""The demo correction model's recipe: tokenizer, model shape, training loop, files.

`fleetserve train-demo --out DIR` runs it. Everything is seeded, so the same
command on the same corpus gives the same model (up to floating-point
differences between machines). The output is an ordinary Hugging Face model
directory that `fleetserve serve` and `transformers` both load.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from tokenizers import Tokenizer

from fleetserve.model.config import ModelConfig
from fleetserve.model.llama import Transformer, random_init
from fleetserve.model.saver import save_model
from fleetserve.training import model_card
from fleetserve.training.bpe import byte_level_bpe
from fleetserve.training.pairs import PairConfig, alphabet, load_corpus, make_pair, pair_stream, split_holdout

PAD, SOURCE, CORRECT, END = "<|pad|>", "<|source|>", "<|correct|>", "<|end|>"
SPECIAL_TOKENS = [PAD, SOURCE, CORRECT, END]
# The prompt format lives in the model directory (generation_config.json), not in server code.
CORRECTION_PROMPT = SOURCE + "{text}" + CORRECT
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.last and message['role'] == 'user' %}"
    + SOURCE + "{{ message['content'] }}" + CORRECT + "{% endif %}{% endfor %}"
)


@dataclass
class Recipe:
    seed: int = 0
    vocab_size: int = 4096
    hidden_size: int = 256
    intermediate_size: int = 768
    num_layers: int = 6
    num_heads: int = 4
    num_kv_heads: int = 4
    max_seq_len: int = 256  # source + target tokens of one training pair
    steps: int = 6000
    batch_size: int = 32
    lr: float = 1.5e-3
    warmup: int = 300
    weight_decay: float = 0.01
    holdout_share: float = 0.02
    autocast_bf16: bool = True  # bf16 matrix products where the CPU has them; master weights stay fp32
    threads: int | None = None
    pairs: PairConfig = field(default_factory=PairConfig)
    # A second, conservative phase: more clean pairs and fewer errors teach the model
    # to leave alone what it does not recognise (precision matters more than recall for GLEU).
    conservative_steps: int = 1500
    conservative_lr: float = 5e-4
    conservative_pairs: PairConfig = field(default_factory=lambda: PairConfig(clean_share=0.4, words_per_error=10.0))

    def phases(self) -> list[Phase]:
        out = [Phase("main", self.steps, self.lr, self.warmup, self.pairs, 2)]
        if self.conservative_steps:
            out.append(Phase("conservative", self.conservative_steps, self.conservative_lr, 100,
                             self.conservative_pairs, 4))
        return out

    def model_config(self) -> dict[str, Any]:
        return {
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
            "hidden_size": self.hidden_size, "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers, "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads, "vocab_size": self.vocab_size,
            "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
            "tie_word_embeddings": True, "torch_dtype": "float32",
        }


def train_tokenizer(sentences: list[str], recipe: Recipe) -> Tokenizer:
    """Byte-level BPE over the clean sentences and a corrupted copy of each, so
    misspelt words split into sensible pieces rather than single bytes."""
    rng = random.Random(recipe.seed + 1)
    noisy = [make_pair([s], rng, recipe.pairs)[0] for s in sentences]
    return byte_level_bpe(sentences + noisy, recipe.vocab_size, SPECIAL_TOKENS)


class Batcher:
    """Training batches of (input ids, labels): the loss counts only the corrected
    text and the end token. Pairs are drawn in pools and sorted by length so a
    batch carries little padding."""

    def __init__(self, tok: Tokenizer, sentences: list[str], recipe: Recipe, seed: int):
        self.tok, self.recipe = tok, recipe
        self.ids = {name: tok.token_to_id(name) for name in SPECIAL_TOKENS}
        self.stream = pair_stream(sentences, seed, recipe.pairs)
        self.rng = random.Random(seed)
        self.ready: list[list[tuple[list[int], int]]] = []

    def encode(self, pairs: list[tuple[str, str]]) -> list[tuple[list[int], int]]:
        """(token ids of the whole sequence, length of the prompt) per pair that fits."""
        srcs = self.tok.encode_batch([s for s, _ in pairs])
        tgts = self.tok.encode_batch([t for _, t in pairs])
        out = []
        for s, t in zip(srcs, tgts):
            prompt = [self.ids[SOURCE], *s.ids, self.ids[CORRECT]]
            seq = prompt + t.ids + [self.ids[END]]
            if len(seq) <= self.recipe.max_seq_len:
                out.append((seq, len(prompt)))
        return out

    def _refill(self) -> None:
        b = self.recipe.batch_size
        pool = self.encode([next(self.stream) for _ in range(b * 16)])
        pool.sort(key=lambda x: len(x[0]))
        batches = [pool[i:i + b] for i in range(0, len(pool) - b + 1, b)]
        self.rng.shuffle(batches)
        self.ready.extend(batches)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.ready:
            self._refill()
        return collate(self.ready.pop(), self.ids[PAD])


def collate(batch: list[tuple[list[int], int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(seq) for seq, _ in batch) - 1
    inputs = torch.full((len(batch), width), pad, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    for i, (seq, prompt_len) in enumerate(batch):
        n = len(seq) - 1
        inputs[i, :n] = torch.tensor(seq[:-1])
        labels[i, prompt_len - 1:n] = torch.tensor(seq[prompt_len:])
    return inputs, labels


def init_weights(model: Transformer, seed: int) -> None:
    # Residual outputs scaled down by depth (GPT-2 style): training starts stabler.
    random_init(model, seed, residual_std=0.02 / math.sqrt(2 * model.cfg.num_layers))


def loss_of(model: Transformer, inputs: torch.Tensor, labels: torch.Tensor, bf16: bool) -> torch.Tensor:
    keep = labels != -100
    # The plain (math) attention: at these lengths (~80 tokens) PyTorch's CPU flash-attention
    # backward took a fifth of each training step, the math path's batched products a tenth.
    with sdpa_kernel(SDPBackend.MATH), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(inputs, keep)
    return F.cross_entropy(logits.float(), labels[keep])


@dataclass(frozen=True)
class Phase:
    """A stretch of training with its own optimizer, schedule and pair mix."""
    name: str
    steps: int
    lr: float
    warmup: int
    pairs: PairConfig
    seed_offset: int


def lr_at(step: int, phase: Phase) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < phase.warmup:
        return phase.lr * (step + 1) / phase.warmup
    progress = (step - phase.warmup) / max(1, phase.steps - phase.warmup)
    return phase.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def write_model_files(out: Path, tok: Tokenizer, recipe: Recipe, sentences: list[str]) -> dict[str, Any]:
    """config.json, generation_config.json (with the characters the model is trained on: what
    /v1/correct lets it read), the tokenizer's files; returns the config."""
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    end, pad = tok.token_to_id(END), tok.token_to_id(PAD)
    cfg = {**recipe.model_config(), "eos_token_id": end, "pad_token_id": pad, "bos_token_id": None}
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    (out / "generation_config.json").write_text(json.dumps({
        "eos_token_id": [end], "pad_token_id": pad, "correction_prompt": CORRECTION_PROMPT,
        "correction_alphabet": alphabet(sentences),
        "do_sample": False,  # a corrector decodes greedily: chat and completions default to it
    }, indent=2) + "\n")
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None, "eos_token": END, "pad_token": PAD,
        "chat_template": CHAT_TEMPLATE, "model_max_length": 512,
    }, indent=2) + "\n")
    return cfg


def train(out: str | Path, corpus: str | Path, recipe: Recipe, progress: bool = True,
          from_main_phase: str | Path | None = None) -> dict[str, Any]:
    """Build the model directory at `out`; returns the run's figures (also in `training.json`).
    `from_main_phase`: a directory this recipe wrote after its main phase; only the
    later phases run, starting from its weights and tokenizer."""
    out = Path(out)
    started = time.monotonic()
    torch.manual_seed(recipe.seed)
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    sentences = load_corpus(corpus)
    train_sents, holdout = split_holdout(sentences, recipe.holdout_share, recipe.seed)
    log = _printer(progress)
    log(f"corpus: {len(sentences)} sentences ({len(train_sents)} train, {len(holdout)} held out)")

    phases = recipe.phases()
    history: list[dict[str, Any]] = []
    if from_main_phase is None:
        tok = train_tokenizer(train_sents, recipe)
        recipe.vocab_size = tok.get_vocab_size()
        cfg_dict = write_model_files(out, tok, recipe, train_sents)
        model = Transformer(ModelConfig.from_dict(cfg_dict))
        model.tie_weights()
        init_weights(model, recipe.seed)
    else:
        from fleetserve.model.loader import load_model

        start = Path(from_main_phase)
        tok = Tokenizer.from_file(str(start / "tokenizer.json"))
        recipe.vocab_size = tok.get_vocab_size()
        theirs = json.loads((start / "config.json").read_text())
        shape = {k: theirs.get(k) for k in recipe.model_config()}
        if shape != recipe.model_config():
            raise ValueError(f"{start}: its model shape differs from this recipe's; pass the same options "
                             f"that trained it ({shape} vs {recipe.model_config()})")
        write_model_files(out, tok, recipe, train_sents)
        model = load_model(start).requires_grad_(True)
        earlier = json.loads((start / "training.json").read_text())
        history = earlier.get("history", [])
        phases = phases[1:]
        log(f"starting from the main phase in {start}")
    params = sum(p.numel() for p in model.parameters())
    log(f"model: {params / 1e6:.2f}M parameters; tokenizer: {recipe.vocab_size} tokens")

    held = Batcher(tok, holdout, recipe, recipe.seed + 3)
    held_batches = [held.next() for _ in range(4)]
    tokens = 0
    for phase in phases:
        tokens += run_phase(model, tok, train_sents, recipe, phase, held_batches, history, progress)
    model.eval()
    save_model(model, out)
    figures = {
        "recipe": asdict(recipe), "parameters": params, "train_sentences": len(train_sents),
        "heldout_sentences": len(holdout), "target_tokens_trained": tokens,
        "training_seconds": round(time.monotonic() - started, 1), "history": history,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }
    if from_main_phase is not None:
        figures["main_phase_from"] = str(from_main_phase)
        figures["main_phase_seconds"] = earlier.get("training_seconds")
    (out / "training.json").write_text(json.dumps(figures, indent=2) + "\n")
    (out / "heldout.txt").write_text("\n".join(holdout) + "\n")
    model_card.write(out, figures)
    log(f"wrote {out} in {figures['training_seconds'] / 60:.1f} min")
    return figures


def run_phase(model: Transformer, tok: Tokenizer, sentences: list[str], recipe: Recipe, phase: Phase,
              held_batches: list, history: list[dict[str, Any]], progress: bool) -> int:
    """Train one phase with a fresh AdamW; returns the target tokens trained on."""
    log = _printer(progress)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=phase.lr, betas=(0.9, 0.98))
    batches = Batcher(tok, sentences, replace(recipe, pairs=phase.pairs), recipe.seed + phase.seed_offset)
    model.train()
    smooth, t0, tokens = None, time.monotonic(), 0
    for step in range(phase.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, phase)
        inputs, labels = batches.next()
        loss = loss_of(model, inputs, labels, recipe.autocast_bf16)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        tokens += int((labels != -100).sum())
        smooth = loss.item() if smooth is None else 0.98 * smooth + 0.02 * loss.item()
        if progress and (step % 10 == 0 or step == phase.steps - 1):
            elapsed = time.monotonic() - t0
            eta = elapsed / (step + 1) * (phase.steps - step - 1)
            print(f"\r{phase.name}: step {step + 1}/{phase.steps}  loss {smooth:.3f}  "
                  f"{(step + 1) * recipe.batch_size / elapsed:.0f} pairs/s  eta {eta / 60:.1f} min   ",
                  end="", file=sys.stderr, flush=True)
        if (step + 1) % 500 == 0 or step == phase.steps - 1:
            held_loss = heldout_loss(model, held_batches, recipe.autocast_bf16)
            history.append({"phase": phase.name, "step": step + 1, "train_loss": round(smooth, 4),
                            "heldout_loss": round(held_loss, 4)})
            if progress:
                print(file=sys.stderr)
            log(f"{phase.name} step {step + 1}: held-out loss {held_loss:.3f}")
    return tokens


def heldout_loss(model: Transformer, batches: list[tuple[torch.Tensor, torch.Tensor]], bf16: bool) -> float:
    model.eval()
    with torch.no_grad():
        losses = [loss_of(model, x, y, bf16).item() for x, y in batches]
    model.train()
    return sum(losses) / len(losses)


def _printer(enabled: bool):
    def log(msg: str) -> None:
        if enabled:
            print(msg, file=sys.stderr, flush=True)
    return log
