"""Where a model's files are read from: a local directory, an S3-compatible bucket, or an
HTTP(S) server that answers range requests. Each source reads byte ranges of named files
(paths relative to the model's root) and can be used from several threads at once.

S3 is reached through boto3 (imported only for s3:// URLs), so endpoint, region and
credentials come the usual way: `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_S3`),
`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE`, `~/.aws`, instance roles.
Every failure is a `StorageError` that names the object it concerns.
"""

from __future__ import annotations

import mmap
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class StorageError(ValueError):
    """A file could not be listed, found or read; the message names it and says why."""


class NotFound(StorageError):
    """The store answered, and has no such file."""


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    version: str  # changes when the object does (ETag, Last-Modified or mtime): part of cache keys


def is_remote(location: str | Path) -> bool:
    return str(location).startswith(("s3://", "http://", "https://"))


class Source:
    """A model's root: `stat`, `read` byte ranges, and `list` where the store can."""

    url: str  # the root, for messages and cache keys

    def describe(self, name: str) -> str:
        return f"{self.url.rstrip('/')}/{name}"

    def list(self) -> dict[str, int] | None:
        """Every file under the root with its size, or None where the store cannot list (HTTP).
        Only remote models are listed (model_files.py)."""
        raise NotImplementedError

    def stat(self, name: str) -> ObjectInfo:
        raise NotImplementedError

    def read(self, name: str, start: int, end: int) -> bytes | memoryview:
        """Bytes [start, end) of the file (a read-only buffer); StorageError if it has fewer."""
        raise NotImplementedError

    def _check_length(self, name: str, start: int, end: int, data: bytes | memoryview) -> bytes | memoryview:
        if len(data) != end - start:
            raise StorageError(f"{self.describe(name)}: truncated: bytes {start}..{end} asked, "
                               f"{len(data)} read (the object ends early)")
        return data


class LocalSource(Source):
    """Files mapped into memory: a read is a view of the page cache, so a block is copied once,
    straight into the model's tensors (as a plain safetensors load does). Mapped copy-on-write,
    as torch maps files: writable views that never write to the file, so torch takes them
    without a warning."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.url = str(self.root)
        self._maps: dict[str, memoryview] = {}
        self._lock = threading.Lock()

    def describe(self, name: str) -> str:
        return str(self.root / name)

    def stat(self, name: str) -> ObjectInfo:
        try:
            st = (self.root / name).stat()
        except FileNotFoundError as e:
            raise NotFound(f"{self.describe(name)}: {e.strerror or e}") from None
        except OSError as e:
            raise StorageError(f"{self.describe(name)}: {e.strerror or e}") from None
        return ObjectInfo(st.st_size, f"{st.st_mtime_ns}-{st.st_size}")

    def read(self, name: str, start: int, end: int) -> bytes | memoryview:
        if end <= start:
            return b""
        with self._lock:
            view = self._maps.get(name)
            if view is None:
                try:
                    with open(self.root / name, "rb") as f:
                        view = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY))
                except OSError as e:
                    raise StorageError(f"{self.describe(name)}: {e.strerror or e}") from None
                except ValueError:  # an empty file cannot be mapped
                    view = memoryview(b"")
                self._maps[name] = view
        return self._check_length(name, start, end, view[start:end])


class HttpSource(Source):
    """Files under an http(s) URL, read with `Range` requests (a server that ignores them fails
    clearly: its 200 with the whole body is refused)."""

    def __init__(self, url: str, connections: int = 8, timeout: float = 30.0):
        import urllib3

        self.url = url.rstrip("/")
        self._http = urllib3.PoolManager(maxsize=connections, block=False, timeout=urllib3.Timeout(connect=5.0,
                                         read=timeout), retries=urllib3.Retry(total=3, backoff_factor=0.2,
                                                                               status_forcelist=(502, 503, 504)))

    def _request(self, method: str, name: str, headers: dict[str, str] | None = None) -> Any:
        import urllib3

        try:
            r = self._http.request(method, self.describe(name), headers=headers, preload_content=True)
        except urllib3.exceptions.HTTPError as e:
            raise StorageError(f"{self.describe(name)}: cannot reach the server ({e})") from None
        if r.status == 404:
            raise NotFound(f"{self.describe(name)}: not found (HTTP 404)")
        if r.status in (401, 403):
            raise StorageError(f"{self.describe(name)}: access denied (HTTP {r.status})")
        if r.status >= 400:
            raise StorageError(f"{self.describe(name)}: HTTP {r.status}")
        return r

    def list(self) -> None:
        return None

    def stat(self, name: str) -> ObjectInfo:
        r = self._request("HEAD", name)
        length = r.headers.get("Content-Length")
        if length is None:
            raise StorageError(f"{self.describe(name)}: the server gives no Content-Length")
        return ObjectInfo(int(length), r.headers.get("ETag") or r.headers.get("Last-Modified") or length)

    def read(self, name: str, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        r = self._request("GET", name, {"Range": f"bytes={start}-{end - 1}"})
        if r.status != 206 and not (r.status == 200 and start == 0 and len(r.data) == end):
            raise StorageError(f"{self.describe(name)}: the server does not answer range requests "
                               f"(HTTP {r.status} to Range: bytes={start}-{end - 1})")
        return self._check_length(name, start, end, r.data)


class S3Source(Source):
    def __init__(self, url: str, connections: int = 8, timeout: float = 30.0):
        import boto3
        import botocore.config

        parts = urlsplit(url)
        if not parts.netloc:
            raise StorageError(f"{url}: no bucket (expected s3://BUCKET/PREFIX)")
        self.bucket, self.prefix = parts.netloc, parts.path.strip("/")
        self.url = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        session = boto3.session.Session()
        self._endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        # A store of our own (SeaweedFS, MinIO) takes any region; SigV4 needs one named.
        self._client = session.client(
            "s3", region_name=session.region_name or "us-east-1", endpoint_url=self._endpoint,
            config=botocore.config.Config(max_pool_connections=connections, connect_timeout=5, read_timeout=timeout,
                                          retries={"max_attempts": 3, "mode": "standard"},
                                          s3={"addressing_style": "path"} if self._endpoint else {}))

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def _error(self, name: str | None, e: Exception) -> StorageError:
        import botocore.exceptions as bx

        where = self.describe(name) if name is not None else self.url
        if isinstance(e, bx.NoCredentialsError):
            return StorageError(f"{where}: no credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                                "or AWS_PROFILE)")
        if isinstance(e, (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError)):
            return StorageError(f"{where}: cannot reach the endpoint {self._endpoint or 'of AWS S3'} ({e})")
        if isinstance(e, bx.ClientError):
            code = str(e.response.get("Error", {}).get("Code", ""))
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("NoSuchKey", "404", "NotFound"):
                return NotFound(f"{where}: no such object")
            if code == "NoSuchBucket":
                return StorageError(f"{where}: no such bucket {self.bucket!r}")
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "InvalidToken",
                        "ExpiredToken") or status == 403:
                return StorageError(f"{where}: access denied ({code or status}: check AWS_ACCESS_KEY_ID and "
                                    "AWS_SECRET_ACCESS_KEY)")
            return StorageError(f"{where}: {code or status}: {e}")
        if isinstance(e, bx.BotoCoreError):
            return StorageError(f"{where}: {e}")
        raise e

    def list(self) -> dict[str, int]:
        out: dict[str, int] = {}
        root = f"{self.prefix}/" if self.prefix else ""
        try:
            for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=root):
                for obj in page.get("Contents", []):
                    if not obj["Key"].endswith("/"):
                        out[obj["Key"][len(root):]] = int(obj["Size"])
        except Exception as e:  # noqa: BLE001 - _error re-raises what it does not know
            raise self._error(None, e) from None
        return out

    def stat(self, name: str) -> ObjectInfo:
        try:
            r = self._client.head_object(Bucket=self.bucket, Key=self._key(name))
        except Exception as e:  # noqa: BLE001
            raise self._error(name, e) from None
        return ObjectInfo(int(r["ContentLength"]), str(r.get("ETag") or r.get("LastModified")))

    def read(self, name: str, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        try:
            r = self._client.get_object(Bucket=self.bucket, Key=self._key(name), Range=f"bytes={start}-{end - 1}")
            data = r["Body"].read()
        except Exception as e:  # noqa: BLE001
            raise self._error(name, e) from None
        return self._check_length(name, start, end, data)


def open_source(location: str | Path, connections: int = 8) -> Source:
    """The source for a local directory, s3://BUCKET/PREFIX or an http(s):// URL."""
    text = str(location)
    if text.startswith("s3://"):
        return S3Source(text, connections)
    if text.startswith(("http://", "https://")):
        return HttpSource(text, connections)
    return LocalSource(text)
