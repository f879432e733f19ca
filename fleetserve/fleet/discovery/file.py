"""Endpoints from a JSON file that is watched for changes: what the local
supervisor writes as it starts and drains pods.

Format (`write_endpoint_file` writes it; writers must replace the file
atomically, by writing a temporary file and renaming it):

    {"endpoints": [{"url": "http://127.0.0.1:8101", "ready": true,
                    "weight": 1.0, "max_inflight": 64}, ...]}

Only `url` is required; entries with `"ready": false` are left out. The file is
polled (its modification time and size) rather than watched with inotify, so it
works on any filesystem, including the volumes Kubernetes mounts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

from fleetserve.fleet.balancer import EndpointSpec
from fleetserve.fleet.discovery import Snapshot, parse_endpoint

log = logging.getLogger("fleetserve.discovery")


def read_endpoint_file(path: Path) -> Snapshot:
    """The ready endpoints the file lists; ValueError naming the file and the fault."""
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    entries = doc.get("endpoints") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f'{path}: expected {{"endpoints": [{{"url": ...}}, ...]}}')
    specs: list[EndpointSpec] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            entry = {"url": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
            raise ValueError(f"{path}: endpoints[{i}] needs a string 'url'")
        if entry.get("ready", True) is not True:
            continue
        text = entry["url"]
        if "weight" in entry:
            text += f";weight={entry['weight']}"
        if entry.get("max_inflight") is not None:
            text += f";max_inflight={entry['max_inflight']}"
        try:
            spec = parse_endpoint(text)
        except ValueError as e:
            raise ValueError(f"{path}: endpoints[{i}]: {e}") from None
        if spec.url not in seen:
            seen.add(spec.url)
            specs.append(spec)
    return tuple(specs)


def write_endpoint_file(path: Path, endpoints: list[dict]) -> None:
    """Replace the file atomically, so a watcher never reads half of it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"endpoints": endpoints}, indent=1) + "\n")
    os.replace(tmp, path)


class FileDiscovery:
    def __init__(self, path: str | Path, interval: float = 0.5):
        self.path = Path(path)
        self.interval = interval

    async def snapshots(self) -> AsyncIterator[Snapshot]:
        last_stat: tuple[int, int] | None = None
        last: Snapshot | None = None
        warned = False
        while True:
            try:
                st = self.path.stat()
                stamp = (st.st_mtime_ns, st.st_size)
            except FileNotFoundError:
                stamp = last_stat = None
                if not warned:
                    log.warning("%s does not exist yet: no endpoints until it does", self.path)
                    warned = True
                if last is None or last:
                    last = ()
                    yield last
            if stamp is not None and stamp != last_stat:
                last_stat = stamp
                try:
                    snap = read_endpoint_file(self.path)
                except (ValueError, OSError) as e:
                    # keep routing to the last good set; a writer that renames never causes this
                    log.warning("ignoring %s", e)
                else:
                    if snap != last:
                        last = snap
                        yield snap
            await asyncio.sleep(self.interval)
