"""A frontend process of a pod: HTTP on the shared port (SO_REUSEPORT), tokenizing,
detokenizing and answering, with the engine in the engine-core process (or, in a
pod with several, each request in one of them: engine/core_pool.py)."""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from fleetserve.engine.core_client import CoreClient
from fleetserve.engine.core_pool import CorePool
from fleetserve.engine.ipc import Welcome
from fleetserve.engine.process_name import FRONTEND, set_process_name
from fleetserve.model.config import ModelConfig
from fleetserve.model.tokenizer import Tokenizer
from fleetserve.server.app import PodServer
from fleetserve.server.draining import DrainingServer
from fleetserve.server.http_server import listen_socket
from fleetserve.server.options import ServerOptions


@dataclass(frozen=True)
class FrontendConfig:
    model_dir: str
    host: str
    port: int
    core_addresses: tuple[str, ...]  # one per engine core (server/pod.py, default_engines)
    max_model_len: int
    max_num_seqs: int
    options: ServerOptions


def run_frontend(cfg: FrontendConfig, index: int) -> None:
    """Entry point of a frontend process."""
    set_process_name(FRONTEND)
    opts = cfg.options
    logging.basicConfig(level=opts.log_level.upper(),
                        format=f"%(asctime)s %(levelname)s frontend-{index}: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the supervisor decides
    tokenizer = Tokenizer(cfg.model_dir)
    limits = Welcome(cfg.max_model_len, cfg.max_num_seqs, ModelConfig.from_dir(cfg.model_dir).vocab_size)
    clients = [CoreClient(address, limits) for address in cfg.core_addresses]
    engine = clients[0] if len(clients) == 1 else CorePool(clients)
    pod = PodServer(engine, tokenizer, Path(cfg.model_dir), opts)
    sock = listen_socket(cfg.host, cfg.port, reuse_port=True)
    DrainingServer(pod, opts, signals=(signal.SIGTERM,), parent_pid=os.getppid()).run(sock)
