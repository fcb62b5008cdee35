"""pyiceberg's PyArrow FileIO, with its S3 filesystems released before the process exits.

pyarrow 26 deadlocks at exit, finalizing the AWS SDK, while an S3FileSystem whose credentials came
from web identity (IRSA on EKS) is still alive (apache/arrow#50188): a command that touched an
Iceberg table would never exit. Every FileIO made here is remembered weakly; an exit hook drops
their filesystems before pyarrow's own hook finalizes S3. `tables.open_catalog` makes it the
catalog's FileIO (`py-io-impl`) unless the catalog's properties name another.
"""

from __future__ import annotations

import atexit
import gc
import weakref
from typing import Any

# Importing it imports pyarrow.fs, which registers pyarrow's exit hook; ours, registered below,
# runs before it (exit hooks run last registered first).
from pyiceberg.io.pyarrow import PyArrowFileIO

_LIVE: weakref.WeakSet[ArchiverFileIO] = weakref.WeakSet()


class ArchiverFileIO(PyArrowFileIO):
    """PyArrowFileIO, released at exit."""

    def __init__(self, properties: Any = None):
        super().__init__(properties if properties is not None else {})
        _LIVE.add(self)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        _LIVE.add(self)


def release() -> None:
    """Drop every cached filesystem of every live FileIO (they are made again if used)."""
    for io in list(_LIVE):
        io.fs_by_scheme.cache_clear()
    gc.collect()


atexit.register(release)
