"""`fleetserve bench-start`: its options and what runs it."""

from __future__ import annotations

from pathlib import Path

HELP = ("how fast a pod starts (exec to /ready against import torch) and how fast weights load from local "
        "disk and from a real object store (SeaweedFS), against safetensors, Run:ai Model Streamer and "
        "fastsafetensors")


def add_arguments(p) -> None:
    p.add_argument("--out", default="build/bench-start", help="work directory: checkpoints, caches, results "
                                                             "(default %(default)s)")
    p.add_argument("--model", default=None, help="the pod-start part's model (default: the bundled model)")
    p.add_argument("--rounds", type=int, default=3, help="runs of each case, alternating (default %(default)s)")
    p.add_argument("--dtypes", default="float32,bfloat16",
                   help="checkpoint dtypes of the weights part, 0.5B shape (default %(default)s)")
    p.add_argument("--parts", default="pod,weights", help="pod, weights or both (default %(default)s)")
    p.add_argument("--device", default="cpu",
                   help="where the weights part's model lives: cpu (default), cuda or cuda:N; on a GPU one more "
                        "case loads on the CPU and moves the model, the way to beat")
    p.add_argument("--local-only", action="store_true",
                   help="the weights part's local loaders only, without the object store (a machine without "
                        "SeaweedFS); the ratios are then to fleetserve's local load")
    p.add_argument("--json", default=None, help="also write the results here")


def run(a) -> None:
    import json

    from fleetserve.benchmarks.start import run_bench_start
    from fleetserve.fleet.local_fleet import bundled_model
    from fleetserve.model.device import resolve_device

    parts = tuple(x.strip() for x in a.parts.split(",") if x.strip())
    if not parts or set(parts) - {"pod", "weights"} or a.rounds < 1:
        raise ValueError("--parts takes pod and/or weights, and --rounds must be at least 1")
    resolve_device(a.device)  # before anything is written or started: a GPU this machine lacks fails here
    result = run_bench_start(Path(a.model or bundled_model()), Path(a.out), a.rounds,
                             tuple(x.strip() for x in a.dtypes.split(",") if x.strip()), parts, a.device,
                             a.local_only)
    text = json.dumps(result, indent=1)
    if a.json:
        Path(a.json).write_text(text + "\n")
    print(text)
    for name, row in result.get("pod_start", {}).items():
        print(f"{name:45s} {row['median_s']:6.2f} s  ({row['above_import_torch_s']:+.2f} s against import torch)")
    for dtype, part in result.get("weights", {}).items():
        print(f"\n{dtype}: {part['bytes'] / 2**20:.0f} MiB onto {part['device']}, same weights from every loader: "
              f"{part['same_weights_every_loader']}")
        for name, row in part["loaders"].items():
            print(f"  {name:40s} {row['median_s']:6.2f} s  {row['MiB_per_s']:7.0f} MiB/s  "
                  f"{row['ratio_to_reference']:.2f}x {part['reference']}'s time")
