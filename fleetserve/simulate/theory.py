"""Queueing theory the simulator is checked against (tests/test_simulate.py)."""

from __future__ import annotations

import math


def erlang_c(c: int, offered: float) -> float:
    """Probability that an arrival waits in an M/M/c queue with `offered` = lambda / mu (< c)."""
    if not 0 <= offered < c:
        raise ValueError(f"offered load {offered} must be below the {c} servers")
    term, total = 1.0, 1.0  # sum of a^k / k! for k < c, built term by term
    for k in range(1, c):
        term *= offered / k
        total += term
    last = term * offered / c * c / (c - offered)  # a^c / c! * c / (c - a)
    return last / (total + last)


def mmc_mean_wait(arrival_rate: float, service_rate: float, c: int) -> float:
    """Mean time in queue (before service) of an M/M/c queue, in the time unit of the rates."""
    a = arrival_rate / service_rate
    return erlang_c(c, a) / (c * service_rate - arrival_rate)


def supermarket_tail(load: float, i: int, choices: int) -> float:
    """Fraction of servers holding at least i requests in the supermarket model (n -> infinity,
    one slot per server, exponential service, load < 1): load^i when each arrival picks one
    server at random, load^((d^i - 1) / (d - 1)) when it joins the shorter of d sampled
    (Mitzenmacher, 2001)."""
    if choices == 1:
        return load ** i
    return load ** ((choices ** i - 1) / (choices - 1))
