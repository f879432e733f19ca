"""`fleetserve up`: its options and what runs it."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from fleetserve.engine.config import EngineConfig
from fleetserve.engine.model_location import locate_model
from fleetserve.fleet.autoscaler import AutoscalerConfig
from fleetserve.http_common import check_port_free
from fleetserve.fleet.local_fleet import FleetConfig, bundled_model, run_fleet, target_from_file
from fleetserve.storage.sources import is_remote

HELP = ('a self-sizing local fleet: router, supervisor and '
        "autoscaler with pods as child processes (the README's main job)")


def add_arguments(p) -> None:
    p.add_argument("--model", default=None, help="model directory for the pods, or s3://BUCKET/PREFIX or an http(s) "
                                                "URL (see fleetserve serve; the pods of this machine share one block "
                                                "cache) (default: the bundled correct-6m)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address the router listens on (default %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="the router's port: the fleet's URL (default %(default)s)")
    p.add_argument("--policy", default="p2c", help="the router's balancing policy (default %(default)s)")
    p.add_argument("--serve-args", default="",
                   help="extra `fleetserve serve` options for every pod, as one string, e.g. '--max-num-seqs 32'")
    a = p.add_argument_group("autoscaler")
    a.add_argument("--min", type=int, default=1, dest="min_replicas", help="fewest pods (default %(default)s)")
    a.add_argument("--max", type=int, default=max(2, (os.cpu_count() or 2) // 2), dest="max_replicas",
                   help="most pods (default: half the cores, at least 2: %(default)s here)")
    t = a.add_mutually_exclusive_group()
    t.add_argument("--target-per-pod", type=float, default=None,
                   help="requests in flight one pod serves within the SLO (default 16; measure it with bench-slo)")
    t.add_argument("--target-from", default=None, metavar="FILE",
                   help="take --target-per-pod from a saved `fleetserve bench-slo URL --json FILE`")
    a.add_argument("--scale-up-window", type=float, default=10.0, help="seconds (default %(default)s)")
    a.add_argument("--scale-down-window", type=float, default=120.0,
                   help="stabilization seconds before scaling down (default %(default)s)")
    a.add_argument("--panic-threshold", type=float, default=2.0,
                   help="load over ready capacity that starts panic mode (default %(default)s)")
    a.add_argument("--max-scale-down-step", type=int, default=1, help="pods removed at a time (default %(default)s)")
    a.add_argument("--scale-down-period", type=float, default=30.0,
                   help="seconds between scale-down steps (default %(default)s)")
    a.add_argument("--interval", type=float, default=1.0, help="seconds between decisions (default %(default)s)")
    p.add_argument("--workdir", default=None, help="endpoint file, router and pod logs (default: a temporary dir)")
    p.add_argument("--events", default=None, help="append one JSON line per decision here (for plots)")
    p.add_argument("--no-status", action="store_true", help="no live status line")


def run(a) -> None:
    import shlex

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    model = a.model or bundled_model()
    if is_remote(model):
        # its config and tokenizer once now: a wrong URL or credentials fail here, before any pod starts
        locate_model(model, EngineConfig())
    elif not (Path(model) / "config.json").is_file():
        raise FileNotFoundError(f"{model}: not a model directory (no config.json)")
    target = target_from_file(a.target_from) if a.target_from else (a.target_per_pod or 16.0)
    scaler = AutoscalerConfig(target_per_pod=target, min_replicas=a.min_replicas, max_replicas=a.max_replicas,
                              scale_up_window=a.scale_up_window, scale_down_window=a.scale_down_window,
                              panic_threshold=a.panic_threshold, max_scale_down_step=a.max_scale_down_step,
                              scale_down_period=a.scale_down_period)
    if a.interval <= 0:
        raise ValueError("--interval must be positive")
    check_port_free(a.host, a.port)  # before anything starts
    cfg = FleetConfig(model_dir=model, autoscaler=scaler, host=a.host, port=a.port, policy=a.policy,
                      serve_args=shlex.split(a.serve_args), interval=a.interval,
                      workdir=Path(a.workdir) if a.workdir else None, status=not a.no_status,
                      events_path=Path(a.events) if a.events else None)
    sys.exit(run_fleet(cfg))
