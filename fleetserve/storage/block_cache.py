"""A directory of fetched blocks, so that a second pod on the same machine starts from local
disk instead of the object store.

One file per block, named by a hash of (source, file, version, offset), holding a 16-byte
XXH3 digest of the block and then the block: a block that does not match its digest (a torn
write, a bad disk) is deleted and fetched again. A hit is the file mapped into memory, so the
bytes are copied once, straight into the model's tensors. Files are written to a temporary
name and renamed, so pods sharing the directory never read half a block. When the directory
grows past its bound, the blocks used least recently (by modification time, refreshed on
each hit) are deleted until it is back under 90% of it.
"""

from __future__ import annotations

import hashlib
import logging
import mmap
import os
import threading
from pathlib import Path

import xxhash

log = logging.getLogger("fleetserve.storage")

DIGEST = 16


def _digest(data: bytes | memoryview) -> bytes:
    # not against tampering (whoever writes the directory can write the digests): against torn
    # writes and bad disks, at memory speed
    return xxhash.xxh3_128_digest(data)


class BlockCache:
    def __init__(self, root: str | Path, max_bytes: int):
        if max_bytes <= 0:
            raise ValueError("the block cache needs a positive size bound")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.corrupt = 0  # damaged blocks found (and deleted)
        self._lock = threading.Lock()
        self._size = sum(p.stat().st_size for p in self._files())

    @staticmethod
    def key(source: str, name: str, version: str, start: int) -> str:
        return hashlib.sha256(f"{source}\0{name}\0{version}\0{start}".encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / key[2:]

    def _files(self) -> list[Path]:
        return [p for p in self.root.glob("??/*") if not p.name.startswith(".")]

    def get(self, key: str, length: int) -> memoryview | None:
        """The block (a read-only view of the mapped file), or None when it is absent or damaged
        (then it is deleted)."""
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                raw = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
        except (OSError, ValueError):  # absent, or empty (ValueError: cannot map an empty file)
            return None
        body = raw[DIGEST:]
        if len(body) != length or _digest(body) != raw[:DIGEST]:
            log.warning("block cache: %s is damaged (%d bytes, %d expected, or a bad digest): fetching it again",
                        path, len(body), length)
            path.unlink(missing_ok=True)
            with self._lock:
                self.corrupt += 1
                self._size -= len(raw)
            return None
        try:
            os.utime(path)  # recently used: the last to be evicted
        except OSError:
            pass
        return body

    def put(self, key: str, data: bytes | memoryview) -> None:
        path = self._path(key)
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
        try:
            with open(tmp, "wb") as f:
                f.write(_digest(data))
                f.write(data)
            os.replace(tmp, path)
        except OSError as e:  # a full disk must not fail the load: the cache is only a cache
            log.warning("block cache: cannot write %s (%s)", path, e)
            tmp.unlink(missing_ok=True)
            return
        with self._lock:
            self._size += DIGEST + len(data)
            over = self._size > self.max_bytes
        if over:
            self._evict()

    def _evict(self) -> None:
        with self._lock:
            entries = []
            for p in self._files():
                try:
                    st = p.stat()
                except OSError:
                    continue
                entries.append((st.st_mtime, st.st_size, p))
            self._size = sum(size for _, size, _ in entries)
            entries.sort()
            goal = int(self.max_bytes * 0.9)
            for _, size, p in entries:
                if self._size <= goal:
                    break
                p.unlink(missing_ok=True)
                self._size -= size
