"""How the engine's OpenMP threads wait for each other, chosen before torch loads.

libgomp (torch's OpenMP runtime on Linux) lets a thread that reaches the end of a
parallel region spin for a while before it sleeps. On a quiet host that saves a
wake-up; on cores shared with other busy processes a spinning thread burns the time
slice that the thread it waits for needs, and every step pays it dozens of times. A
pod with two engine threads beside two busy loops served nothing within p99 < 1 s
(140 ms of engine CPU per request, against 10.5 ms when waiting passively); waiting
passively it served 75.5 req/s there, and 102 vs 118 req/s spinning on a quiet host,
one step of the ramp apart (BENCHMARKS.md, issue 19). A serving pod takes the robust
one; offline commands keep the runtime's default.

No torch here: the setting must be in the environment before libgomp loads, in this
process or in the processes it starts.
"""

from __future__ import annotations

import os

WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def wait_passively() -> None:
    """Have OpenMP threads sleep at once when they run out of work (OMP_WAIT_POLICY=PASSIVE)
    unless the environment already says how they wait. Takes effect only if torch is not
    loaded yet in this process; processes started from here afterwards inherit it."""
    if not any(v in os.environ for v in WAIT_VARIABLES):
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


def waiting() -> str:
    """How OpenMP threads wait, as the environment says, for the start-up line."""
    chosen = [f"{v}={os.environ[v]}" for v in WAIT_VARIABLES if v in os.environ]
    return ", ".join(chosen) or "the OpenMP runtime's default"
