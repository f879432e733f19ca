"""`fleetserve bench-start`: how fast a pod starts, and how fast weights load, from local disk
and from a real object store, against the loaders a platform team would otherwise pick.

1. Pod start: `python -c "import torch"` and `fleetserve serve MODEL` from exec to the first
   200 of /ready, for each pod layout and for the model in SeaweedFS (an empty block cache, then
   the cache the previous start left), alternating, `rounds` times each; medians.
2. Weights: a checkpoint of the Qwen2.5-0.5B shape (random weights, written once per dtype) put
   into the same model by fleetserve (local files; S3 with an empty cache, without a cache, with
   the cache warm), a plain `safetensors` load, Run:ai Model Streamer (local and S3) and
   fastsafetensors (local; it reads files only). Each load runs in a fresh process, timed from
   the model's construction to its last tensor placed (interpreter and torch import excluded:
   the same for all); the page cache holds the local files for every loader alike. With
   `device` a GPU, every loader fills a model allocated there, and one more case loads on the
   CPU and moves the model afterwards (what fleetserve did before it streamed to the device);
   `local_only` leaves out the object store (a GPU machine without SeaweedFS).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fleetserve.benchmarks.host import cpu_description
from fleetserve.benchmarks.object_store import ObjectStore, seaweedfs
from fleetserve.benchmarks.procs import wait_ready
from fleetserve.http_common import free_port

LOADERS = ("fleetserve local", "fleetserve s3, empty cache", "fleetserve s3, no cache", "fleetserve s3, warm cache",
           "safetensors local", "runai local", "runai s3", "fastsafetensors local")
MOVED = "fleetserve local, on the CPU then moved"  # a GPU's baseline: the whole model through host memory
PACKAGES = {"runai": "runai_model_streamer", "fastsafetensors": "fastsafetensors"}  # loader prefix -> module


def loaders_for(device: str, local_only: bool) -> list[str]:
    """The cases of one run; another library's loader only where it is installed (a GPU image may
    lack them), saying so."""
    names = [n for n in LOADERS if not (local_only and "s3" in n)]
    missing = {p for p in PACKAGES.values() if importlib.util.find_spec(p) is None}
    if missing:
        _log(f"not installed, left out: {', '.join(sorted(missing))}")
        names = [n for n in names if PACKAGES.get(n.split()[0]) not in missing]
    return names + [MOVED] if device != "cpu" else names


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _ready_after(args: list[str], env: dict[str, str], timeout: float = 300.0) -> float:
    """Seconds from exec of `fleetserve serve ARGS` to its first 200 on /ready."""
    port = free_port()
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "fleetserve", "serve", *args, "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        try:
            wait_ready(f"http://127.0.0.1:{port}", proc, timeout, f"fleetserve serve {' '.join(args)}", poll=0.01)
        except RuntimeError as e:
            tail = proc.stderr.read().decode()[-1500:] if proc.poll() is not None else ""
            raise RuntimeError(f"{e}: {tail}") from None
        return time.monotonic() - started
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _import_torch() -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    return time.monotonic() - started


def pod_start(model: Path, store: ObjectStore, rounds: int, work: Path) -> dict[str, Any]:
    store.upload(model, "models", "bundled")
    env = {**os.environ, **store.env()}
    cache = work / "pod-cache"

    def from_s3(empty: bool) -> float:
        if empty:
            shutil.rmtree(cache, ignore_errors=True)
        return _ready_after(["s3://models/bundled", "--cache-dir", str(cache)], env)

    cases = {
        "python -c 'import torch'": _import_torch,
        "serve, one process (--frontends 0)": lambda: _ready_after([str(model), "--frontends", "0"], env),
        "serve, default layout": lambda: _ready_after([str(model)], env),
        "serve s3://, default layout, empty cache": lambda: from_s3(True),
        "serve s3://, default layout, warm cache": lambda: from_s3(False),
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    for r in range(rounds):
        for name, run in cases.items():  # in this order each round: the warm start follows the empty one
            times[name].append(run())
        _log(f"pod start, round {r + 1}/{rounds}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()))
    torch_s = statistics.median(times["python -c 'import torch'"])
    return {name: {"median_s": round(statistics.median(v), 3), "runs_s": [round(x, 3) for x in v],
                   "above_import_torch_s": round(statistics.median(v) - torch_s, 3)} for name, v in times.items()}


def write_checkpoint(out: Path, dtype: str, preset: str = "qwen2.5-0.5b") -> Path:
    """Random weights at the preset's shape, stored in `dtype`."""
    import torch
    from safetensors.torch import load_file, save_file

    if (out / "model.safetensors").exists():
        return out
    subprocess.run([sys.executable, "-m", "fleetserve", "init-model", "--preset", preset, "--out", str(out)],
                   check=True, stdout=subprocess.DEVNULL)
    if dtype != "float32":
        sd = {k: v.to(getattr(torch, dtype)) for k, v in load_file(out / "model.safetensors").items()}
        save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
        cfg = json.loads((out / "config.json").read_text())
        (out / "config.json").write_text(json.dumps({**cfg, "torch_dtype": dtype}, indent=2))
    return out


def load_once(loader: str, model_dir: str, url: str, dtype: str, cache_dir: str, device: str = "cpu"
              ) -> dict[str, Any]:
    """One load into a fresh model on `device`, in this process; what `weight_loads` runs in a
    subprocess."""
    import torch

    from fleetserve.model.checkpoint import Targets, load_weights
    from fleetserve.model.config import ModelConfig
    from fleetserve.model.device import resolve_device, synchronize
    from fleetserve.model.loader import empty_model
    from fleetserve.storage.block_cache import BlockCache
    from fleetserve.storage.sources import open_source

    cfg = ModelConfig.from_dir(model_dir)
    path = str(Path(model_dir) / "model.safetensors")
    target = resolve_device(device)
    if target.type == "cuda":
        torch.cuda.init()  # the CUDA context's creation is the same for every loader: not timed
    started = time.monotonic()
    # as fleetserve builds it, for every loader
    model = empty_model(cfg, getattr(torch, dtype), "cpu" if loader == MOVED else target)
    model.tie_weights()
    targets = Targets(model)

    def place(name: str, tensor: torch.Tensor) -> None:
        target = targets(name, path)
        if target is not None:
            target.copy_(tensor)

    with torch.no_grad():
        if loader.startswith("fleetserve"):
            source = open_source(url if "s3" in loader else model_dir)
            cache = BlockCache(cache_dir, 64 << 30) if "cache" in loader and "no cache" not in loader else None
            load_weights(model, Path(model_dir), source, cache)
            if loader == MOVED:
                model = model.to(target)
        elif loader == "safetensors local":
            from safetensors import safe_open

            with safe_open(path, framework="pt", device=str(target)) as f:
                for name in f.keys():
                    place(name, f.get_tensor(name))
        elif loader.startswith("runai"):
            from runai_model_streamer import SafetensorsStreamer

            with SafetensorsStreamer() as s:
                s.stream_file(f"{url}/model.safetensors" if "s3" in loader else path)
                for name, tensor in s.get_tensors():
                    place(name, tensor)
        elif loader == "fastsafetensors local":
            from fastsafetensors import fastsafe_open

            with fastsafe_open(filenames=[path], nogds=True, framework="pt", device=str(target)) as f:
                for name in f.keys():
                    place(name, f.get_tensor(name))
        else:
            raise ValueError(f"unknown loader {loader!r}")
    synchronize(target)
    seconds = time.monotonic() - started
    first = next(iter(model.parameters()))
    return {"seconds": seconds, "bytes": Path(path).stat().st_size, "check": float(first.detach().float().sum())}


def weight_loads(store: ObjectStore | None, work: Path, dtypes: list[str], rounds: int, device: str = "cpu"
                 ) -> dict[str, Any]:
    """Every loader in turn, `rounds` times; without `store`, the local loaders only."""
    env = {**os.environ, **(store.env() if store else {}),
           "RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING": "0", "AWS_EC2_METADATA_DISABLED": "true"}
    loaders = loaders_for(device, store is None)
    reference = "fleetserve local" if store is None else "fleetserve s3, empty cache"
    out: dict[str, Any] = {}
    for dtype in dtypes:
        model_dir = write_checkpoint(work / f"qwen0.5b-{dtype}", dtype)
        url = f"s3://models/qwen0.5b-{dtype}"
        if store is not None:
            _log(f"uploading {model_dir} to the object store ...")
            store.upload(model_dir, "models", f"qwen0.5b-{dtype}")
        warm = work / f"cache-warm-{dtype}"
        times: dict[str, list[float]] = {k: [] for k in loaders}
        checks: dict[str, set[float]] = {k: set() for k in loaders}
        size = 0
        for r in range(rounds):
            for loader in loaders:
                cache = str(warm) if "warm" in loader else tempfile.mkdtemp(prefix="bench-start-cache-")
                if "warm" in loader and not warm.exists():  # fill it once, unmeasured
                    _load_in_subprocess("fleetserve s3, empty cache", model_dir, url, dtype, str(warm), env, device)
                res = _load_in_subprocess(loader, model_dir, url, dtype, cache, env, device)
                if "warm" not in loader:
                    shutil.rmtree(cache, ignore_errors=True)
                times[loader].append(res["seconds"])
                checks[loader].add(res["check"])
                size = res["bytes"]
            _log(f"{dtype}, round {r + 1}/{rounds}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()))
        ours = statistics.median(times[reference])
        out[dtype] = {"bytes": size, "device": device, "reference": reference,
                      "same_weights_every_loader": len({c for s in checks.values() for c in s}) == 1,
                      "loaders": {k: {"median_s": round(statistics.median(v), 3), "runs_s": [round(x, 3) for x in v],
                                      "MiB_per_s": round(size / 2**20 / statistics.median(v), 1),
                                      "ratio_to_reference": round(statistics.median(v) / ours, 2)}
                                  for k, v in times.items()}}
    return out


def _load_in_subprocess(loader: str, model_dir: Path, url: str, dtype: str, cache: str,
                        env: dict[str, str], device: str = "cpu") -> dict[str, Any]:
    code = ("import json, sys; from fleetserve.benchmarks.start import load_once; "
            "print(json.dumps(load_once(*sys.argv[1:])))")
    r = subprocess.run([sys.executable, "-c", code, loader, str(model_dir), url, dtype, cache, device],
                       capture_output=True, text=True, env=env, timeout=900)
    if r.returncode != 0:
        raise RuntimeError(f"{loader}: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_bench_start(model: Path, work: Path, rounds: int = 3, dtypes: tuple[str, ...] = ("float32", "bfloat16"),
                    parts: tuple[str, ...] = ("pod", "weights"), device: str = "cpu",
                    local_only: bool = False) -> dict[str, Any]:
    """`device` and `local_only`: the weights part's (the pod part always starts from S3 too)."""
    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"cpu": cpu_description(), "rounds": rounds}
    if local_only and "pod" not in parts:
        result["weights"] = weight_loads(None, work, list(dtypes), rounds, device)
        return result
    with seaweedfs(work / "seaweedfs") as store:
        if "pod" in parts:
            result["pod_start"] = pod_start(model, store, rounds, work)
        if "weights" in parts:
            result["weights"] = weight_loads(None if local_only else store, work, list(dtypes), rounds, device)
    shutil.rmtree(work / "seaweedfs", ignore_errors=True)
    return result
