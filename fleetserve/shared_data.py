"""Where the project's shared evaluation and corpus data live.

`../shared/data` next to the repository (see its README), or the directory in
the FLEETSERVE_DATA environment variable.
"""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    env = os.environ.get("FLEETSERVE_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def default_corpus() -> Path:
    return data_dir() / "corpus" / "wordnet-examples.txt"


def default_eval_set() -> Path:
    return data_dir() / "jfleg-dev"
