"""`fleetserve bench-router`: its options and what runs it."""

from __future__ import annotations

from pathlib import Path
from fleetserve.benchmarks.router import STACKS, run_router_bench

HELP = ('router throughput per core vs an aiohttp proxy and HAProxy, '
        'added latency, and P2C vs round robin tail latency with a slow upstream')


def add_arguments(p) -> None:
    p.add_argument("--stacks", default=",".join(STACKS),
                   help="proxies compared in part (a), comma-separated (default %(default)s)")
    p.add_argument("--seconds", type=float, default=8.0, help="measured seconds per point in (a) (default %(default)s)")
    p.add_argument("--concurrency", type=int, default=64, help="closed-loop requests outstanding (default %(default)s)")
    p.add_argument("--cpu-cap", type=float, default=0.4,
                   help="also measure each proxy held to this share of a core (a cgroup CFS quota), so it "
                        "saturates below what the load side offers; 0: skip (default %(default)s)")
    p.add_argument("--latency-rounds", type=int, default=3,
                   help="alternating runs per rate of the added-latency part; medians are reported (default %(default)s)")
    p.add_argument("--no-tail", action="store_true", help="skip part (b)")
    p.add_argument("--tail-seconds", type=float, default=20.0, help="seconds per policy in (b) (default %(default)s)")
    p.add_argument("--json", default=None, help="write all figures as JSON here")


def run(a) -> None:
    import json

    out = run_router_bench([s.strip() for s in a.stacks.split(",") if s.strip()], seconds=a.seconds,
                           concurrency=a.concurrency, tail=not a.no_tail, tail_seconds=a.tail_seconds,
                           cpu_cap=a.cpu_cap or None, latency_rounds=a.latency_rounds)
    text = json.dumps(out, indent=1)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(text + "\n")
    print(text)
