"""How the engine's OpenMP threads wait for each other, chosen before torch loads.

libgomp (torch's OpenMP runtime on Linux) lets a thread that reaches the end of a
parallel region spin before it sleeps: by default for up to 300,000 spins (without
limit with OMP_WAIT_POLICY=ACTIVE). On cores shared with other busy processes a thread
spinning that long burns the time slice that the thread it waits for needs, and every
step pays it dozens of times: a pod with two engine threads beside two busy loops served
nothing within p99 < 1 s (140 ms of engine CPU per request). Sleeping at once
(OMP_WAIT_POLICY=PASSIVE) fixes that but pays a wake-up at every barrier; a short spin
(GOMP_SPINCOUNT=10000, 1/30 of the default) catches the other thread when it is about to
arrive and sleeps when it is not. Measured with the pod's measured thread choice,
alternating (BENCHMARKS.md, issue 19, third part): on a quiet host the short spin served
1.21x passive waiting's correction traffic at p99 < 1 s (and ran the offline part 1.36x
faster), beside two busy loops the same. A serving pod takes the short spin; offline
commands keep the runtime's default.

No torch here: the setting must be in the environment before libgomp loads, in this
process or in the processes it starts.
"""

from __future__ import annotations

import os

WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
SERVING_SPINCOUNT = "10000"


def choose_serving_wait() -> None:
    """Have OpenMP threads spin briefly, then sleep, when they run out of work
    (GOMP_SPINCOUNT=10000) unless the environment already says how they wait. Takes effect
    only if torch is not loaded yet in this process; processes started from here afterwards
    inherit it."""
    if not any(v in os.environ for v in WAIT_VARIABLES):
        os.environ["GOMP_SPINCOUNT"] = SERVING_SPINCOUNT


def waiting() -> str:
    """How OpenMP threads wait, as the environment says, for the start-up line."""
    chosen = [f"{v}={os.environ[v]}" for v in WAIT_VARIABLES if v in os.environ]
    return ", ".join(chosen) or "the OpenMP runtime's default"
