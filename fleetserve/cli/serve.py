"""`fleetserve serve MODEL_DIR`: one pod, in one process or as a supervisor with frontends."""

from __future__ import annotations

import argparse

from fleetserve.cli.engine_args import add_engine_arguments, engine_config

HELP = "serve a model directory over HTTP (OpenAI-compatible)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", help="Hugging Face model directory (config.json, tokenizer.json, *.safetensors), "
                                     "or the same files in object storage: s3://BUCKET/PREFIX (endpoint and "
                                     "credentials from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...) or an http(s):// URL "
                                     "that answers range requests")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    p.add_argument("--port", type=int, default=8100, help="port to listen on (default %(default)s)")
    p.add_argument("--served-model-name", default=None, help="model name in the API (default: directory name)")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="largest request body accepted (default 1 MiB)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="log messages at this level and above (default %(default)s)")
    g = p.add_argument_group("pod")
    g.add_argument("--frontends", type=int, default=None,
                   help="HTTP frontend processes sharing the port, with the engine in its own process "
                        "(default: one per 4 cores, at least 1); 0 runs everything in one process")
    g.add_argument("--engines", type=int, default=None,
                   help="engine-core processes, each with the model and --max-num-seqs slots of its own, each request "
                        "running in one of them (default: for a model of up to 100M parameters on a CPU, one per core "
                        "with one thread each, at most 8; otherwise, and with --threads or --device cuda, 1)")
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
    add_engine_arguments(p)


def run(a: argparse.Namespace) -> None:
    from fleetserve.engine.openmp import choose_serving_wait

    choose_serving_wait()  # first: nothing may have loaded torch yet
    from fleetserve.server.options import ServerOptions

    if a.engines is not None and a.engines < 1:
        raise ValueError(f"--engines must be at least 1, got {a.engines}")
    if (a.frontends is not None and a.frontends < 0) or a.max_waiting < 0 or a.drain_timeout < 0 \
            or a.request_timeout < 0 or a.engine_stall_timeout < 0 or a.request_read_timeout < 0 \
            or a.max_queue_time < 0:
        raise ValueError("--frontends, --max-waiting, --max-queue-time and the timeouts must not be negative")
    if a.max_body_bytes < 1:
        raise ValueError("--max-body-bytes must be positive")
    from fleetserve.engine.model_location import locate_model
    from fleetserve.model.config import ModelConfig
    from fleetserve.server.pod import default_engines, default_frontends, default_threads

    config = engine_config(a)
    model_dir = locate_model(a.model_dir, config)  # a remote model's config and tokenizer, fetched first
    name = a.served_model_name or (a.model_dir.rstrip("/").rsplit("/", 1)[-1] if config.weights_from else None)
    options = ServerOptions(name, a.max_body_bytes, a.request_timeout or None, a.max_waiting,
                            a.drain_timeout, a.log_level, a.engine_stall_timeout, a.request_read_timeout)
    config.max_queue_time = a.max_queue_time
    frontends = default_frontends() if a.frontends is None else a.frontends
    engines = a.engines
    if engines is None:
        engines = 1 if frontends == 0 else \
            default_engines(ModelConfig.from_dir(model_dir).num_parameters, config.device, config.threads)
    if config.threads is None:
        config.threads = default_threads(engines)
    if frontends == 0:
        if engines > 1:
            raise ValueError("--engines above 1 needs the multi-process pod: leave out --frontends 0")
        from fleetserve.server.serve import serve

        serve(model_dir, a.host, a.port, config, options)
        return
    from fleetserve.server.pod import serve_pod

    serve_pod(model_dir, a.host, a.port, config, frontends, options, engines)
