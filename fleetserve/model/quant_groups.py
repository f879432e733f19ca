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
# What each scheme covers unless told ("auto"), by the quality gate on the bundled model
# (BENCHMARKS.md, "Quality: the bundled model quantized"): int8 passes with the lm_head too,
# a quarter of the products at the 0.5B shape (int8 1.22x faster with it there, AVX-512);
# fp8 and fp8-weight with it change too many outputs.
DEFAULT_GROUPS: dict[str, tuple[str, ...]] = {
    "int8": ("attention", "lm_head", "mlp"),
    "fp8": ("attention", "mlp"),
    "fp8-weight": ("attention", "mlp"),
}
AUTO_HELP = "auto: " + "; ".join(f"{scheme} {','.join(groups)}" for scheme, groups in DEFAULT_GROUPS.items())


def parse_groups(text: str | Iterable[str], scheme: str | None = None) -> frozenset[str]:
    """'attention,mlp' -> {'attention', 'mlp'}; '' or 'none' -> no group; 'auto' -> the
    scheme's default (none when there is no scheme)."""
    if text == "auto":
        return frozenset(DEFAULT_GROUPS.get(scheme, ()))
    items = text.split(",") if isinstance(text, str) else list(text)
    groups = frozenset(g.strip() for g in items if g.strip() and g.strip() != "none")
    unknown = groups - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown quantization group(s) {', '.join(sorted(unknown))}; choose from {', '.join(GROUPS)}")
    return groups
