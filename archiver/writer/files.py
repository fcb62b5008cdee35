"""Files: a partition's buffer encoded into Parquet files, uploaded and committed in one ledger entry.

The last stage. `build` encodes every output partition of the buffer into one file (the
`Pending` commit, kept as bytes so a failed attempt is retried as is); `commit` runs the
protocol of DESIGN.md: the intent naming the files, the uploads, the dead letters flushed, then
the ledger entry (`PartitionLedger.commit`, which goes through `ledger.append`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from archiver import layout
from archiver.config import TopicSettings
from archiver.errors import TerminalError, TransientError
from archiver.ledger import Entry, FileEntry, PartitionLedger, writer_id
from archiver.metrics import Histogram
from archiver.store import ObjectStore
from archiver.writer import parquet
from archiver.writer.buffer import PartitionBuffer, Rotation


@dataclass
class Pending:
    """A flush built but not yet committed: retried as is while the store fails."""

    entry: Entry
    blobs: dict[str, bytes]
    reason: Rotation
    uploaded: bool = False
    intent_written: bool = False
    error: TransientError | None = None  # why the last attempt did not commit


def build(buffer: PartitionBuffer, ledger: PartitionLedger, settings: TopicSettings, reason: Rotation) -> Pending:
    """The next commit of `buffer`: one file per output partition, encoded here (in this thread:
    encoding in a pool cost more CPU and memory). The buffer's rows are released."""
    encoded = [encode_file(buffer, ledger.epoch, settings, dirs, table) for dirs, table in buffer.files()]
    files = [file for file, _ in encoded]
    entry = Entry(ledger.head.seq + 1, ledger.epoch, "commit", buffer.start, buffer.end, files,
                  records=sum(f.rows for f in files), dead_lettered=buffer.dead_lettered,
                  committed_at=0.0, writer=writer_id(), lost=[list(r) for r in buffer.lost])
    buffer.release_rows()  # the encoded files are all a retry needs: free the Arrow buffers now
    return Pending(entry, {file.key: data for file, data in encoded}, reason)


def encode_file(buffer: PartitionBuffer, epoch: int, settings: TopicSettings, directories: str,
                table: pa.Table) -> tuple[FileEntry, bytes]:
    """The Parquet file of one output partition's rows, and its ledger record."""
    offsets = pc.min_max(table["_kafka_offset"])
    first, last = offsets["min"].as_py(), offsets["max"].as_py()
    key = layout.DataKey(buffer.topic, buffer.partition, first, epoch, directories).format()
    codec, level = settings.compression, settings.compression_level
    if table.num_rows < settings.small_file_rows and codec in ("zstd", "gzip"):
        codec, level = "snappy", None  # set-up costs more than a small file saves; compaction rewrites it
    try:
        data = parquet.encode(table, buffer.schema_ids, codec, level)
    except (pa.ArrowException, OSError) as e:  # e.g. Avro fixed(0) or an empty record
        raise TerminalError(f"cannot write Parquet for {key}: {' '.join(str(e).split())}") from e
    stamps = pc.min_max(table["_kafka_timestamp"])
    ids = sorted({i for i in table["_schema_id"].unique().to_pylist() if i is not None})
    return FileEntry(key, table.num_rows, len(data), hashlib.sha256(data).hexdigest(), first, last,
                     _ms(stamps["min"]), _ms(stamps["max"]), ids), data


def commit(pending: Pending, ledger: PartitionLedger, store: ObjectStore, pool: concurrent.futures.Executor,
           flush_dead_letters: Callable[[], None], upload_latency: Histogram) -> None:
    """Take `pending` as far as it goes: intent, uploads, dead letters, ledger entry. Each step done
    is remembered in `pending`, so a retry after a failure starts where this one stopped.

    Raises:
        DeadLetterUndelivered: the dead-letter topic lost records (the caller rewinds).
        TransientError: a dependency is out; retry later.
        TerminalError: fenced, or failed for good.
    """
    if not pending.intent_written:
        ledger.write_intent(list(pending.blobs))
        pending.intent_written = True
    if not pending.uploaded:
        started = time.monotonic()
        list(pool.map(lambda kv: store.put(kv[0], kv[1]), pending.blobs.items()))
        upload_latency.observe(time.monotonic() - started)
        pending.uploaded = True
    flush_dead_letters()
    pending.entry = ledger.commit(dataclasses.replace(pending.entry, committed_at=time.time()))


def discard(store: ObjectStore, keys: Iterable[str]) -> None:
    """Delete uploaded files no entry names, as far as the store lets (the next owner's claim
    removes what is left)."""
    for key in keys:
        try:
            store.delete(key)
        except (TransientError, TerminalError):
            pass


def _ms(value: pa.Scalar) -> int | None:
    return None if not value.is_valid else value.cast(pa.int64()).as_py()
