"""Object stores: the archive's only I/O. S3 (any endpoint) and the local filesystem.

Keys are relative to the archive root given by the archive URL (`s3://bucket/prefix` or
`file:///path`) and always use "/" separators.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlparse

from archiver.errors import ConfigError


class Requests:
    """Requests this process made to object stores, by operation (put, get, list, delete): what
    S3 bills per request, for the run summary, /metrics and the benchmarks."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: collections.Counter = collections.Counter()

    def add(self, op: str) -> None:
        with self._lock:
            self._counts[op] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


REQUESTS = Requests()


@dataclass(frozen=True)
class S3Options:
    """What every request to an s3:// archive carries (`[archive]`); empty: nothing."""

    sse: str = ""  # AES256 or aws:kms, on every object written
    sse_kms_key_id: str = ""
    expected_bucket_owner: str = ""  # on every request


class ObjectStore(Protocol):
    """What the archive needs from storage.

    Every method raises `TransientError` for failures worth retrying (throttling, timeouts,
    unavailable endpoint) and `TerminalError` subclasses otherwise.
    """

    url: str

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        """Store `data` under `key` atomically (readers see all of it or nothing).

        With `if_absent`, fail with `PreconditionFailed` when `key` already exists; of two
        concurrent writers of one key at most one succeeds.
        """

    def get(self, key: str) -> bytes:
        """The object's bytes; `NotFound` if it does not exist."""

    def list(self, prefix: str = "", start_after: str = "") -> Iterator[str]:
        """Keys under `prefix`, in lexicographic order; only those after `start_after` if given."""

    def list_sizes(self, prefix: str = "", start_after: str = "") -> Iterator[tuple[str, int]]:
        """(key, bytes) of the objects under `prefix` (after `start_after`), in lexicographic order."""

    def delete(self, key: str) -> None:
        """Remove `key`; deleting a missing key is not an error."""

    def delete_many(self, keys: list[str]) -> None:
        """Remove every key (missing ones are not an error), in as few requests as the store allows."""


def open_store(url: str, s3: S3Options | None = None) -> ObjectStore:
    """The store for an archive URL: `s3://bucket[/prefix]` or `file:///path`; `s3` applies to the former."""
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        from archiver.store.s3 import S3Store

        if not parsed.netloc:
            raise ConfigError(f"archive url {url!r} names no bucket (expected s3://bucket/prefix)")
        return S3Store(parsed.netloc, parsed.path.strip("/"), options=s3 or S3Options())
    if parsed.scheme == "file":
        from archiver.store.local import LocalStore

        if s3 is not None and s3 != S3Options():
            raise ConfigError(f"archive url {url!r}: archive.sse, sse_kms_key_id and expected_bucket_owner "
                              "apply to s3:// archives only")
        return LocalStore(parsed.path)
    raise ConfigError(f"archive url {url!r}: expected s3://bucket/prefix or file:///path")
