"""Load-balancing policies: which endpoint gets the next request.

Pure code with no I/O and no clock of its own (callers pass `now`), so every
rule here is unit-testable and the router stays a thin mechanism around it.

`p2c` (power of two choices, the default) samples two distinct available
endpoints and sends to the one with fewer requests in flight relative to its
weight; ties are broken at random. That keeps the worst queue short at a cost
of two random draws, where round robin keeps sending a slow endpoint its full
share. `round_robin`, `random` and `least_loaded` exist as baselines.

The choices themselves are the small functions below (`two_choices`,
`first_of_two`, `least_loaded_index`, ...): plain arithmetic over numbers and
sequences, given their uniform draws, so that the fleet simulator compiles these
same functions with numba and picks exactly as the router would.

In-flight counts are the router's own (`start`/`finish` around each request).
An endpoint is *available* when it is ready (health checks), not ejected
(outlier detection) and below its in-flight cap. When every known endpoint is
ejected the balancer ignores ejection rather than refusing all traffic (the
"panic" rule of Envoy): a flapping fleet is better served than a dark one. In
the same spirit, when no endpoint is ready but some merely failed to answer
their health check in time (overloaded, not saying "not ready"), those are used;
an endpoint that answered "not ready" (loading, draining) never is.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

POLICIES = ("p2c", "round_robin", "random", "least_loaded")


# --- policy kernels: numbers in, an index out (numba-compilable; see fleetserve/simulate) ---------
def two_choices(n: int, u1: float, u2: float) -> tuple[int, int]:
    """Two distinct indices below n (n >= 2) from two uniform draws, each pair equally likely."""
    i = int(u1 * n)
    j = int(u2 * (n - 1))
    if j >= i:
        j += 1
    return i, j


def first_of_two(load_a: float, load_b: float, u: float) -> bool:
    """Whether a goes before b: the lower load first, a tie decided by the draw u."""
    if load_a == load_b:
        return u < 0.5
    return load_a < load_b


def least_loaded_index(loads, open_, u: float) -> int:
    """The index of the lowest load among the open entries (a tie decided by the draw u);
    -1 when none is open."""
    low = 0.0
    ties = 0
    for i in range(len(loads)):
        if open_[i] and (ties == 0 or loads[i] < low):
            low, ties = loads[i], 1
        elif open_[i] and loads[i] == low:
            ties += 1
    if ties == 0:
        return -1
    k = int(u * ties)
    for i in range(len(loads)):
        if open_[i] and loads[i] == low:
            if k == 0:
                return i
            k -= 1
    return -1


def weighted_index(weights, u: float) -> int:
    """The index whose share of the total weight covers the draw u (uniform when weights are equal)."""
    total = 0.0
    for w in weights:
        total += w
    x = u * total
    for i in range(len(weights)):
        x -= weights[i]
        if x < 0.0:
            return i
    return len(weights) - 1


def smooth_round_robin(weights, current) -> int:
    """Smooth weighted round robin (nginx): raise every score by its weight, take the
    highest and lower it by the total. Spreads a heavy entry's turns evenly; plain round
    robin when the weights are equal. Updates `current` in place."""
    total = 0.0
    best = -1
    for i in range(len(weights)):
        current[i] += weights[i]
        total += weights[i]
        if best < 0 or current[i] > current[best]:
            best = i
    current[best] -= total
    return best


@dataclass(frozen=True)
class EndpointSpec:
    """What discovery says about an endpoint."""
    url: str
    weight: float = 1.0  # relative capacity: load is compared as in-flight / weight
    max_inflight: int | None = None  # per-endpoint cap; None: the router's default


class Endpoint:
    """An endpoint as the balancer tracks it."""

    __slots__ = ("url", "weight", "max_inflight", "inflight", "ready", "unanswered", "ejected_until", "current")

    def __init__(self, spec: EndpointSpec, max_inflight: int | None):
        self.url = spec.url
        self.weight = spec.weight
        self.max_inflight = spec.max_inflight if spec.max_inflight is not None else max_inflight
        self.inflight = 0
        self.ready = True  # until an active health check says otherwise
        self.unanswered = False  # not ready because its health check went unanswered (not because it said so)
        self.ejected_until = 0.0
        self.current = 0.0  # smooth weighted round robin's running score

    @property
    def load(self) -> float:
        return self.inflight / self.weight

    def at_cap(self) -> bool:
        return self.max_inflight is not None and self.inflight >= self.max_inflight

    def __repr__(self) -> str:
        return f"Endpoint({self.url!r}, inflight={self.inflight}, ready={self.ready})"


class Choice:
    """Why `pick` returned no endpoint: `none_ready` (503) or `all_at_cap` (429)."""
    NONE_READY = "none_ready"
    ALL_AT_CAP = "all_at_cap"


class Balancer:
    """The set of endpoints and the policy that picks among them."""

    def __init__(self, policy: str = "p2c", max_inflight: int | None = None, rng: random.Random | None = None):
        if policy not in POLICIES:
            raise ValueError(f"unknown balancing policy {policy!r}; choose one of {', '.join(POLICIES)}")
        if max_inflight is not None and max_inflight < 1:
            raise ValueError("max_inflight must be at least 1")
        self.policy = policy
        self.max_inflight = max_inflight
        self.rng = rng or random.Random()
        self.endpoints: dict[str, Endpoint] = {}
        self._usable: list[Endpoint] = []  # ready and not ejected, in a stable order
        self._panic = False
        self._next_expiry = float("inf")  # earliest ejection end: the usable list changes then
        self._pick = getattr(self, f"_pick_{policy}")
        self.last_failure = ""  # Choice.* of the last pick that returned None

    # --- membership -----------------------------------------------------------
    def update(self, specs: Iterable[EndpointSpec], now: float = 0.0) -> None:
        """Replace the endpoint set with a discovery snapshot. Endpoints that stay keep
        their in-flight counts, health and ejection; a removed endpoint's requests in
        flight finish against the old object, which is simply forgotten."""
        fresh: dict[str, Endpoint] = {}
        for spec in specs:
            ep = self.endpoints.get(spec.url)
            if ep is None:
                ep = Endpoint(spec, self.max_inflight)
            else:
                ep.weight = spec.weight
                ep.max_inflight = spec.max_inflight if spec.max_inflight is not None else self.max_inflight
            fresh[spec.url] = ep
        self.endpoints = fresh
        self.refresh(now)

    def set_ready(self, url: str, ready: bool, now: float = 0.0, unanswered: bool = False) -> None:
        """`unanswered`: not ready only because the health check got no answer in time."""
        ep = self.endpoints.get(url)
        if ep is not None and (ep.ready != ready or ep.unanswered != (unanswered and not ready)):
            ep.ready = ready
            ep.unanswered = unanswered and not ready
            self.refresh(now)

    def eject(self, url: str, until: float, now: float) -> None:
        ep = self.endpoints.get(url)
        if ep is not None:
            ep.ejected_until = until
            self.refresh(now)

    def refresh(self, now: float) -> None:
        """Recompute which endpoints may be picked (after a change or an ejection ending)."""
        ready = [ep for ep in self.endpoints.values() if ep.ready]
        if not ready:  # nothing answers ready: try those that did not answer at all
            ready = [ep for ep in self.endpoints.values() if ep.unanswered]
        usable = [ep for ep in ready if ep.ejected_until <= now]
        self._panic = (not usable and bool(ready)) or any(ep.unanswered for ep in ready)
        self._usable = usable if usable else ready
        expiries = [ep.ejected_until for ep in ready if ep.ejected_until > now]
        self._next_expiry = min(expiries) if expiries else float("inf")

    def usable(self, now: float) -> list[Endpoint]:
        if now >= self._next_expiry:
            self.refresh(now)
        return self._usable

    @property
    def panic(self) -> bool:
        """True while ejection or unanswered health checks are being ignored for want of anything better."""
        return self._panic

    # --- picking -----------------------------------------------------------------
    def pick(self, now: float = 0.0, exclude: Endpoint | None = None) -> Endpoint | None:
        """The endpoint for the next request, or None (see `last_failure` for why).
        `exclude` is the endpoint a retried request already failed on."""
        eps = self.usable(now)
        if exclude is not None and exclude in eps and len(eps) > 1:
            eps = [ep for ep in eps if ep is not exclude]
        if not eps:
            self.last_failure = Choice.NONE_READY
            return None
        ep = self._pick(eps)
        if ep is None:
            self.last_failure = Choice.ALL_AT_CAP
            return None
        return ep

    def start(self, ep: Endpoint) -> None:
        ep.inflight += 1

    def finish(self, ep: Endpoint) -> None:
        ep.inflight -= 1

    def _below_cap(self, eps: list[Endpoint]) -> list[Endpoint]:
        return [ep for ep in eps if not ep.at_cap()]

    def _pick_p2c(self, eps: list[Endpoint]) -> Endpoint | None:
        n = len(eps)
        if n == 1:
            ep = eps[0]
            return None if ep.at_cap() else ep
        rng = self.rng
        i, j = two_choices(n, rng.random(), rng.random())
        a, b = eps[i], eps[j]
        first, second = (a, b) if first_of_two(a.load, b.load, rng.random()) else (b, a)
        if not first.at_cap():
            return first
        if not second.at_cap():
            return second
        # both samples are full: fall back to the least loaded endpoint below its cap
        return self._pick_least_loaded(eps)

    def _pick_least_loaded(self, eps: list[Endpoint]) -> Endpoint | None:
        i = least_loaded_index([ep.load for ep in eps], [not ep.at_cap() for ep in eps], self.rng.random())
        return None if i < 0 else eps[i]

    def _pick_random(self, eps: list[Endpoint]) -> Endpoint | None:
        open_ = self._below_cap(eps)
        if not open_:
            return None
        return open_[weighted_index([ep.weight for ep in open_], self.rng.random())]

    def _pick_round_robin(self, eps: list[Endpoint]) -> Endpoint | None:
        open_ = self._below_cap(eps)
        if not open_:
            return None
        current = [ep.current for ep in open_]
        best = open_[smooth_round_robin([ep.weight for ep in open_], current)]
        for ep, c in zip(open_, current):
            ep.current = c
        return best
