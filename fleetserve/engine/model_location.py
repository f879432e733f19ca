"""Where a model is: a local directory, or object storage (s3://BUCKET/PREFIX, http(s)://...).

A remote model's small files (config, tokenizer) are fetched into a local directory first,
which every process of the pod then reads as it would a local model; its weights are
streamed by the engine core from where they are, through the block cache
(storage/, model/checkpoint.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fleetserve.storage.block_cache import BlockCache
from fleetserve.storage.model_files import default_cache_dir, fetch_model_files
from fleetserve.storage.sources import Source, is_remote, open_source

if TYPE_CHECKING:
    from fleetserve.engine.config import EngineConfig


def locate_model(location: str | Path, config: EngineConfig) -> Path:
    """The local directory to read the model's config and tokenizer from; for a remote model
    its small files are fetched there now (an error names the missing or unreadable object)
    and `config.weights_from` is set so that the engine streams the weights."""
    if not is_remote(location):
        return Path(location)
    local = fetch_model_files(open_source(str(location), config.fetch_inflight), _cache_dir(config))
    config.weights_from = str(location)
    return local


def weights_source(config: EngineConfig) -> tuple[Source | None, BlockCache | None]:
    """The source the engine streams the weights from (None: the model directory) and its cache."""
    if not config.weights_from:
        return None, None
    source = open_source(config.weights_from, config.fetch_inflight)
    if config.cache_bytes <= 0:
        return source, None
    return source, BlockCache(_cache_dir(config) / "blocks", config.cache_bytes)


def _cache_dir(config: EngineConfig) -> Path:
    return Path(config.cache_dir) if config.cache_dir else default_cache_dir()
