"""`fleetserve bench-simulate`: its options and what runs it."""

from __future__ import annotations

from pathlib import Path

HELP = ("the simulator against the real local fleet: demo-fleet's ramp run for real, one pod calibrated, "
        "the same scenario simulated; scale moments and p99 per window side by side")


def add_arguments(p) -> None:
    # the defaults are demo-fleet's, resolved in run(): building the parser must not load the simulator
    p.add_argument("--out", default="build/bench-simulate", help="where everything goes (default %(default)s)")
    p.add_argument("--model", default=None, help="default: the bundled model")
    p.add_argument("--profile", default=None, help="the load test's profile (default: demo-fleet's ramp)")
    p.add_argument("--serve-args", default=None, help="pod options (default: demo-fleet's ramp pods, one core each)")
    p.add_argument("--rates", default="2,4,8,12,16,24", help="calibration rates (default %(default)s)")
    p.add_argument("--seconds", type=float, default=8.0, help="seconds per calibration rate (default %(default)s)")
    p.add_argument("--host-cores", type=float, default=None,
                   help="cores the local pods share in the simulation (default: this machine's; 0: each pod has "
                        "its own)")
    p.add_argument("--seeds", type=int, default=8,
                   help="simulated runs compared by their median (default %(default)s; one run is one draw)")
    p.add_argument("--from", dest="demo_dir", default=None,
                   help="compare with this finished demo-fleet ramp folder (and the calibration already in --out) "
                        "instead of running both again")


def run(a) -> None:
    import json

    from fleetserve.benchmarks.sim_vs_fleet import RAMP, SERVE_ARGS, run_sim_vs_fleet

    result = run_sim_vs_fleet(Path(a.out), a.model, a.profile or RAMP, SERVE_ARGS if a.serve_args is None else a.serve_args,
                              tuple(float(r) for r in a.rates.split(",") if r.strip()), a.seconds,
                              host_cores=a.host_cores, demo_dir=Path(a.demo_dir) if a.demo_dir else None,
                              seeds=a.seeds)
    print(json.dumps({k: v for k, v in result.items() if k not in ("p99_per_window", "simulation")}, indent=1))
    for row in result["p99_per_window"]:
        print(f"{row['start_s']:6.0f} s  measured p99 {row['measured_p99_ms']} ms  simulated {row['simulated_p99_ms']} ms"
              f"  ratio {row['ratio']}")
