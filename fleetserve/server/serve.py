"""Start one pod: load the model (failing fast on a bad directory), then serve HTTP."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from fleetserve.engine.config import EngineConfig
from fleetserve.engine.engine_core import EngineCore
from fleetserve.engine.inproc_client import InProcessClient
from fleetserve.engine.openmp import waiting
from fleetserve.http_common import check_port_free
from fleetserve.model.config import ModelConfig
from fleetserve.model.loader import bfloat16_hint
from fleetserve.model.tokenizer import Tokenizer
from fleetserve.server.app import PodServer
from fleetserve.server.draining import DrainingServer
from fleetserve.server.http_server import listen_socket
from fleetserve.server.options import ServerOptions


def build_server(model_dir: str | Path, config: EngineConfig, options: ServerOptions = ServerOptions()) -> PodServer:
    model_config = ModelConfig.from_dir(model_dir)  # the most basic problems first, before the tokenizer's
    tokenizer = Tokenizer(model_dir)
    core = EngineCore(model_dir, config, tokenizer.eos_token_ids, model_config)
    return PodServer(InProcessClient(core, options.max_waiting), tokenizer, model_dir, options)


def serve(model_dir: str | Path, host: str, port: int, config: EngineConfig,
          options: ServerOptions = ServerOptions()) -> None:
    """The whole pod in one process: HTTP on the event loop, the engine on a thread."""
    logging.basicConfig(level=options.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    check_port_free(host, port)  # before the model loads
    start = time.monotonic()
    server = build_server(model_dir, config, options)
    mc = server.engine.core.model_config
    print(f"fleetserve: loaded {mc.architecture} ({mc.num_parameters / 1e6:.1f}M parameters) from "
          f"{config.weights_from or model_dir} in {time.monotonic() - start:.1f}s; {config.max_num_seqs} slots x {config.max_model_len} tokens; "
          f"{config.threads or 'default'} engine thread(s) (waiting: {waiting()})",
          file=sys.stderr)
    hint = bfloat16_hint(config.dtype, config.device)
    if hint:
        print(f"fleetserve: {hint}", file=sys.stderr)
    print(f"fleetserve: serving model {server.model_name!r} on http://{host}:{port}  (Ctrl-C to stop)",
          file=sys.stderr, flush=True)
    runner = DrainingServer(server, options, stall_timeout=options.engine_stall_timeout)
    runner.run(listen_socket(host, port))
    if runner.exit_status:
        sys.exit(runner.exit_status)
