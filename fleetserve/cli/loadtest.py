"""`fleetserve loadtest`: its options and what runs it."""

from __future__ import annotations

import argparse
from fleetserve.loadtest.runner import LoadTestOptions, default_report_paths, describe, run_loadtest

HELP = 'open-loop load test of a server: profiles, SLO gate, shadow, reports'


def add_arguments(p) -> None:
    p.add_argument("url", help="base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8100")
    g = p.add_argument_group("load")
    g.add_argument("--profile", default="constant:10@10s",
                   help="offered load over time: constant:RATE@DUR, ramp:FROM..TO@DUR, step:R1@D1,R2@D2,..., "
                        "diurnal:MIN..MAX@PERIOD; join segments with + (default %(default)s)")
    g.add_argument("--arrival", choices=["poisson", "constant"], default="poisson",
                   help="spacing of requests at a given rate (default %(default)s)")
    g.add_argument("--seed", type=int, default=0, help="seed of the arrival times and reference prompts")
    g.add_argument("--timeout", type=float, default=30.0, help="seconds before a request counts as timed out")
    g.add_argument("--workers", type=int, default=1,
                   help="sender processes, each on its own core, for rates beyond one core (default %(default)s)")
    g.add_argument("--max-connections", type=int, default=10_000,
                   help="open connections at most; requests beyond wait, and count as client lag")
    g = p.add_argument_group("requests")
    g.add_argument("--endpoint", choices=["completions", "chat", "correct"], default="completions",
                   help="API the requests go to: /v1/completions, /v1/chat/completions or /v1/correct (default %(default)s)")
    g.add_argument("--prompts", default=None, metavar="FILE",
                   help="one prompt per line, sent in order and repeated (e.g. ../shared/data/jfleg-dev/dev.src); "
                        "default: the reference workload of fixed-length token-id prompts")
    g.add_argument("--prompt-len", type=int, default=50, help="tokens per reference prompt (default %(default)s)")
    g.add_argument("--vocab-size", type=int, default=1000,
                   help="reference prompt ids are drawn from [10, this) (default %(default)s)")
    g.add_argument("--max-tokens", type=int, default=50, help="completion tokens asked for (default %(default)s)")
    g.add_argument("--ignore-eos", action=argparse.BooleanOptionalAction, default=None,
                   help="generate max-tokens whatever the model says (default: on for the reference workload)")
    g.add_argument("--stream", action="store_true", help="stream answers (needed for ttft, tpot and itl)")
    g.add_argument("--model", default=None, help="model name to send (default: the first the server lists)")
    g = p.add_argument_group("results")
    g.add_argument("--window", type=float, default=5.0, help="seconds per reporting window (default %(default)s)")
    g.add_argument("--slo", default=None,
                   help="objectives, e.g. 'p99_e2el<1s,error_rate<0.0001'; exit 1 when one fails overall or in a window")
    g.add_argument("--shadow", default=None, metavar="URL",
                   help="also send every request to this candidate and report agreement and latency difference")
    g.add_argument("--out", default=None, metavar="DIR", help="write report.json, report.png and report.html here")
    g.add_argument("--json", default=None, help="write the JSON report here")
    g.add_argument("--png", default=None, help="write the plot here")
    g.add_argument("--html", default=None, help="write the self-contained HTML report here")
    g.add_argument("--quiet", action="store_true", help="no progress line")


def run(a) -> int:
    o = LoadTestOptions(
        url=a.url, profile=a.profile, arrival=a.arrival, seed=a.seed, endpoint=a.endpoint, prompts=a.prompts,
        prompt_len=a.prompt_len, vocab_size=a.vocab_size, max_tokens=a.max_tokens, ignore_eos=a.ignore_eos,
        stream=a.stream, model=a.model, timeout=a.timeout, window=a.window, slo=a.slo, shadow=a.shadow,
        workers=a.workers, max_connections=a.max_connections, json_path=a.json, png_path=a.png,
        html_path=a.html, progress=not a.quiet)
    default_report_paths(o, a.out)
    rep, status = run_loadtest(o)
    print(describe(rep))
    for label, path in (("json", o.json_path), ("png", o.png_path), ("html", o.html_path)):
        if path:
            print(f"  {label}: {path}")
    return status
