"""A frontend process of a pod: HTTP on the shared port (SO_REUSEPORT), tokenizing,
detokenizing and answering, with the engine in the engine-core process."""

from __future__ import annotations

import logging
import os
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

from fleetserve.engine.core_client import CoreClient
from fleetserve.engine.ipc import Welcome
from fleetserve.model.config import ModelConfig
from fleetserve.model.tokenizer import Tokenizer
from fleetserve.server.app import PodServer
from fleetserve.server.draining import DrainingServer, uvicorn_config
from fleetserve.server.options import ServerOptions


@dataclass(frozen=True)
class FrontendConfig:
    model_dir: str
    host: str
    port: int
    core_address: str
    max_model_len: int
    max_num_seqs: int
    options: ServerOptions


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A listening socket that other frontends can bind too; the kernel spreads connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run_frontend(cfg: FrontendConfig, index: int) -> None:
    """Entry point of a frontend process."""
    opts = cfg.options
    logging.basicConfig(level=opts.log_level.upper(),
                        format=f"%(asctime)s %(levelname)s frontend-{index}: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the supervisor decides
    tokenizer = Tokenizer(cfg.model_dir)
    limits = Welcome(cfg.max_model_len, cfg.max_num_seqs, ModelConfig.from_dir(cfg.model_dir).vocab_size)
    pod = PodServer(CoreClient(cfg.core_address, limits), tokenizer, Path(cfg.model_dir), opts)
    sock = reuseport_socket(cfg.host, cfg.port)
    DrainingServer(uvicorn_config(pod.app, opts), pod, opts.drain_timeout, signals=(signal.SIGTERM,),
                   parent_pid=os.getppid()).run(sockets=[sock])
