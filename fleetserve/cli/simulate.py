"""`fleetserve simulate`: its options and what runs it."""

from __future__ import annotations

HELP = ("simulate a fleet (traffic, pods, routers, the autoscaler) from a scenario YAML, at any scale; "
        "`simulate calibrate URL` measures a real pod's step-time model for it")


def add_arguments(p) -> None:
    p.add_argument("scenario", help="scenario YAML (see deploy/scenarios/ and README for every key), or "
                                    "`calibrate` followed by a pod's URL")
    p.add_argument("url", nargs="?", help="with `calibrate`: the pod to measure")
    p.add_argument("--rates", default="2,4,8,16,32,64",
                   help="with `calibrate`: request rates to measure at, rising, comma-separated; it stops past "
                        "saturation (default %(default)s)")
    p.add_argument("--seconds", type=float, default=8.0, help="with `calibrate`: seconds per rate (default %(default)s)")
    p.add_argument("--endpoint", default="completions", choices=("completions", "chat", "correct"),
                   help="with `calibrate`: the workload's route (default %(default)s: the reference workload)")
    p.add_argument("--prompts", default=None, help="with `calibrate`: a file of prompts (or texts to correct), "
                                                   "one per line, instead of the reference workload")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a scenario key, e.g. --set routers.policy=round_robin --set pods.count=100 "
                        "(repeatable; VALUE is read as YAML)")
    p.add_argument("--json", default=None, help="write every figure as JSON here")
    p.add_argument("--out", default=None,
                   help="write report.json, report.png and report.html (the plot and the tables) into this folder")
    p.add_argument("--check-slo", action="store_true",
                   help="exit 1 when a run misses the scenario's SLO (slo_p99_ms over the whole run)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def run(a) -> int:
    if a.scenario == "calibrate":
        return _calibrate(a)
    if a.url:
        raise ValueError(f"unexpected argument {a.url!r}: a URL goes with `fleetserve simulate calibrate URL`")
    import yaml

    from fleetserve.simulate import report, scenario
    from fleetserve.simulate.simulator import simulate_sweep, stderr_progress

    sc = scenario.load(a.scenario)
    if a.set:
        data = scenario.to_dict(sc)
        for item in a.set:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. routers.policy=p2c")
            scenario.override(data, key, yaml.safe_load(value))
        sc = scenario.from_dict(data, sc.name)
    result = simulate_sweep(sc, None if a.quiet else stderr_progress)
    print(report.text_table(result))
    if a.json:
        report.write_json(result, a.json)
    if a.out:
        from pathlib import Path

        out = Path(a.out)
        report.write_json(result, out / "report.json")
        report.write_png(result, out / "report.png")
        report.write_html(result, out / "report.html")
        print(f"report in {out}/report.html (and .json, .png)")
    runs = result["sweep"] if "sweep" in result else [{"result": result}]
    return 1 if a.check_slo and not all(r["result"]["slo_met"] for r in runs) else 0


def _calibrate(a) -> int:
    import json

    from fleetserve.simulate.calibrate import calibrate
    from fleetserve.simulate.report import write_json

    if not a.url:
        raise ValueError("fleetserve simulate calibrate URL: give the pod's URL, e.g. http://127.0.0.1:8100")
    try:
        rates = [float(r) for r in a.rates.split(",") if r.strip()]
    except ValueError:
        raise ValueError(f"--rates {a.rates!r}: expected numbers, e.g. 2,4,8,16") from None
    base = {"endpoint": a.endpoint, "prompts": a.prompts}
    result = calibrate(a.url, rates, a.seconds, base, progress=not a.quiet)
    print(json.dumps({"pods": result["pods"], "fit": result["fit"]}, indent=1))
    if a.json:
        write_json(result, a.json)
        print(f"use it in a scenario: pods: {{calibration: {a.json}}}")
    return 0
