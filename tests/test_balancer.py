"""The balancing policies and outlier ejection: pure code, no I/O."""

import random
from collections import Counter

import pytest

from fleetserve.fleet.balancer import Balancer, Choice, EndpointSpec
from fleetserve.fleet.outlier import OutlierConfig, OutlierDetector

URLS = [f"http://10.0.0.{i}:8100" for i in range(1, 6)]


def make(policy="p2c", n=4, cap=None, seed=1, weights=None):
    b = Balancer(policy, max_inflight=cap, rng=random.Random(seed))
    b.update([EndpointSpec(u, weight=(weights[i] if weights else 1.0)) for i, u in enumerate(URLS[:n])])
    return b


def chi_square(counts, expected):
    return sum((c - e) ** 2 / e for c, e in zip(counts, expected))


def test_p2c_with_two_endpoints_always_takes_the_less_loaded():
    b = make(n=2)
    a, c = (b.endpoints[u] for u in URLS[:2])
    a.inflight, c.inflight = 5, 2
    assert all(b.pick() is c for _ in range(500))
    a.inflight = 1
    assert all(b.pick() is a for _ in range(500))


def test_p2c_never_picks_the_more_loaded_of_its_two_samples():
    # Distinct loads 0..n-1: the most loaded endpoint loses every comparison, so it must never be
    # picked, and the endpoint of rank r (0 = least loaded) wins exactly the pairs it is in with
    # a more loaded one: probability 2 (n-1-r) / (n (n-1)).
    n, picks = 5, 20_000
    b = make(n=n, seed=7)
    for r, u in enumerate(URLS[:n]):
        b.endpoints[u].inflight = r
    counts = Counter(b.pick().url for _ in range(picks))
    assert counts[URLS[n - 1]] == 0
    expected = [picks * 2 * (n - 1 - r) / (n * (n - 1)) for r in range(n - 1)]
    assert chi_square([counts[u] for u in URLS[:n - 1]], expected) < 18.5  # df 3, p = 0.0003


def test_p2c_spread_is_even_under_equal_load_and_ties_are_random():
    picks = 40_000
    b = make(n=4, seed=3)
    counts = Counter(b.pick().url for _ in range(picks))
    assert chi_square([counts[u] for u in URLS[:4]], [picks / 4] * 4) < 18.5
    # with two endpoints at equal load, the tie is a coin flip, not always the first sampled
    b2 = make(n=2, seed=4)
    c2 = Counter(b2.pick().url for _ in range(10_000))
    assert 4_700 < c2[URLS[0]] < 5_300


def test_p2c_compares_load_relative_to_weight():
    b = make(n=2, weights=[1.0, 4.0])
    light, heavy = (b.endpoints[u] for u in URLS[:2])
    light.inflight, heavy.inflight = 2, 6  # loads 2.0 vs 1.5: the heavier-weighted one is less loaded
    assert all(b.pick() is heavy for _ in range(100))


def test_round_robin_cycles_through_every_endpoint():
    b = make("round_robin", n=3)
    seq = [b.pick().url for _ in range(9)]
    assert sorted(seq[:3]) == sorted(URLS[:3])
    assert seq[:3] == seq[3:6] == seq[6:9]


def test_weighted_round_robin_is_smooth_and_proportional():
    b = make("round_robin", n=2, weights=[3.0, 1.0])
    seq = [b.pick().url for _ in range(8)]
    assert Counter(seq) == {URLS[0]: 6, URLS[1]: 2}
    assert seq[:4].count(URLS[1]) == 1  # the light endpoint's turns are spread, not bunched


def test_least_loaded_and_random():
    b = make("least_loaded", n=3)
    for r, u in enumerate(URLS[:3]):
        b.endpoints[u].inflight = 3 - r
    assert all(b.pick().url == URLS[2] for _ in range(50))
    r = make("random", n=4, seed=5)
    counts = Counter(r.pick().url for _ in range(20_000))
    assert chi_square([counts[u] for u in URLS[:4]], [5_000] * 4) < 18.5


@pytest.mark.parametrize("policy", ["p2c", "round_robin", "random", "least_loaded"])
def test_not_ready_and_ejected_endpoints_are_never_picked(policy):
    b = make(policy, n=4)
    b.set_ready(URLS[0], False)
    b.eject(URLS[1], until=100.0, now=0.0)
    picked = {b.pick(now=50.0).url for _ in range(2_000)}
    assert picked == {URLS[2], URLS[3]}
    # the ejection ends at its time; readiness only when a health check says so
    picked = {b.pick(now=100.0).url for _ in range(2_000)}
    assert picked == {URLS[1], URLS[2], URLS[3]}


@pytest.mark.parametrize("policy", ["p2c", "round_robin", "random", "least_loaded"])
def test_in_flight_cap_skips_full_endpoints_and_reports_all_full(policy):
    b = make(policy, n=3, cap=2)
    for u in URLS[:2]:
        b.endpoints[u].inflight = 2
    assert {b.pick().url for _ in range(200)} == {URLS[2]}
    b.endpoints[URLS[2]].inflight = 2
    assert b.pick() is None and b.last_failure == Choice.ALL_AT_CAP


def test_no_ready_endpoint_and_panic_when_all_are_ejected():
    b = make(n=2)
    for u in URLS[:2]:
        b.set_ready(u, False)
    assert b.pick() is None and b.last_failure == Choice.NONE_READY
    b2 = make(n=2)
    for u in URLS[:2]:
        b2.eject(u, until=10.0, now=0.0)
    # every ready endpoint ejected: ejection is ignored rather than failing all traffic
    assert b2.pick(now=1.0) is not None and b2.panic


def test_unanswered_health_checks_are_used_only_when_nothing_is_ready():
    b = make(n=3)
    b.set_ready(URLS[0], False, unanswered=True)  # overloaded: its /ready timed out
    b.set_ready(URLS[1], False)  # said "not ready" (draining)
    assert {b.pick().url for _ in range(300)} == {URLS[2]} and not b.panic
    b.set_ready(URLS[2], False)
    # nothing is ready: the one that merely did not answer is tried, never the one that said no
    assert {b.pick().url for _ in range(300)} == {URLS[0]} and b.panic
    b.set_ready(URLS[0], False)  # now it answered "not ready" too
    assert b.pick() is None and b.last_failure == Choice.NONE_READY


def test_retry_excludes_the_endpoint_that_failed():
    b = make(n=3)
    bad = b.endpoints[URLS[0]]
    assert all(b.pick(exclude=bad) is not bad for _ in range(500))
    one = make(n=1)
    only = one.endpoints[URLS[0]]
    assert one.pick(exclude=only) is only  # nothing else to try


def test_update_keeps_state_of_endpoints_that_stay():
    b = make(n=3)
    b.endpoints[URLS[0]].inflight = 4
    b.set_ready(URLS[1], False)
    b.update([EndpointSpec(URLS[0]), EndpointSpec(URLS[1]), EndpointSpec(URLS[3])])
    assert set(b.endpoints) == {URLS[0], URLS[1], URLS[3]}
    assert b.endpoints[URLS[0]].inflight == 4 and not b.endpoints[URLS[1]].ready
    b.endpoints[URLS[0]].inflight = 0
    assert {b.pick().url for _ in range(300)} == {URLS[0], URLS[3]}


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="unknown balancing policy"):
        Balancer("fastest")


def test_outlier_ejection_after_consecutive_failures_with_doubling_backoff():
    d = OutlierDetector(OutlierConfig(consecutive_failures=3, base_ejection=2.0, max_ejection=5.0))
    u = URLS[0]
    assert d.failure(u, 0.0) is None and d.failure(u, 0.0) is None
    d.success(u)  # a success in between resets the count
    assert d.failure(u, 0.0) is None and d.failure(u, 0.0) is None
    assert d.failure(u, 10.0) == 12.0
    for _ in range(2):
        d.failure(u, 20.0)
    assert d.failure(u, 20.0) == 24.0  # doubled
    for _ in range(2):
        d.failure(u, 30.0)
    assert d.failure(u, 30.0) == 35.0  # capped
    d.success(u)
    for _ in range(2):
        d.failure(u, 40.0)
    assert d.failure(u, 40.0) == 42.0  # forgiven after serving well
    assert d.ejected_total == 4
