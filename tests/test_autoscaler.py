"""The autoscaler policy, table-driven: load traces in, replica counts out (pure code)."""

import math

import pytest

from fleetserve.fleet.autoscaler import Autoscaler, AutoscalerConfig

CFG = AutoscalerConfig(target_per_pod=10, min_replicas=1, max_replicas=20, scale_up_window=10,
                       scale_down_window=120, panic_threshold=2.0, max_scale_down_step=1, scale_down_period=30)


def simulate(load_at, seconds, cfg=CFG, start=1, startup=0):
    """Feed total in-flight `load_at(t)` every second, spread over the ready pods; pods become
    ready `startup` seconds after they are asked for. Returns the desired count at each second."""
    a = Autoscaler(cfg)
    current, ready_at = start, [-1.0] * start
    out = []
    for t in range(seconds):
        ready = sum(1 for r in ready_at if r <= t)
        load = load_at(t)
        a.observe(t, [load / max(ready, 1)] * max(ready, 1))
        d = a.decide(t, current, ready).desired
        if d > current:
            ready_at += [t + startup] * (d - current)
        elif d < current:
            ready_at = ready_at[:d]
        current = d
        out.append(current)
    return out


def changes(seq):
    return sum(1 for a, b in zip(seq, seq[1:]) if a != b)


@pytest.mark.parametrize("load,expected", [(0, 1), (5, 1), (10, 1), (11, 2), (25, 3), (100, 10), (1000, 20)])
def test_steady_load_settles_at_ceil_load_over_target(load, expected):
    seq = simulate(lambda t: load, 400)
    assert seq[-1] == expected
    assert set(seq[150:]) == {expected}  # and stays there


def test_step_up_is_followed_within_the_short_window():
    seq = simulate(lambda t: 10 if t < 100 else 40, 200)
    assert seq[99] == 1
    assert seq[100 + CFG.scale_up_window] == 4
    assert max(seq) == 4


def test_spike_panics_scales_up_at_once_and_holds_through_the_window():
    seq = simulate(lambda t: 200 if 50 <= t < 60 else 10, 400, startup=20)
    assert seq[49] == 1
    assert seq[50] >= 2  # the first sample of the spike already scales up
    peak_t = seq.index(max(seq))
    # the 10 s average of the spike (182.7 in flight) asks for 19 pods before the spike ends
    assert max(seq) == 19 and peak_t < 60
    # never down while panicking: the whole scale-down window after the last panic sample
    assert min(seq[peak_t:59 + CFG.scale_down_window]) == 19
    assert seq[-1] < 19  # and it does come down afterwards


def test_slow_decline_steps_down_gradually_and_never_flaps_up():
    seq = simulate(lambda t: max(10, 80 - t / 5), 800)  # 80 -> 10 over 350 s
    assert max(seq[:20]) == 8
    later = seq[20:]
    assert all(b <= a for a, b in zip(later, later[1:]))  # monotone
    assert all(a - b <= CFG.max_scale_down_step for a, b in zip(later, later[1:]))
    downs = [t for t in range(21, 800) if seq[t] < seq[t - 1]]
    assert all(b - a >= CFG.scale_down_period for a, b in zip(downs, downs[1:]))
    assert seq[-1] == 1


def test_oscillating_load_does_not_flap():
    seq = simulate(lambda t: 40 if (t // 20) % 2 == 0 else 10, 600)
    assert changes(seq[30:]) == 0 and seq[-1] == 4


def test_scale_down_waits_for_the_stabilization_window():
    seq = simulate(lambda t: 50 if t < 100 else 5, 400)
    assert seq[99] == 5
    # the recommendation drops within 10 s, but the highest one of the last 120 s rules
    first_down = next(t for t in range(100, 400) if seq[t] < 5)
    # the recommendation falls within the short window (10 s), then the stabilization window runs
    assert 100 + 120 <= first_down <= 100 + 10 + 120 + 1
    assert seq[first_down] == 4


@pytest.mark.parametrize("load,lo,hi,expected", [(0, 2, 5, 2), (1000, 2, 5, 5), (30, 0, 5, 3), (0, 0, 5, 0)])
def test_bounds(load, lo, hi, expected):
    cfg = AutoscalerConfig(target_per_pod=10, min_replicas=lo, max_replicas=hi, scale_down_period=0)
    assert simulate(lambda t: load, 600, cfg=cfg, start=max(lo, 1))[-1] == expected


def test_current_outside_bounds_is_brought_inside_at_once():
    a = Autoscaler(AutoscalerConfig(target_per_pod=10, min_replicas=2, max_replicas=4))
    a.observe(0, [0.0])
    assert a.decide(0, current=1, ready=1).desired == 2
    assert a.decide(1, current=9, ready=9).desired == 4


def test_invalid_settings_are_refused():
    for kw, msg in [({"target_per_pod": 0}, "target_per_pod"), ({"target_per_pod": 1, "min_replicas": 3,
                                                                 "max_replicas": 2}, "min"),
                    ({"target_per_pod": 1, "panic_threshold": 0.5}, "panic_threshold")]:
        with pytest.raises(ValueError, match=msg):
            AutoscalerConfig(**kw)
    assert math.isclose(CFG.target_per_pod, 10)
