"""Files read as fixed-size blocks, several in flight at once, through an optional block cache.

Blocks are aligned to the file (block k holds bytes [k x size, (k+1) x size)), so a block
means the same bytes to every reader and the cache can share it. Fetches run on a thread
pool (the sources' network reads release the GIL) and are handed over in the order they
finish, on the thread that fetched them, so a slow block never holds the others back and
copying one out overlaps fetching the next; at most `inflight` blocks are in transit at any
time, which bounds the memory a load holds.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed

from fleetserve.storage.block_cache import BlockCache
from fleetserve.storage.sources import ObjectInfo, Source

BLOCK_SIZE = 4 << 20  # the seed's lazily loaded images fetched 4 MB blocks; S3 serves such ranges at full speed


class BlockFetcher:
    def __init__(self, source: Source, cache: BlockCache | None = None, block_size: int = BLOCK_SIZE,
                 inflight: int = 8):
        if block_size < 1 or inflight < 1:
            raise ValueError("block_size and inflight must be positive")
        self.source, self.cache, self.block_size, self.inflight = source, cache, block_size, inflight
        self.fetched_bytes = self.cached_bytes = 0
        self._lock = threading.Lock()  # the counts are bumped from the fetch threads

    def block(self, name: str, info: ObjectInfo, index: int) -> bytes | memoryview:
        """Block `index` of the file, from the cache when it holds it."""
        start = index * self.block_size
        end = min(start + self.block_size, info.size)
        if self.cache is None:
            data = self.source.read(name, start, end)
        else:
            key = BlockCache.key(self.source.url, name, info.version, start)
            data = self.cache.get(key, end - start)
            if data is not None:
                with self._lock:
                    self.cached_bytes += len(data)
                return data
            data = self.source.read(name, start, end)
            self.cache.put(key, data)
        with self._lock:
            self.fetched_bytes += len(data)
        return data

    def fetch_all(self, files: list[tuple[str, ObjectInfo]], consume: Callable[[str, int, bytes | memoryview], None],
                  have: dict[tuple[str, int], bytes | memoryview] | None = None,
                  progress: Callable[[int, int], None] | None = None) -> None:
        """Every block of every file handed to `consume(file, offset, bytes)` as it arrives, on the
        fetch thread that brought it (so that copying it out overlaps the other fetches; consume
        must be thread-safe). `have`: blocks already read, by (file, index), not fetched again.
        The first error (a StorageError names the object) stops the rest and is raised here."""
        have = have or {}
        todo = [(name, info, i) for name, info in files for i in range(-(-info.size // self.block_size))]
        total, done = sum(info.size for _, info in files), 0

        def one(name: str, info: ObjectInfo, i: int) -> int:
            data = have[(name, i)] if (name, i) in have else self.block(name, info, i)
            consume(name, i * self.block_size, data)
            return len(data)

        # Every block is queued at once: a queued block holds no bytes, and the pool's `inflight`
        # threads are what bounds the blocks in transit.
        with ThreadPoolExecutor(self.inflight, thread_name_prefix="fetch") as pool:
            try:
                for f in as_completed([pool.submit(one, *t) for t in todo]):
                    done += f.result()
                    if progress:
                        progress(done, total)
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise


class Progress:
    """A line on stderr about once a second for loads that take longer than that, and one at the end."""

    def __init__(self, what: str, every: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.what, self.every, self.clock = what, every, clock
        self.started = self.shown = clock()
        self.any = False

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        if now - self.shown >= self.every:
            self.shown, self.any = now, True
            rate = done / max(now - self.started, 1e-9) / 2**20
            print(f"{self.what}: {done / 2**20:.0f} of {total / 2**20:.0f} MiB ({rate:.0f} MiB/s)",
                  file=sys.stderr, flush=True)

    def finish(self, total: int, note: str = "") -> None:
        if self.any:
            took = self.clock() - self.started
            print(f"{self.what}: {total / 2**20:.0f} MiB in {took:.1f} s{note}", file=sys.stderr, flush=True)
