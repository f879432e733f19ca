"""The Llama-family decoder (Llama, Mistral, Qwen2) with a static per-slot KV cache.

One file, in the style of gpt-fast: q/k/v and gate/up are fused into single
matrix products (fewer, larger calls matter on a small model), the KV cache is
preallocated per slot, and there are exactly two entry points the engine calls:
`prefill` (new requests, positions 0..T-1, any slots) and `decode` (one token
for each of the slots 0..B-1, so cache reads are views, never gathers).
`forward` (whole sequences, no cache) is for training and scoring.
"""

from __future__ import annotations

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

    def _qkv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        b, t, _ = x.shape
        return self._split_rope(self.qkv_proj(x), b, t, cos, sin)

    def _split_rope(self, qkv: torch.Tensor, b: int, t: int, cos: torch.Tensor, sin: torch.Tensor):
        """Projected rows [b*t, q+2kv] (or [b, t, ...]) -> q, k, v [b, heads, t, head_dim] with rope applied."""
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.reshape(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k = k.reshape(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = v.reshape(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        return q, k, v

    def forward(self, x, cos, sin, mask: torch.Tensor | None, slots: torch.Tensor | None = None) -> torch.Tensor:
        """Causal attention over the whole sequence; with `slots`, K/V also go to those cache slots."""
        b, t, _ = x.shape
        q, k, v = self._qkv(x, cos, sin)
        return self.o_proj(self._attend_prompt(q, k, v, mask, slots).reshape(b, t, self.q_size))

    def _attend_prompt(self, q, k, v, mask: torch.Tensor | None, slots: torch.Tensor | None) -> torch.Tensor:
        """Attention of whole prompts [b, heads, t, d] -> [b, t, heads, d]."""
        t = q.shape[2]
        if slots is not None:
            self.k_cache[slots, :, :t] = k
            self.v_cache[slots, :, :t] = v
        if mask is None:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        else:
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        return o.transpose(1, 2)

    def decode(self, x, cos, sin, positions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        q, k, v = self._qkv(x, cos, sin)
        return self.o_proj(self._attend_cached(q, k, v, positions, mask).reshape(b, 1, self.q_size))

    def _attend_cached(self, q, k, v, positions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One new token per slot 0..b-1 [b, heads, 1, d] against the cache -> [b, heads, 1, d]."""
        b = q.shape[0]
        kv_len = mask.shape[-1]
        rows = torch.arange(b, device=q.device)
        self.k_cache[rows, :, positions] = k[:, :, 0]
        self.v_cache[rows, :, positions] = v[:, :, 0]
        keys = self.k_cache[:b, :, :kv_len]
        values = self.v_cache[:b, :, :kv_len]
        # Grouped-query attention without repeating K/V: the query heads that share
        # one KV head become that head's "query positions".
        group = self.num_heads // self.num_kv_heads
        q = q.view(b, self.num_kv_heads, group, self.head_dim)
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)

    def mixed(self, x: torch.Tensor, b: int, n: int, t: int, dec_rope, pre_rope, positions: torch.Tensor,
              dec_mask: torch.Tensor, pre_mask: torch.Tensor | None, slots: torch.Tensor) -> torch.Tensor:
        """Rows [b + n*t, hidden]: b decoding slots then n prompts of t tokens. One
        projection for all rows; attention per kind."""
        qkv = self.qkv_proj(x)
        dq, dk, dv = self._split_rope(qkv[:b], b, 1, *dec_rope)
        pq, pk, pv = self._split_rope(qkv[b:], n, t, *pre_rope)
        o = torch.cat([self._attend_cached(dq, dk, dv, positions, dec_mask).reshape(b, self.q_size),
                       self._attend_prompt(pq, pk, pv, pre_mask, slots).reshape(n * t, self.q_size)])
        return self.o_proj(o)


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
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.cos: torch.Tensor | None = None
        self.sin: torch.Tensor | None = None
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
        for layer in self.layers:
            shape = (num_slots, c.num_kv_heads, max_len, c.head_dim)
            layer.self_attn.k_cache = torch.zeros(shape, dtype=dtype, device=device)
            layer.self_attn.v_cache = torch.zeros(shape, dtype=dtype, device=device)
        self.cos, self.sin = rope_tables(c, max_len, dtype, device)
        self.max_len = max_len

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.norm(h)).float()

    def _causal_mask(self, t: int, device) -> torch.Tensor | None:
        """None means plain causal attention; a boolean mask only for a sliding window."""
        if self.cfg.sliding_window is None or t <= self.cfg.sliding_window:
            return None
        i = torch.arange(t, device=device)
        d = i[:, None] - i[None, :]
        return (d >= 0) & (d < self.cfg.sliding_window)

    def _layers(self, h, cos, sin, mask, slots=None) -> torch.Tensor:
        for layer in self.layers:
            h = h + layer.self_attn(layer.input_layernorm(h), cos, sin, mask, slots)
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        return h

    def forward(self, tokens: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Training and scoring, no KV cache: logits of every position [N, T, vocab], or with
        `keep` (a boolean [N, T]) of the kept positions only [K, vocab]. A correction pair's loss
        counts only its target half, so `keep` spares the vocabulary product for the prompt half."""
        t = tokens.shape[1]
        cos, sin = rope_tables(self.cfg, t, self.embed_tokens.weight.dtype, tokens.device)
        h = self._layers(self.embed_tokens(tokens), cos[None, None], sin[None, None], self._causal_mask(t, tokens.device))
        return self.lm_head(self.norm(h if keep is None else h[keep]))

    @torch.inference_mode()
    def prefill(self, tokens: torch.Tensor, slots: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """tokens [N, T] right-padded prompts, slots [N], last [N] index of each
        prompt's final token. Writes K/V of positions 0..T-1 into those slots and
        returns the logits of each prompt's final token [N, vocab] (float32)."""
        n, t = tokens.shape
        cos = self.cos[:t][None, None]
        sin = self.sin[:t][None, None]
        h = self._layers(self.embed_tokens(tokens), cos, sin, self._causal_mask(t, tokens.device), slots)
        h = h[torch.arange(n, device=tokens.device), last]
        return self._logits(h)

    @torch.inference_mode()
    def decode(self, tokens: torch.Tensor, positions: torch.Tensor, kv_len: int) -> torch.Tensor:
        """One step for slots 0..B-1: tokens [B] at positions [B]; attention reads
        the first kv_len cache positions (kv_len > every position). Returns [B, vocab]."""
        (cos, sin), mask = self._decode_rope_mask(positions, kv_len)
        h = self.embed_tokens(tokens[:, None])
        for layer in self.layers:
            h = h + layer.self_attn.decode(layer.input_layernorm(h), cos, sin, positions, mask)
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        return self._logits(h[:, 0])

    def _decode_rope_mask(self, positions: torch.Tensor, kv_len: int):
        cos = self.cos[positions][:, None, None]
        sin = self.sin[positions][:, None, None]
        k = torch.arange(kv_len, device=positions.device)
        allowed = k[None, :] <= positions[:, None]
        if self.cfg.sliding_window is not None:
            allowed &= k[None, :] > positions[:, None] - self.cfg.sliding_window
        return (cos, sin), allowed[:, None, None, :]

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor, positions: torch.Tensor, kv_len: int, prompts: torch.Tensor,
             slots: torch.Tensor, last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`decode` for slots 0..B-1 and `prefill` of N new prompts in one pass: every
        projection and MLP runs once over all B + N*T rows, so a step that admits one
        request pays for its prompt's rows, not for a second pass through the model.
        Returns (decode logits [B, vocab], prefill logits [N, vocab])."""
        b, (n, t) = tokens.shape[0], prompts.shape
        dec_rope, dec_mask = self._decode_rope_mask(positions, kv_len)
        pre_rope = (self.cos[:t][None, None], self.sin[:t][None, None])
        pre_mask = self._causal_mask(t, tokens.device)
        h = self.embed_tokens(torch.cat([tokens, prompts.reshape(-1)]))
        for layer in self.layers:
            h = h + layer.self_attn.mixed(layer.input_layernorm(h), b, n, t, dec_rope, pre_rope, positions,
                                          dec_mask, pre_mask, slots)
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        last_rows = b + torch.arange(n, device=tokens.device) * t + last
        logits = self._logits(torch.cat([h[:b], h[last_rows]]))
        return logits[:b], logits[b:]
