"""Start one pod: load the model (failing fast on a bad directory), then serve HTTP."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import uvicorn

from fleetserve.engine.async_engine import AsyncEngine
from fleetserve.engine.engine_core import EngineConfig, EngineCore
from fleetserve.model.config import ModelConfig
from fleetserve.model.tokenizer import Tokenizer
from fleetserve.server.app import DEFAULT_MAX_BODY_BYTES, PodServer


def build_server(model_dir: str | Path, config: EngineConfig, served_model_name: str | None = None,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> PodServer:
    model_config = ModelConfig.from_dir(model_dir)  # the most basic problems first, before the tokenizer's
    tokenizer = Tokenizer(model_dir)
    core = EngineCore(model_dir, config, tokenizer.eos_token_ids, model_config)
    return PodServer(AsyncEngine(core), tokenizer, model_dir, served_model_name, max_body_bytes)


def serve(model_dir: str | Path, host: str, port: int, config: EngineConfig, served_model_name: str | None = None,
          max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, log_level: str = "info") -> None:
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    start = time.monotonic()
    server = build_server(model_dir, config, served_model_name, max_body_bytes)
    mc = server.engine.core.model_config
    print(f"fleetserve: loaded {mc.architecture} ({mc.num_parameters / 1e6:.1f}M parameters) from {model_dir} "
          f"in {time.monotonic() - start:.1f}s; {config.max_num_seqs} slots x {config.max_model_len} tokens",
          file=sys.stderr)
    print(f"fleetserve: serving model {server.model_name!r} on http://{host}:{port}  (Ctrl-C to stop)",
          file=sys.stderr, flush=True)
    uvicorn.run(server.app, host=host, port=port, loop="uvloop", http="httptools", log_level=log_level,
                access_log=False, timeout_graceful_shutdown=30)
