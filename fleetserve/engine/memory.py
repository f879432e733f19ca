"""Keep freed memory in the process instead of handing it back to the kernel.

glibc serves every allocation above its mmap threshold (at most 32 MiB) with a
fresh mmap and unmaps it on free, so each large activation of a step, such as the
[prompt tokens x 9728] MLP output of a 0.5B model's prefill, is page-faulted in
again on first touch: measured here, that made an elementwise pass over 62 MB 4-5x
slower and an int8 matrix product 1.6x slower (BENCHMARKS.md, "Quantization").
The steps of an engine allocate the same shapes again and again, so keeping
the pages costs only the peak of one step, once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4
_done = False


def keep_freed_memory() -> bool:
    """Serve large allocations from the heap and never trim it. Once per process;
    False where it does not apply (not glibc) or FLEETSERVE_KEEP_FREED_MEMORY=0."""
    global _done
    if _done:
        return True
    if os.environ.get("FLEETSERVE_KEEP_FREED_MEMORY", "1") == "0":
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1 \
        and mallopt(M_TOP_PAD, 64 << 20) == 1
    if not ok:
        log.warning("mallopt refused a setting; large allocations may be page-faulted in at every step")
    _done = ok
    return ok
