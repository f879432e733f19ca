"""The `fleetserve` command. Each subcommand is one module of this package with the
same three names: HELP (one line for `fleetserve --help`), add_arguments(parser)
and run(args) (which returns None or an exit status). Modules import what they
run only inside run(), so `fleetserve --help` and the light commands never load torch."""

from __future__ import annotations

import argparse
import importlib
import sys

# Command name -> module; in the order `fleetserve --help` lists them.
COMMANDS = {
    "serve": "serve",
    "up": "up",
    "router": "router",
    "autoscale": "autoscale",
    "loadtest": "loadtest",
    "eval": "eval",
    "quantize": "quantize",
    "init-model": "init_model",
    "train-demo": "train_demo",
    "bench": "bench",
    "bench-pod": "bench_pod",
    "bench-correct": "bench_correct",
    "bench-slo": "bench_slo",
    "bench-quant": "bench_quant",
    "bench-router": "bench_router",
    "bench-loadtest": "bench_loadtest",
    "demo-fleet": "demo_fleet",
    "simulate": "simulate",
    "bench-simulate": "bench_simulate",
    "bench-start": "bench_start",
    "stub-server": "stub_server",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fleetserve", description="Serve a small language model to many short requests.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"fleetserve.cli.{module_name}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(func=module.run)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["bench", "pod"]:
        print("fleetserve: error: `bench pod` is now `bench-slo URL` (a pod's rate at an SLO); `bench-pod` compares "
              "pod layouts with the offline engine", file=sys.stderr)
        sys.exit(2)
    args = build_parser().parse_args(argv)
    from fleetserve.model.config import ModelLoadError

    try:
        status = args.func(args)
    except (ModelLoadError, ValueError, FileNotFoundError, ConnectionError) as e:
        print(f"fleetserve: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    if status:
        sys.exit(status)
