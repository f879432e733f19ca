"""A remote model's small files (config, tokenizer, generation config, index), fetched into a
local directory before anything else, so that a missing or malformed one fails the start
before the weights are transferred; the weights stay where they are and are streamed.

S3 lists the prefix and every file that is not a weight file is fetched; HTTP cannot list,
so the names a Hugging Face model directory uses are asked for (config.json must be there).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from fleetserve.storage.sources import NotFound, Source, StorageError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".onnx", ".msgpack", ".h5")
KNOWN_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "chat_template.jinja", "model.safetensors.index.json")
MAX_SMALL_FILE = 64 << 20  # anything bigger is not a config or a tokenizer


def default_cache_dir() -> Path:
    """$FLEETSERVE_CACHE_DIR, else $XDG_CACHE_HOME/fleetserve, else ~/.cache/fleetserve."""
    if os.environ.get("FLEETSERVE_CACHE_DIR"):
        return Path(os.environ["FLEETSERVE_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fleetserve"


def fetch_model_files(source: Source, cache_dir: Path) -> Path:
    """The model's non-weight files in a local directory (under cache_dir, one per source URL;
    fetched again at every start, so a changed config is seen)."""
    listed = source.list()
    if listed is None:
        names = list(KNOWN_FILES)
    else:
        if not listed:
            raise StorageError(f"{source.url}: no files there (check the bucket and prefix)")
        names = [n for n, size in listed.items() if not n.endswith(WEIGHT_SUFFIXES) and size <= MAX_SMALL_FILE]
        if "config.json" not in names:
            raise NotFound(f"{source.describe('config.json')}: no such object (the model's config is needed "
                           "first)")
    local = cache_dir / "files" / hashlib.sha256(source.url.encode()).hexdigest()[:16]
    local.mkdir(parents=True, exist_ok=True)
    (local / ".source").write_text(source.url + "\n")
    for name in names:
        if listed is not None:
            size = listed[name]
        else:
            try:
                size = source.stat(name).size
            except NotFound:
                if name == "config.json":
                    raise
                (local / name).unlink(missing_ok=True)  # optional, and absent there
                continue
            if size > MAX_SMALL_FILE:
                raise StorageError(f"{source.describe(name)}: {size} bytes, too big for a model's "
                                   "config or tokenizer file")
        data = source.read(name, 0, size)
        path = local / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # pods starting side by side share the directory
    return local
