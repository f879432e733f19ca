"""`fleetserve stub-server`: its options and what runs it."""

from __future__ import annotations

from fleetserve.loadtest.profile import parse_duration
from fleetserve.loadtest.stub_server import StubConfig, parse_delay, run_stub

HELP = ('a model-less OpenAI-shaped server with set '
        'latency and errors, for measuring the load tester')


def add_arguments(p) -> None:
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default %(default)s)")
    p.add_argument("--port", type=int, default=8200,
                   help="port to listen on (default %(default)s)")
    p.add_argument("--delay", default="0", help="answer delay: 0, const:20ms, exp:MEAN, lognormal:MEDIAN,SIGMA, "
                                                "uniform:LO..HI (default %(default)s)")
    p.add_argument("--error-rate", type=float, default=0.0, help="share of requests answered with --error-status")
    p.add_argument("--error-status", type=int, default=500, choices=[429, 500, 502, 503],
                   help="status of the injected failures (default %(default)s; 503 is what a draining pod answers)")
    p.add_argument("--concurrency", type=int, default=0,
                   help="requests worked on at once, like a pod's slots; more wait in a queue (default: no limit)")
    p.add_argument("--slow-after", default=None, help="after this long from the first request, use --slow-delay")
    p.add_argument("--slow-delay", default="1s", help="the delay once slow (default %(default)s)")
    p.add_argument("--token-interval", default="0", help="time between streamed tokens (default %(default)s)")
    p.add_argument("--disagree", type=float, default=0.0,
                   help="share of prompts answered differently from a default stub (for shadow tests)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the latencies and injected errors (default %(default)s)")


def run(a) -> None:
    if not 0 <= a.error_rate <= 1 or not 0 <= a.disagree <= 1:
        raise ValueError("--error-rate and --disagree are shares between 0 and 1")
    if a.concurrency < 0:
        raise ValueError("--concurrency must be 0 (no limit) or positive")
    cfg = StubConfig(delay=parse_delay(a.delay), error_rate=a.error_rate, error_status=a.error_status,
                     concurrency=a.concurrency,
                     slow_after=parse_duration(a.slow_after, allow_zero=True) if a.slow_after else None,
                     slow_delay=parse_delay(a.slow_delay),
                     token_interval=parse_duration(a.token_interval, allow_zero=True), disagree=a.disagree,
                     seed=a.seed)
    run_stub(cfg, a.host, a.port)
