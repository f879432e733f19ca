"""The autoscaler's load signal: a pod's mean requests in flight between two readings of
its /metrics, from the engine's time integral of waiting + running."""

from __future__ import annotations

from fleetserve.fleet.load_signal import InflightMeter, InflightReading, parse_inflight


def metrics(waiting: float, running: float, area: float | None = None, clock: float | None = None) -> bytes:
    lines = ["# TYPE fleetserve_requests_waiting gauge", f"fleetserve_requests_waiting {waiting:g}",
             f"fleetserve_slots_running {running:g}", "fleetserve_slots_total 64"]
    if area is not None:
        lines += ["# TYPE fleetserve_inflight_seconds_total counter", f"fleetserve_inflight_seconds_total {area!r}",
                  f"fleetserve_engine_clock_seconds {clock!r}"]
    return "\n".join(lines).encode()


def test_the_instant_count_and_the_integral_are_read_from_the_metrics_text():
    assert parse_inflight(metrics(3, 4, 10.5, 1234.25)) == InflightReading(7.0, 10.5, 1234.25)
    assert parse_inflight(metrics(3, 4)) == InflightReading(7.0, None, None)
    assert parse_inflight(b"fleetserve_slots_total 64\n") is None
    assert parse_inflight(b"fleetserve_requests_waiting nan?\n") is None
    assert parse_inflight(b"fleetserve_requests_waiting\n") is None


def test_the_load_is_the_mean_in_flight_between_readings_not_the_instant_count():
    """A fast pod held 1.5 requests on average over the second between readings, yet was
    empty at both instants: the load is 1.5, not 0."""
    meter = InflightMeter()
    assert meter.mean("a", parse_inflight(metrics(0, 0, 100.0, 50.0))) == 0.0  # first reading: the instant
    assert meter.mean("a", parse_inflight(metrics(0, 0, 101.5, 51.0))) == 1.5
    assert meter.mean("a", parse_inflight(metrics(0, 2, 101.5, 52.0))) == 0.0  # nothing held since
    # pods are metered apart
    assert meter.mean("b", parse_inflight(metrics(5, 0, 7.0, 52.0))) == 5.0
    assert meter.mean("b", parse_inflight(metrics(5, 0, 17.0, 54.0))) == 5.0


def test_a_replaced_pod_a_stale_clock_or_an_old_pod_fall_back_to_the_instant_count():
    meter = InflightMeter()
    meter.mean("a", parse_inflight(metrics(0, 0, 100.0, 50.0)))
    # a new process at the same address: its integral starts again from 0
    assert meter.mean("a", parse_inflight(metrics(1, 1, 0.5, 51.0))) == 2.0
    assert meter.mean("a", parse_inflight(metrics(1, 1, 2.5, 52.0))) == 2.0
    # the same heartbeat read twice (the multi-process layout publishes every HEARTBEAT_S)
    assert meter.mean("a", parse_inflight(metrics(3, 0, 2.5, 52.0))) == 3.0
    # a pod that predates the counter
    assert meter.mean("old", parse_inflight(metrics(2, 1))) == 3.0


def test_pods_no_longer_read_are_forgotten():
    meter = InflightMeter()
    meter.mean("a", parse_inflight(metrics(0, 0, 100.0, 50.0)))
    meter.forget({"b"})
    assert meter.mean("a", parse_inflight(metrics(4, 0, 101.0, 51.0))) == 4.0  # no history: the instant
