"""Where the model runs: the CPU (the default) or a CUDA GPU.

Everything the engine keeps per step (weights, KV cache, logits) lives on this
device; request bookkeeping and seeded sampling stay on the CPU.
"""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """`cpu`, `cuda` or `cuda:N`; a clear error when this machine cannot run it."""
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"--device {name!r}: not a device name (use cpu, cuda or cuda:N)") from e
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ValueError(f"--device {name!r}: only cpu and cuda are supported")
    if not torch.cuda.is_available():
        raise ValueError(f"--device {name!r}: torch {torch.__version__} sees no CUDA device on this machine")
    index = device.index or 0
    if index >= torch.cuda.device_count():
        raise ValueError(f"--device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device("cuda", index)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a wall-clock timing covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
