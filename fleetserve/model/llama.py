"""The Llama-family decoder (Llama, Mistral, Qwen2) with a static per-slot KV cache.

One file, in the style of gpt-fast: q/k/v and gate/up are fused into single
matrix products (fewer, larger calls matter on a small model) and the KV cache is
preallocated per slot. One layer loop serves two entry points: `step`, the
engine's, runs any mix of sequences, each with one or more query tokens at any
position (a new prompt, a decoding slot's next token, several draft tokens to
verify) against the KV cache (see `StepInputs`); `forward` (whole sequences, no
cache) is for training and scoring.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fleetserve.model.config import ModelConfig


def random_init(model: nn.Module, seed: int, std: float = 0.02, residual_std: float | None = None) -> None:
    """Norms at one, biases at zero, other weights normal(0, std) drawn in parameter order;
    o_proj and down_proj (the residual outputs) use `residual_std` where given."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.zero_()
            else:
                residual = residual_std is not None and name.endswith(("o_proj.weight", "down_proj.weight"))
                p.copy_(torch.randn(p.shape, generator=gen) * (residual_std if residual else std))


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rope_inv_freq(cfg: ModelConfig) -> torch.Tensor:
    """Inverse frequencies, computed exactly as transformers does (float32 in torch)."""
    dim = cfg.head_dim
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    s = cfg.rope_scaling
    kind = s.get("rope_type", "default")
    if kind == "linear":
        inv = inv / float(s["factor"])
    elif kind == "llama3":
        factor = float(s["factor"])
        low, high = float(s.get("low_freq_factor", 1.0)), float(s.get("high_freq_factor", 4.0))
        old_len = float(s.get("original_max_position_embeddings", 8192))
        wavelen = 2 * torch.pi / inv
        scaled = torch.where(wavelen > old_len / low, inv / factor, inv)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old_len / high) & ~(wavelen > old_len / low)
        inv = torch.where(medium, smoothed, scaled)
    return inv


def rope_tables(cfg: ModelConfig, length: int, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of every position below `length`: [length, head_dim] each."""
    freqs = torch.arange(length, dtype=torch.float32)[:, None] * rope_inv_freq(cfg)[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype=dtype, device=device), emb.sin().to(dtype=dtype, device=device)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


@dataclass
class AttentionGroup:
    """Sequences whose queries attend to the KV cache in one call: `num_seqs` sequences
    of at most `q_len` query tokens, rows `rows` of the step. `slots`: their cache slots,
    or None for slots first_slot..first_slot+num_seqs-1 (read as views of the cache, never
    gathered). `pad`:
    where each row goes in the padded [num_seqs * q_len] layout (None when every
    sequence has exactly q_len tokens). `mask` [num_seqs, 1, heads per KV head * q_len,
    kv_len], additive (0 or -inf, in the model's dtype): the cache positions each query row
    sees (query head g of a KV head, token t at row g * q_len + t)."""

    rows: slice
    num_seqs: int
    q_len: int
    slots: torch.Tensor | None
    pad: torch.Tensor | None
    mask: torch.Tensor
    first_slot: int = 0


@dataclass
class StepInputs:
    """One serving step: R query tokens, grouped (see AttentionGroup). Each row's K/V is
    written to the cache at (its slot, its position) before the attention reads the cache.
    `logit_rows`: the rows whose next-token logits the step returns, in the caller's order."""

    tokens: torch.Tensor  # [R]
    positions: torch.Tensor  # [R]
    slots: torch.Tensor  # [R] the cache slot of each row
    groups: list[AttentionGroup]
    logit_rows: torch.Tensor  # [M]


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.q_size = cfg.num_heads * cfg.head_dim
        self.kv_size = cfg.num_kv_heads * cfg.head_dim
        self.qkv_proj = nn.Linear(cfg.hidden_size, self.q_size + 2 * self.kv_size, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(self.q_size, cfg.hidden_size, bias=cfg.o_bias)
        self.k_cache: torch.Tensor | None = None  # [slots, kv_heads, max_len, head_dim]
        self.v_cache: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, ctx: StepContext | WholeSequences) -> torch.Tensor:
        """x [..., hidden] -> [..., hidden]: project, rotate, attend as `ctx` says, project back."""
        lead = x.shape[:-1]
        qk, v = self.qkv_proj(x).split([self.q_size + self.kv_size, self.kv_size], dim=-1)
        # Q and K rotated together: one set of elementwise calls instead of two (the same
        # arithmetic on every element, so the same numbers).
        qk = qk.reshape(*lead, self.num_heads + self.num_kv_heads, self.head_dim)
        qk = qk * ctx.cos + rotate_half(qk) * ctx.sin
        q, k = qk.split([self.num_heads, self.num_kv_heads], dim=-2)
        v = v.reshape(*lead, self.num_kv_heads, self.head_dim)
        return self.o_proj(ctx.attend(self, q, k, v).reshape(*lead, self.q_size))


class WholeSequences:
    """Attention context of `Transformer.forward`: whole sequences [N, T], causal, no cache."""

    def __init__(self, cfg: ModelConfig, t: int, dtype: torch.dtype, device):
        cos, sin = rope_tables(cfg, t, dtype, device)
        self.cos, self.sin = cos[None, :, None], sin[None, :, None]  # against [N, T, heads, D]
        self.mask = None
        if cfg.sliding_window is not None and t > cfg.sliding_window:
            i = torch.arange(t, device=device)
            d = i[:, None] - i[None, :]
            self.mask = (d >= 0) & (d < cfg.sliding_window)

    def attend(self, attn: Attention, q, k, v) -> torch.Tensor:
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if self.mask is None:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        else:
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask, enable_gqa=True)
        return o.transpose(1, 2)


class StepContext:
    """Attention context of `Transformer.step`: flat rows against the KV cache."""

    def __init__(self, model: Transformer, inputs: StepInputs):
        self.inputs = inputs
        self.cos = model.cos[inputs.positions][:, None]  # against [R, heads, D]
        self.sin = model.sin[inputs.positions][:, None]

    def attend(self, attn: Attention, q, k, v) -> torch.Tensor:
        """q [R, heads, D], k and v [R, kv_heads, D] -> [R, heads, D]."""
        x = self.inputs
        attn.k_cache[x.slots, :, x.positions] = k
        attn.v_cache[x.slots, :, x.positions] = v
        kv_heads, d = attn.num_kv_heads, attn.head_dim
        group = attn.num_heads // kv_heads
        outs = []
        for g in x.groups:
            s, t, kv_len = g.num_seqs, g.q_len, g.mask.shape[-1]
            qg = q[g.rows]
            if g.pad is not None:
                padded = qg.new_zeros(s * t, attn.num_heads, d)
                padded[g.pad] = qg
                qg = padded
            if g.slots is None:
                a, b = g.first_slot, g.first_slot + s
                keys, values = attn.k_cache[a:b, :, :kv_len], attn.v_cache[a:b, :, :kv_len]
            else:
                keys, values = attn.k_cache[g.slots, :, :kv_len], attn.v_cache[g.slots, :, :kv_len]
            # Grouped-query attention without repeating K/V: the query heads that share
            # one KV head become that head's query rows.
            qg = qg.view(s, t, kv_heads, group, d).permute(0, 2, 3, 1, 4).reshape(s, kv_heads, group * t, d)
            o = F.scaled_dot_product_attention(qg, keys, values, attn_mask=g.mask)
            o = o.view(s, kv_heads, group, t, d).permute(0, 3, 1, 2, 4).reshape(s * t, attn.num_heads, d)
            outs.append(o if g.pad is None else o[g.pad])
        return outs[0] if len(outs) == 1 else torch.cat(outs)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_up_proj = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=cfg.mlp_bias)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=cfg.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.self_attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class Transformer(nn.Module):
    """Parameter names follow the Hugging Face layout minus the `model.` prefix,
    except the fused `qkv_proj` and `gate_up_proj` (see `fused_shards`)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        # Left uninitialised: every caller fills the weights (a checkpoint, random_init, the training
        # recipe's init), and Embedding's own normal_ on the meta device imports torch._dynamo,
        # 1.5 s of a pod's start.
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size,
                                         _weight=torch.empty(cfg.vocab_size, cfg.hidden_size))
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.cos: torch.Tensor | None = None
        self.sin: torch.Tensor | None = None
        self.kv_cache: torch.Tensor | None = None  # [layers, 2 (K, V), slots, kv_heads, max_len, head_dim]
        self.max_len = 0

    def tie_weights(self) -> None:
        if self.cfg.tie_word_embeddings and isinstance(self.lm_head, nn.Linear):  # a quantized head has its own
            self.lm_head.weight = self.embed_tokens.weight

    def fused_shards(self) -> dict[str, tuple[str, int, int]]:
        """Checkpoint projection name -> (fused module name, row offset, rows)."""
        c = self.cfg
        q, kv, inter = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim, c.intermediate_size
        return {
            "q_proj": ("qkv_proj", 0, q),
            "k_proj": ("qkv_proj", q, kv),
            "v_proj": ("qkv_proj", q + kv, kv),
            "gate_proj": ("gate_up_proj", 0, inter),
            "up_proj": ("gate_up_proj", inter, inter),
        }

    def setup_cache(self, num_slots: int, max_len: int) -> None:
        """Preallocate the KV cache of every slot and the rope tables up to max_len."""
        dtype = self.embed_tokens.weight.dtype
        device = self.embed_tokens.weight.device
        c = self.cfg
        # One tensor for every layer's K and V: a slot moved (the scheduler's compaction) is one copy.
        self.kv_cache = torch.zeros((len(self.layers), 2, num_slots, c.num_kv_heads, max_len, c.head_dim),
                                    dtype=dtype, device=device)
        for layer, kv in zip(self.layers, self.kv_cache):
            layer.self_attn.k_cache, layer.self_attn.v_cache = kv[0], kv[1]
        self.cos, self.sin = rope_tables(c, max_len, dtype, device)
        self.max_len = max_len

    def _layers(self, h: torch.Tensor, ctx: StepContext | WholeSequences) -> torch.Tensor:
        for layer in self.layers:
            h = h + layer.self_attn(layer.input_layernorm(h), ctx)
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        return h

    def forward(self, tokens: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Training and scoring, no KV cache: logits of every position [N, T, vocab], or with
        `keep` (a boolean [N, T]) of the kept positions only [K, vocab]. A correction pair's loss
        counts only its target half, so `keep` spares the vocabulary product for the prompt half."""
        ctx = WholeSequences(self.cfg, tokens.shape[1], self.embed_tokens.weight.dtype, tokens.device)
        h = self._layers(self.embed_tokens(tokens), ctx)
        return self.lm_head(self.norm(h if keep is None else h[keep]))

    @torch.inference_mode()
    def step(self, inputs: StepInputs) -> torch.Tensor:
        """The engine's one pass: writes the K/V of every row into the cache and returns the
        logits of `inputs.logit_rows` [M, vocab] (float32). Every projection and MLP runs once
        over all rows, whatever mix of prompts and decoding slots they come from."""
        h = self._layers(self.embed_tokens(inputs.tokens), StepContext(self, inputs))
        return self.lm_head(self.norm(h[inputs.logit_rows])).float()
