"""`fleetserve bench-loadtest`: how fast the load tester sends, against the stub server."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "the highest rate the load tester sustains on one core, vs an httpx sender, against the stub server"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rates", default="250,500,1000,2000,4000,6000,8000,10000,12000,14000,16000,20000,24000,28000",
                   help="offered rates to step through, stopping at the first not sustained")
    p.add_argument("--seconds", type=float, default=5.0, help="seconds per rate (default %(default)s)")
    p.add_argument("--no-baseline", action="store_true", help="skip the httpx baseline")
    p.add_argument("--json", default=None, help="write the results as JSON here")


def run(a: argparse.Namespace) -> None:
    from fleetserve.benchmarks.load_tester import run_self_bench

    rates = [float(r) for r in a.rates.split(",")]
    result = run_self_bench(rates, a.seconds, baseline=not a.no_baseline)
    for name in ("fleetserve", "httpx_baseline"):
        if name in result:
            print(f"{name}: highest rate sustained with <1% late sends on one core: "
                  f"{result[name]['highest_sustained_rate']:.0f} requests/s")
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")
