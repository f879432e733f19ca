"""What a benchmark ran on: the CPU model, the instruction-set features that decide which
kernels run, and any override that made this CPU take narrower kernels (as the AVX2
approximation on an AVX-512 machine does), recorded with every figure."""

from __future__ import annotations

import os
from pathlib import Path

# The features that choose kernels on this project's machine kinds (AVX-512 with VNNI/BF16/AMX, or AVX2 + FMA).
FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile")
ISA_OVERRIDES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS",
                 "CT2_FORCE_CPU_ISA", "FBGEMM_ENABLE_INSTRUCTIONS")


def cpu_description() -> str:
    """e.g. "Intel(R) Xeon(R) ..., 2 cores, flags avx2 fma avx512f ..., ISA override ONEDNN_MAX_CPU_ISA=AVX2"."""
    model, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown CPU":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    text = f"{model}, {len(os.sched_getaffinity(0))} cores, flags {' '.join(f for f in FLAGS if f in flags) or '?'}"
    overrides = [f"{k}={os.environ[k]}" for k in ISA_OVERRIDES if os.environ.get(k)]
    return text + (f", ISA override {' '.join(overrides)}" if overrides else "")
