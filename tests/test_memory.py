"""The engine keeps freed memory mapped, so a step's large tensors are not page-faulted in again."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # starts processes (make test-quick skips it)

# A step's pattern: large tensors made, used and dropped, round after round.
PROBE = """
import resource, torch
from fleetserve.engine.memory import keep_freed_memory
print(keep_freed_memory())
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
x = torch.randn(1024, 1024)
before = faults()
for _ in range(20):
    a = torch.empty(16 << 20).fill_(1.0)  # 64 MiB, above any mmap threshold
    b = torch.empty(8 << 20).fill_(2.0)
    del a
    c = x @ x
    del b, c
print((faults() - before) / 20)
"""


def _probe(setting: str) -> tuple[str, float]:
    env = {**os.environ, "FLEETSERVE_KEEP_FREED_MEMORY": setting}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120,
                         check=True).stdout.split()
    return out[0], float(out[1])


def test_large_tensors_made_round_after_round_are_not_page_faulted_in_each_time():
    kept, faults_kept = _probe("1")
    off, faults_default = _probe("0")
    assert (kept, off) == ("True", "False")
    pages = (96 << 20) // os.sysconf("SC_PAGE_SIZE")
    assert faults_default > pages // 2  # glibc unmapped them: most pages faulted in again every round
    assert faults_kept < faults_default / 3
