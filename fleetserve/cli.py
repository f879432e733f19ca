"""The `fleetserve` command: one subcommand per job, each documented in --help."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the engine imports torch: only the commands that run it pay for that
    from fleetserve.engine.engine_core import EngineConfig


def _engine_args(p: argparse.ArgumentParser, max_num_seqs: int = 64) -> None:
    g = p.add_argument_group("engine")
    g.add_argument("--max-num-seqs", type=int, default=max_num_seqs, help="slots: requests decoded together (default %(default)s)")
    g.add_argument("--max-model-len", type=int, default=256, help="prompt + completion tokens per slot (default %(default)s)")
    g.add_argument("--max-prefill-tokens", type=int, default=4096, help="prompt tokens admitted per step (default %(default)s)")
    g.add_argument("--load-format", choices=["auto", "safetensors", "dummy"], default="auto",
                   help="'dummy': random weights at the config's shape, no checkpoint needed")
    g.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                   help="weights and activations (auto: float32 on CPU, bfloat16 on a GPU)")
    g.add_argument("--device", default="cpu",
                   help="cpu (default), cuda or cuda:N: where the weights, KV cache and products live")
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                   help="torch.compile the decode step (see BENCHMARKS.md for when it helps)")
    g.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: torch's choice; fleetserve serve: the cores its HTTP processes "
                        "leave free, at least 1)")
    g.add_argument("--onednn-linear", action=argparse.BooleanOptionalAction, default=True,
                   help="float linear weights reordered once into oneDNN's layout (CPU; faster, see BENCHMARKS.md)")
    g.add_argument("--async-scheduling", action=argparse.BooleanOptionalAction, default=False,
                   help="launch each step before the previous one's bookkeeping, on a worker thread "
                        "(same outputs; see BENCHMARKS.md for when it pays)")
    g.add_argument("--seed", type=int, default=0, help="seed for dummy weights")
    _quantization_args(g)


def _quantization_args(g, prefix: str = "", what: str = "") -> None:
    g.add_argument(f"--{prefix}quantization", choices=["auto", "none", "int8", "fp8", "fp8-weight"], default="auto",
                   help=f"{what}8-bit weights with one scale per output channel: int8 (CPU) or fp8 (GPU; emulated "
                        "on CPU) with activations quantized per token, or fp8-weight (float8 weights only, "
                        "activations unquantized) quantize a float checkpoint as it loads; auto serves the "
                        "checkpoint as stored (default %(default)s)")
    g.add_argument(f"--{prefix}quantize-groups", default="attention,mlp", metavar="GROUPS",
                   help=f"{what}layer groups to quantize with --{prefix}quantization: attention, mlp, lm_head, "
                        "comma-separated (default %(default)s; embeddings and the KV cache never are)")


def _engine_config(a: argparse.Namespace) -> EngineConfig:
    from fleetserve.engine.engine_core import EngineConfig

    return EngineConfig(max_num_seqs=a.max_num_seqs, max_model_len=a.max_model_len,
                        max_prefill_tokens=a.max_prefill_tokens, load_format=a.load_format, dtype=a.dtype,
                        compile=a.compile, seed=a.seed, threads=a.threads, async_scheduling=a.async_scheduling,
                        quantization=a.quantization, quantize_groups=_groups(a.quantize_groups),
                        onednn_linear=a.onednn_linear, device=a.device)


def _groups(text: str) -> tuple[str, ...]:
    from fleetserve.model.quantization import parse_groups

    return tuple(sorted(parse_groups(text)))


def cmd_serve(a: argparse.Namespace) -> None:
    from fleetserve.server.options import ServerOptions

    if (a.frontends is not None and a.frontends < 0) or a.max_waiting < 0 or a.drain_timeout < 0 \
            or a.request_timeout < 0 or a.engine_stall_timeout < 0 or a.request_read_timeout < 0 \
            or a.max_queue_time < 0:
        raise ValueError("--frontends, --max-waiting, --max-queue-time and the timeouts must not be negative")
    if a.max_body_bytes < 1:
        raise ValueError("--max-body-bytes must be positive")
    options = ServerOptions(a.served_model_name, a.max_body_bytes, a.request_timeout or None, a.max_waiting,
                            a.drain_timeout, a.log_level, a.engine_stall_timeout, a.request_read_timeout)
    from fleetserve.server.pod import default_frontends, default_threads

    config = _engine_config(a)
    config.max_queue_time = a.max_queue_time
    frontends = default_frontends() if a.frontends is None else a.frontends
    if config.threads is None:
        config.threads = default_threads(frontends)
    if frontends == 0:
        from fleetserve.server.serve import serve

        serve(a.model_dir, a.host, a.port, config, options)
        return
    from fleetserve.server.pod import serve_pod

    serve_pod(a.model_dir, a.host, a.port, config, frontends, options)


def cmd_init_model(a: argparse.Namespace) -> None:
    from fleetserve.tools.init_model import init_model

    out = init_model(a.out, a.preset, weights=not a.no_weights, seed=a.seed)
    print(f"wrote {a.preset} model to {out}" + (" (config and tokenizer only)" if a.no_weights else ""))


def cmd_train_demo(a: argparse.Namespace) -> None:
    from fleetserve.shared_data import default_corpus, default_eval_set
    from fleetserve.tools.train_demo import train_demo
    from fleetserve.training.recipe import Recipe

    given = {"steps": a.steps, "batch_size": a.batch_size, "conservative_steps": a.conservative_steps}
    recipe = Recipe(seed=a.seed, threads=a.threads, **{k: v for k, v in given.items() if v is not None})
    eval_set = None if a.no_eval else (a.eval_set or default_eval_set())
    if eval_set is not None and not Path(eval_set).is_dir():
        print(f"fleetserve: note: no evaluation set at {eval_set}; the model card will have no scores", file=sys.stderr)
        eval_set = None
    train_demo(a.out, a.corpus or default_corpus(), recipe, eval_set, progress=not a.quiet,
               from_main_phase=a.from_main_phase)


def cmd_quantize(a: argparse.Namespace) -> None:
    from fleetserve.tools.quantize import run_quantize

    sys.exit(run_quantize(a))


def cmd_bench_quant(a: argparse.Namespace) -> None:
    import json

    from fleetserve.tools.quant_bench import run_quant_bench

    result = run_quant_bench(a.model, a.load_format, a.max_num_seqs, a.requests, a.rounds)
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")


def cmd_eval(a: argparse.Namespace) -> None:
    from fleetserve.tools.eval import run_eval

    sys.exit(run_eval(a))


def cmd_bench(a: argparse.Namespace) -> None:
    from fleetserve.tools.bench import run_bench

    run_bench(a, _engine_config(a))


def cmd_loadtest(a: argparse.Namespace) -> None:
    from fleetserve.tools.loadtest.runner import run_cli

    sys.exit(run_cli(a))


def cmd_bench_loadtest(a: argparse.Namespace) -> None:
    import json

    from fleetserve.tools.loadtest.self_bench import run_self_bench

    rates = [float(r) for r in a.rates.split(",")]
    result = run_self_bench(rates, a.seconds, baseline=not a.no_baseline)
    for name in ("fleetserve", "httpx_baseline"):
        if name in result:
            print(f"{name}: highest rate sustained with <1% late sends on one core: "
                  f"{result[name]['highest_sustained_rate']:.0f} requests/s")
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")


def cmd_bench_pod(a: argparse.Namespace) -> None:
    import json

    from fleetserve.tools.pod_bench import run_pod_bench

    frontends = [int(n) for n in a.frontends.split(",")]
    result = run_pod_bench(a.model, frontends, a.rate, a.seconds, a.max_num_seqs, a.serve_args.split(),
                           a.async_scheduling, a.warmup, a.profile, a.rounds)
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")


def cmd_stub_server(a: argparse.Namespace) -> None:
    from fleetserve.tools.loadtest.stub_server import run_cli

    run_cli(a)


def cmd_up(a: argparse.Namespace) -> None:
    from fleetserve.fleet.local_fleet import run_cli

    run_cli(a)


def cmd_demo_fleet(a: argparse.Namespace) -> None:
    from fleetserve.tools.fleet_demo import run_cli

    run_cli(a)


def cmd_autoscale(a: argparse.Namespace) -> None:
    from fleetserve.fleet.kubernetes_scaler import run_cli

    run_cli(a)


def cmd_bench_slo(a: argparse.Namespace) -> None:
    from fleetserve.tools.slo_bench import run_cli

    run_cli(a)


def cmd_bench_router(a: argparse.Namespace) -> None:
    from fleetserve.tools.router_bench import run_cli

    run_cli(a)


def cmd_router(a: argparse.Namespace) -> None:
    from fleetserve.fleet.router.server import run_cli

    run_cli(a)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fleetserve", description="Serve a small language model to many short requests.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="serve a model directory over HTTP (OpenAI-compatible)")
    p.add_argument("model_dir", help="Hugging Face model directory (config.json, tokenizer.json, *.safetensors)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8100)
    p.add_argument("--served-model-name", default=None, help="model name in the API (default: directory name)")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="largest request body accepted (default 1 MiB)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    g = p.add_argument_group("pod")
    g.add_argument("--frontends", type=int, default=None,
                   help="HTTP frontend processes sharing the port, with the engine in its own process "
                        "(default: one per 4 cores, at least 1); 0 runs everything in one process")
    g.add_argument("--max-waiting", type=int, default=1024,
                   help="requests waiting for a slot before new ones get 429 with Retry-After (default %(default)s; "
                        "0: no bound)")
    g.add_argument("--max-queue-time", type=float, default=10.0,
                   help="seconds a request may wait for a slot; an overloaded pod refuses it after that with 429 and "
                        "Retry-After, so that it is retried elsewhere instead of answered too late "
                        "(default %(default)s; 0: wait for ever)")
    g.add_argument("--request-timeout", type=float, default=60.0,
                   help="seconds a generation may take before it is cancelled with a 504 (default %(default)s; 0: none)")
    g.add_argument("--drain-timeout", type=float, default=30.0,
                   help="seconds SIGTERM waits for requests in flight before stopping anyway (default %(default)s)")
    g.add_argument("--engine-stall-timeout", type=float, default=120.0,
                   help="seconds the engine's step loop may go without turning before the pod counts it stuck and "
                        "exits 1 so that its supervisor replaces it; slow steps below it are waited for "
                        "(default %(default)s; 0: never)")
    g.add_argument("--request-read-timeout", type=float, default=30.0,
                   help="seconds a client has to send a whole request (headers and body) from its first byte, and "
                        "a new connection its first byte; then 408 and the connection closes "
                        "(default %(default)s; 0: none)")
    _engine_args(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("init-model", help="write a model directory with random weights at a preset shape")
    p.add_argument("--out", required=True, help="directory to write")
    p.add_argument("--preset", default="5m", help="tiny-llama, tiny-qwen2, 5m, qwen2.5-0.5b (default %(default)s)")
    p.add_argument("--no-weights", action="store_true", help="config and tokenizer only (serve with --load-format dummy)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_init_model)

    p = sub.add_parser("train-demo", help="train the bundled grammar-correction model from the corpus (CPU, about an hour)")
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--corpus", default=None, help="clean sentences, one per line (default: ../shared/data/corpus/wordnet-examples.txt)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps of the main phase (default: the recipe's, 6000)")
    p.add_argument("--batch-size", type=int, default=None, help="pairs per step (default: the recipe's, 32)")
    p.add_argument("--conservative-steps", type=int, default=None,
                   help="steps of the second, conservative phase (more clean pairs, fewer errors; "
                        "default: the recipe's, 1500)")
    p.add_argument("--from-main-phase", default=None, metavar="DIR",
                   help="skip the main phase: start from a model this command wrote with --conservative-steps 0")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--eval-set", default=None, help="score the model on this set for its model card (default: JFLEG dev)")
    p.add_argument("--no-eval", action="store_true", help="skip scoring")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_train_demo)

    p = sub.add_parser("eval", help="score a correction model or server (GLEU on JFLEG dev); with --baseline, the quality gate")
    from fleetserve.tools.eval import add_arguments

    add_arguments(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("bench-quant", help="8-bit matrix-product paths at the model's shapes, and engine "
                                           "throughput per precision (float32, bfloat16, int8 by group)")
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--load-format", choices=["auto", "safetensors", "dummy"], default="auto",
                   help="'dummy': random weights at the config's shape")
    p.add_argument("--max-num-seqs", type=int, default=32, help="slots (default %(default)s)")
    p.add_argument("--requests", type=int, default=None, help="requests per timed run (default: one per slot)")
    p.add_argument("--rounds", type=int, default=2,
                   help="every variant this many times, interleaved; the median counts (default %(default)s)")
    p.add_argument("--json", default=None, help="write the results as JSON here")
    p.set_defaults(func=cmd_bench_quant)

    p = sub.add_parser("quantize", help="write a compressed-tensors checkpoint with 8-bit channel-wise weights; "
                                        "--gate refuses one that corrects worse than the original")
    from fleetserve.tools.quantize import add_arguments as quantize_arguments
    quantize_arguments(p)
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("bench", help="offline throughput on the reference workload, vs Hugging Face generate")
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--num-prompts", type=int, default=64, help="requests for fleetserve (default %(default)s)")
    p.add_argument("--input-len", type=int, default=50)
    p.add_argument("--output-len", type=int, default=50)
    p.add_argument("--baseline", choices=["hf", "none"], default="hf", help="also run Hugging Face generate")
    p.add_argument("--hf-batch-sizes", default="1,16,64", help="batch sizes tried for the baseline; the best counts")
    p.add_argument("--hf-max-requests", type=int, default=64,
                   help="requests per baseline batch size (fewer for batch 1 on big models: see --hf-batch1-requests)")
    p.add_argument("--hf-batch1-requests", type=int, default=8, help="requests for the batch-size-1 baseline")
    p.add_argument("--repeat", type=int, default=1, help="timed runs of fleetserve; the best counts")
    p.add_argument("--json", default=None, help="write the results as JSON here")
    _engine_args(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("loadtest", help="open-loop load test of a server: profiles, SLO gate, shadow, reports")
    from fleetserve.tools.loadtest.runner import add_arguments as loadtest_arguments

    loadtest_arguments(p)
    p.set_defaults(func=cmd_loadtest)

    p = sub.add_parser("bench-loadtest", help="the highest rate the load tester sustains on one core, "
                                              "vs an httpx sender, against the stub server")
    p.add_argument("--rates", default="250,500,1000,2000,4000,6000,8000,10000,12000,14000,16000,20000,24000,28000",
                   help="offered rates to step through, stopping at the first not sustained")
    p.add_argument("--seconds", type=float, default=5.0, help="seconds per rate (default %(default)s)")
    p.add_argument("--no-baseline", action="store_true", help="skip the httpx baseline")
    p.add_argument("--json", default=None, help="write the results as JSON here")
    p.set_defaults(func=cmd_bench_loadtest)

    p = sub.add_parser("bench-pod", help="HTTP throughput at saturation per pod layout, as a ratio to the "
                                         "offline engine in the same run")
    p.add_argument("--model", default="models/correct-6m", help="model directory (default %(default)s)")
    p.add_argument("--frontends", default="0,1,2", help="--frontends settings to compare (default %(default)s)")
    p.add_argument("--async-scheduling", default="both", choices=["off", "on", "both"],
                   help="run each --frontends setting with the overlapped step loop off, on or both (default both)")
    p.add_argument("--rate", type=float, default=None,
                   help="offered requests/s, above what the pod can do (default: 1.25x the offline throughput)")
    p.add_argument("--seconds", type=float, default=20.0, help="measured seconds per layout (default %(default)s)")
    p.add_argument("--warmup", type=float, default=None,
                   help="seconds before measuring (default: time for 1.5 batches at the offline rate, at least 5)")
    p.add_argument("--max-num-seqs", type=int, default=64)
    p.add_argument("--serve-args", default="", help="more `fleetserve serve` options, e.g. '--load-format dummy'")
    p.add_argument("--profile", default=None, metavar="DIR",
                   help="sample every pod process with py-spy while measuring (first round); write per-layout "
                        "summaries here")
    p.add_argument("--rounds", type=int, default=1,
                   help="repeat offline + every layout this many times and report the median of the per-round "
                        "ratios, for shared hosts whose speed drifts (default %(default)s)")
    p.add_argument("--json", default=None, help="write the results as JSON here")
    p.set_defaults(func=cmd_bench_pod)

    p = sub.add_parser("stub-server", help="a model-less OpenAI-shaped server with set latency and errors, "
                                           "for measuring the load tester")
    from fleetserve.tools.loadtest.stub_server import add_arguments as stub_arguments

    stub_arguments(p)
    p.set_defaults(func=cmd_stub_server)

    p = sub.add_parser("router", help="load-balancing proxy in front of pods: power of two choices over "
                                      "discovered endpoints, retries, health checks, outlier ejection")
    from fleetserve.fleet.router.server import add_arguments as router_arguments

    router_arguments(p)
    p.set_defaults(func=cmd_router)

    p = sub.add_parser("up", help="a self-sizing local fleet: router, supervisor and autoscaler with pods as "
                                  "child processes (the README's main job)")
    from fleetserve.fleet.local_fleet import add_arguments as up_arguments

    up_arguments(p)
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("demo-fleet", help="fleetserve up under a load test: pods added on a ramp and removed "
                                          "after it, or a pod killed under load (--scenario chaos); plots and checks")
    from fleetserve.tools.fleet_demo import add_arguments as demo_fleet_arguments

    demo_fleet_arguments(p)
    p.set_defaults(func=cmd_demo_fleet)

    p = sub.add_parser("autoscale", help="the autoscaler for Kubernetes: scale a Deployment on its pods' "
                                         "in-flight requests (the policy of fleetserve up)")
    from fleetserve.fleet.kubernetes_scaler import add_arguments as autoscale_arguments

    autoscale_arguments(p)
    p.set_defaults(func=cmd_autoscale)

    p = sub.add_parser("bench-slo", help="ramp one pod and report the highest rate and concurrency that meet an "
                                         "SLO: the autoscaler's target_per_pod (also: fleetserve bench pod URL)")
    from fleetserve.tools.slo_bench import add_arguments as slo_bench_arguments

    slo_bench_arguments(p)
    p.set_defaults(func=cmd_bench_slo)

    p = sub.add_parser("bench-router", help="router throughput per core vs an aiohttp proxy and HAProxy, added "
                                            "latency, and P2C vs round robin tail latency with a slow upstream")
    from fleetserve.tools.router_bench import add_arguments as router_bench_arguments

    router_bench_arguments(p)
    p.set_defaults(func=cmd_bench_router)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["bench", "pod"]:  # the spelling of issue 8; bench-slo is the command
        argv = ["bench-slo", *argv[2:]]
    args = build_parser().parse_args(argv)
    from fleetserve.model.config import ModelLoadError

    try:
        args.func(args)
    except (ModelLoadError, ValueError, FileNotFoundError, ConnectionError) as e:
        print(f"fleetserve: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
