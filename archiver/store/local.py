"""A local-filesystem object store (`file:///path`), for trying archiver without S3.

Writes go to a temporary file that is fsynced and then renamed (or hard-linked, for
`if_absent`, which fails atomically when the target exists), so readers never see partial
objects and two writers of one key cannot both win.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from archiver.errors import ConfigError, NotFound, PreconditionFailed


class LocalStore:
    """Objects as files under a root directory."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        self.url = f"file://{self.root}/"

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise ConfigError(f"object key {key!r} escapes the archive root {self.root}")
        return path

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if if_absent:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    raise PreconditionFailed(f"put {self.url}{key}: object already exists") from None
            else:
                os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"get {self.url}{key}: no such object") from None

    def list(self, prefix: str = "", start_after: str = "") -> Iterator[str]:
        keys = []
        top = self.root / prefix.rpartition("/")[0]  # the deepest directory every match lies under
        for dirpath, _, files in os.walk(top):
            for name in files:
                if name.startswith(".tmp-"):
                    continue
                key = Path(dirpath, name).relative_to(self.root).as_posix()
                if key.startswith(prefix) and key > start_after:
                    keys.append(key)
        yield from sorted(keys)

    def list_sizes(self, prefix: str = "", start_after: str = "") -> Iterator[tuple[str, int]]:
        """(key, bytes) of every object under `prefix`, in key order."""
        for key in self.list(prefix, start_after):
            try:
                yield key, self._path(key).stat().st_size
            except FileNotFoundError:  # deleted since the walk
                continue

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def delete_many(self, keys: list[str]) -> None:
        for key in keys:
            self.delete(key)
