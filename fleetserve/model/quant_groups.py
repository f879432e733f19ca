"""Which layers 8-bit quantization covers, by group name: no torch here, so that the
engine's settings (engine/config.py) and the command line can check them without it."""

from __future__ import annotations

from collections.abc import Iterable

# Layer groups that can be switched independently; the names are our (fused) modules.
GROUPS: dict[str, tuple[str, ...]] = {
    "attention": ("self_attn.qkv_proj", "self_attn.o_proj"),
    "mlp": ("mlp.gate_up_proj", "mlp.down_proj"),
    "lm_head": ("lm_head",),
}
DEFAULT_GROUPS = ("attention", "mlp")


def parse_groups(text: str | Iterable[str]) -> frozenset[str]:
    """'attention,mlp' -> {'attention', 'mlp'}; '' or 'none' -> no group."""
    items = text.split(",") if isinstance(text, str) else list(text)
    groups = frozenset(g.strip() for g in items if g.strip() and g.strip() != "none")
    unknown = groups - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown quantization group(s) {', '.join(sorted(unknown))}; choose from {', '.join(GROUPS)}")
    return groups
