"""`archiver replay`: re-publish archived records into Kafka, faithfully.

Reads the archive through its ledger (never by listing the bucket), selects records by
partition, offset range, time range, key and a SQL predicate, re-encodes each value with its
original writer schema (byte-identical to the message the archive consumed) and produces it with
the original key bytes, headers and timestamp, per source partition in offset order.
"""

from __future__ import annotations

import collections
import concurrent.futures
import io
import itertools
import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from archiver import layout
from archiver.archive import Archive
from archiver.codec import native_encode, wire
from archiver.errors import ConfigError
from archiver.ledger import Entry, FileEntry
from archiver.source.records import Batch, blob_list
from archiver.units import parse_size
from archiver.writer.parquet import ROW_ORDER_KEY, as_written, writer_schemas_of, written_schema

logger = logging.getLogger(__name__)


def parse_offsets(specs: tuple[str, ...]) -> dict[int, tuple[int, int]]:
    """`P:FIRST-LAST` (inclusive; either end may be empty) per partition."""
    ranges = {}
    for spec in specs:
        m = re.match(r"^(\d+):(\d*)-(\d*)$", spec.strip())
        if not m:
            raise ConfigError(f"--offsets: {spec!r} is not PARTITION:FIRST-LAST (e.g. 0:100-199 or 3:500-)")
        first, last = int(m[2] or 0), int(m[3]) if m[3] else 2**63 - 1
        if first > last:
            raise ConfigError(f"--offsets: {spec!r} ends before it starts")
        ranges[int(m[1])] = (first, last)
    return ranges


@dataclass(frozen=True)
class Selection:
    """Which archived records to replay."""

    topic: str
    partitions: frozenset[int] | None = None
    start_ms: int | None = None  # inclusive
    end_ms: int | None = None  # exclusive
    offsets: dict[int, tuple[int, int]] = field(default_factory=dict)
    keys: frozenset[bytes] | None = None
    where: str | None = None

    def wants_partition(self, partition: int) -> bool:
        if self.partitions is not None and partition not in self.partitions:
            return False
        return not self.offsets or partition in self.offsets

    def wants_file(self, f: FileEntry, partition: int) -> bool:
        """Prune by the ledger's per-file statistics; rows are filtered again after reading."""
        if partition in self.offsets:
            first, last = self.offsets[partition]
            if f.last_offset < first or f.first_offset > last:
                return False
        if self.start_ms is not None and f.max_timestamp is not None and f.max_timestamp < self.start_ms:
            return False
        return not (self.end_ms is not None and f.min_timestamp is not None and f.min_timestamp >= self.end_ms)


@dataclass
class PartitionPlan:
    partition: int
    entries: list[tuple[Entry, list[FileEntry]]]

    @property
    def files(self) -> list[FileEntry]:
        return [f for _, files in self.entries for f in files]


@dataclass
class Plan:
    """The files a replay reads, per source partition."""

    topic: str
    partitions: list[PartitionPlan]
    row_filters: tuple[str, ...] = ()  # selections applied to rows as they are read: "key", "where"
    key_buckets: list[int] | None = None  # the buckets `--key` pruned the files to, when it could

    @property
    def files(self) -> int:
        return sum(len(p.files) for p in self.partitions)

    @property
    def max_records(self) -> int:
        return sum(f.rows for p in self.partitions for f in p.files)

    @property
    def bytes(self) -> int:
        return sum(f.own_bytes for p in self.partitions for f in p.files)

    def describe(self) -> dict:
        out = {
            "topic": self.topic, "files": self.files, "records_at_most": self.max_records, "bytes": self.bytes,
            "partitions": {p.partition: {"files": len(p.files), "first_offset": min(f.first_offset for f in p.files),
                                         "last_offset": max(f.last_offset for f in p.files),
                                         "records_at_most": sum(f.rows for f in p.files)}
                           for p in self.partitions if p.files},
        }
        if self.row_filters:  # the ledger has no per-key or per-value counts: only reading tells
            out["estimate"] = {"records_upper_bound": self.max_records, "exact": False,
                               "key_buckets_read": self.key_buckets, "filtered_when_read": list(self.row_filters),
                               "basis": "rows of the files pruned for the selection (partitions, offsets, "
                                        "time range, key buckets); keys and --where are matched as rows are read"}
        return out


def plan(archive: Archive, selection: Selection, key_buckets: int | None = None) -> Plan:
    """Locate the selected records through the ledger; ConfigError when nothing matches.

    With keys selected and `key_buckets` (the topic's configured count), only the files of the
    keys' buckets are read, when the directories confirm that count (`bucket_count`).
    """
    if selection.topic not in archive.topics():
        raise ConfigError(f"topic {selection.topic!r} is not in the archive {archive.store.url} "
                          f"(archived topics: {', '.join(archive.topics()) or 'none'})")
    live = {p: archive.live_entries(selection.topic, p) for p in archive.partitions(selection.topic)
            if selection.wants_partition(p)}
    buckets = _wanted_buckets(selection, [f for entries in live.values() for e in entries for f in e.files],
                              key_buckets)
    partitions = []
    for partition, live_entries in live.items():
        entries = []
        for entry in live_entries:
            files = [f for f in entry.files if selection.wants_file(f, partition)
                     and (buckets is None or _bucket_of(f) in buckets)]
            if files:
                entries.append((entry, files))
        if entries:
            partitions.append(PartitionPlan(partition, entries))
    filters = tuple(name for name, on in (("key", selection.keys is not None), ("where", selection.where)) if on)
    result = Plan(selection.topic, partitions, filters, sorted(buckets) if buckets is not None else None)
    if not result.files:
        raise ConfigError(f"the selection matches no archived records of {selection.topic!r}")
    return result


def recorded_key_buckets(archive: Archive, topic: str) -> int | None:
    """The topic's hash bucket count from its layout record; None (a key selection reads every
    file) when it is not hash-partitioned, or was archived before layouts were recorded."""
    from archiver import layouts

    recorded = layouts.read(archive.store, topic)
    if recorded is None:
        logger.warning("%s has no layout record (archived before layouts were recorded): --key reads every "
                       "file", topic)
        return None
    return recorded.key_buckets if recorded.key_partitioning == "hash" else None


def bucket_count(files: list[FileEntry], configured: int) -> int | None:
    """How many key buckets `files` were written with; None when their directories cannot confirm it.

    Directories are `key_bucket=NN`, zero-padded to the digits of the highest bucket, so they fix
    the count's number of digits and a lower bound; the topic's configured `key_buckets` is taken
    when every directory fits it. No `key_bucket` directory (field or no key partitioning), mixed
    widths or a bucket beyond it: None, and a key selection reads every file.
    """
    present = {_bucket_text(f) for f in files}
    if not present or None in present:
        return None
    width = len(str(configured - 1))
    if any(len(b) != width or int(b) >= configured for b in present):
        logger.warning("key_bucket directories do not fit key_buckets = %d: --key reads every file", configured)
        return None
    return configured


def _bucket_text(f: FileEntry) -> str | None:
    try:
        return layout.parse_data_key(f.key).partition_values().get("key_bucket")
    except ValueError:
        return None


def _bucket_of(f: FileEntry) -> int | None:
    text = _bucket_text(f)
    return int(text) if text is not None else None


def _wanted_buckets(selection: Selection, files: list[FileEntry], configured: int | None) -> set[int] | None:
    """The key buckets holding the selected keys, or None when files cannot be pruned by key."""
    if selection.keys is None or configured is None:
        return None
    count = bucket_count(files, configured)
    return None if count is None else {layout.key_bucket(k, count) for k in selection.keys}


class Record(NamedTuple):
    """One record to re-publish (a tuple: a million of them are made per second or so)."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp_ms: int | None


class Reader:
    """Reads planned files entry by entry and yields selected records in offset order."""

    def __init__(self, archive: Archive, selection: Selection):
        self.archive = archive
        self.selection = selection
        self.bytes_read = 0
        self._duck = None

    def records(self, partition_plan: PartitionPlan, after_offset: int = -1) -> Iterator[Record]:
        """One partition's selected records, in offset order (after `after_offset`)."""
        return self.stream([partition_plan], {partition_plan.partition: after_offset})

    def stream(self, plans: list[PartitionPlan], after: dict[int, int]) -> Iterator[Record]:
        """`batches`, record by record."""
        for batch in self.batches(plans, after):
            stamps = np.where(batch.types == 0, -1, batch.timestamps).tolist()
            headers = [[(h["key"], h["value"]) for h in row] for row in batch.headers.to_pylist()]
            yield from map(Record._make, zip(itertools.repeat(batch.partition), batch.offsets.tolist(),
                                             blob_list(batch.keys), blob_list(batch.values), headers,
                                             (None if t == -1 else t for t in stamps)))

    def batches(self, plans: list[PartitionPlan], after: dict[int, int]) -> Iterator[Batch]:
        """The selected records of every planned partition, partition after partition, each in
        offset order, as batches of columns (values in Confluent wire format again).

        An entry's files hold interleaved offsets (one file per output partition), and a
        compaction entry may hold a partition's whole history, so its files are merged a window
        of offsets at a time, each file read a batch at a time: memory stays bounded by the
        window and the files open in it, whatever the entry's size. Files download up to
        `DOWNLOADS_AHEAD` ahead of the one being read: reading is latency-bound (many small
        objects), producing is CPU-bound.
        """
        work = []
        for plan in plans:
            done = after.get(plan.partition, -1)
            for entry, files in plan.entries:
                files = sorted((f for f in files if f.last_offset > done), key=lambda f: (f.first_offset, f.key))
                if files:  # else replayed before the checkpoint
                    work.append((plan.partition, files, done))
        downloads = _prefetched(lambda f: self.archive.store.get(f.key), _Cursor.opened,
                                [f for _, files, _ in work for f in files], DOWNLOADS_AHEAD)
        try:
            for partition, files, done in work:
                yield from self._merged(partition, files, done, downloads)
        finally:
            downloads.close()

    def _merged(self, partition: int, files: list[FileEntry], done: int,
                downloads: Iterator[tuple[FileEntry, _Cursor]]) -> Iterator[Batch]:
        """One entry's selected records in offset order, a window of offsets at a time."""
        waiting, cursors, schemas = list(files), [], {}
        low = max(done + 1, files[0].first_offset)
        while waiting or cursors:
            if not cursors:
                low = max(low, waiting[0].first_offset)  # skip offsets no file holds
            high = low + WINDOW_OFFSETS
            while waiting and waiting[0].first_offset < high:
                file, cursor = next(downloads)
                assert file is waiting[0], "downloads out of order"
                waiting.pop(0)
                self.bytes_read += cursor.size  # counted here, not in the download threads
                schemas.update(cursor.schemas)
                cursors.append(cursor)
            batches = [batch for cursor in cursors for batch in cursor.below(high)]
            cursors = [c for c in cursors if not c.done]
            low = high
            if batches:
                table = pa.concat_tables([pa.Table.from_batches([b]) for b in batches], promote_options="default")
                table = self._select(table, partition, done)
                if table.num_rows:
                    yield self._batch(table, schemas)

    def _select(self, table: pa.Table, partition: int, after_offset: int) -> pa.Table:
        s = self.selection
        offsets = table["_kafka_offset"]
        mask = pc.greater(offsets, after_offset)
        if partition in s.offsets:
            first, last = s.offsets[partition]
            mask = pc.and_(mask, pc.and_(pc.greater_equal(offsets, first), pc.less_equal(offsets, last)))
        stamps = pc.cast(table["_kafka_timestamp"], pa.int64())
        if s.start_ms is not None:
            mask = pc.and_kleene(mask, pc.greater_equal(stamps, s.start_ms))
        if s.end_ms is not None:
            mask = pc.and_kleene(mask, pc.less(stamps, s.end_ms))
        if s.keys is not None:
            mask = pc.and_(mask, pc.is_in(table["_kafka_key"], pa.array(sorted(s.keys), pa.binary())))
        if s.where:
            mask = pc.and_kleene(mask, self._predicate(table))
        mask = pc.fill_null(mask, False)
        return table if pc.all(mask).as_py() else table.filter(mask)

    def _predicate(self, table: pa.Table) -> pa.ChunkedArray:
        import duckdb

        if self._duck is None:
            self._duck = duckdb.connect()
        self._duck.register("records", table)
        try:
            result = self._duck.execute(f"SELECT ({self.selection.where}) AS keep FROM records").to_arrow_table()
        except duckdb.Error as e:
            raise ConfigError(f"--where: {str(e).splitlines()[0]}") from None
        finally:
            self._duck.unregister("records")
        keep = result["keep"]
        if not pa.types.is_boolean(keep.type):
            raise ConfigError(f"--where: {self.selection.where!r} is not a condition (it gives {keep.type})")
        return keep

    def _batch(self, table: pa.Table, schemas: dict[int, str]) -> Batch:
        offsets = table["_kafka_offset"].to_numpy()
        order = _offset_order(offsets)  # files of an entry hold interleaved offsets: rows go in offset order
        values = _encode_values(table, schemas, order)
        keys = table["_kafka_key"].combine_chunks()
        stamps = pc.cast(table["_kafka_timestamp"], pa.int64())
        types = (~pc.is_null(stamps).to_numpy(zero_copy_only=False)).astype(np.int8)
        timestamps = pc.fill_null(stamps, 0).to_numpy()
        headers = table["_kafka_headers"].combine_chunks()
        if order is not None:
            index = pa.array(order)
            keys, headers = keys.take(index), headers.take(index)
            offsets, types, timestamps = offsets[order], types[order], timestamps[order]
        partition = table["_kafka_partition"][0].as_py()
        return Batch(self.selection.topic, partition, offsets, timestamps, types, keys, values, headers)


WINDOW_OFFSETS = 50_000
"""Offsets merged at a time across an entry's files: bounds the rows decoded at once."""
BATCH_ROWS = 16_384
DOWNLOADS_AHEAD = 8
DECODE_AHEAD_BYTES = 1 << 20
"""Files at most this size are decoded whole as they download: at most `DOWNLOADS_AHEAD` of them
(decoded, some ten times their size) wait at a time; larger ones are read a batch at a time."""


class _Cursor:
    """The rows of one file, handed out in windows of offsets.

    Files are in offset order (the sink's, and compaction's default), so they are read a batch
    at a time; a file compacted with `--sort-by key` is in offset order only across row groups
    (each is sorted by key), so it is read a row group at a time.
    """

    def __init__(self, file: FileEntry, data: bytes):
        self.size = len(data)
        parquet = pq.ParquetFile(io.BytesIO(data))
        metadata = parquet.schema_arrow.metadata or {}
        self.schemas = writer_schemas_of(metadata)
        self.by_offset = metadata.get(ROW_ORDER_KEY, b"offset") == b"offset"
        written = written_schema(parquet.metadata.metadata)
        groups = list(range(parquet.num_row_groups)) if file.row_groups is None else file.row_groups
        parts = (parquet.iter_batches(batch_size=BATCH_ROWS, row_groups=groups) if self.by_offset
                 else (parquet.read_row_group(i).combine_chunks().to_batches()[0] for i in groups))
        self._parts = (as_written(part, written) for part in parts)
        self._head: pa.RecordBatch | None = None
        self.done = False

    @classmethod
    def opened(cls, file: FileEntry, data: bytes) -> _Cursor:
        """A cursor on `data` (the file's bytes), with all its rows decoded when the file is small."""
        cursor = cls(file, data)
        if len(data) <= DECODE_AHEAD_BYTES:
            cursor._parts = iter(list(cursor._parts))
        return cursor

    def below(self, high: int) -> list[pa.RecordBatch]:
        """The rows not handed out yet whose offset is below `high`."""
        out = []
        while not self.done:
            if self._head is None or not self._head.num_rows:
                self._head = next(self._parts, None)
                if self._head is None:
                    self.done = True
                    break
            offsets = self._head.column("_kafka_offset").to_numpy()
            if self.by_offset:
                n = int(np.searchsorted(offsets, high))
                taken, self._head = self._head.slice(0, n), self._head.slice(n)
            else:
                below = offsets < high
                taken, self._head = self._head.filter(pa.array(below)), self._head.filter(pa.array(~below))
            if taken.num_rows:
                out.append(taken)
            if self._head.num_rows:
                break  # the rest of this part is at or beyond `high`
        return out


def _prefetched(fetch: Callable[[FileEntry], bytes], open_file: Callable[[FileEntry, bytes], _Cursor],
                files: list[FileEntry], ahead: int) -> Iterator[tuple[FileEntry, _Cursor]]:
    """(file, `open_file(file, fetch(file))`) of each file in order, with up to `ahead` files running
    ahead of the consumer: downloaded by `ahead` threads, opened in order by one more (one thread
    allocating decoded rows keeps the memory it holds on to small)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=ahead, thread_name_prefix="download") as pool, \
            concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode") as decoder:
        queue: collections.deque = collections.deque()
        for f in files:
            download = pool.submit(fetch, f)
            queue.append((f, decoder.submit(lambda f=f, download=download: open_file(f, download.result()))))
            if len(queue) > ahead:
                done, opened = queue.popleft()
                yield done, opened.result()
        while queue:
            done, opened = queue.popleft()
            yield done, opened.result()


def _offset_order(offsets: np.ndarray) -> np.ndarray | None:
    """Row positions in offset order, or None when the rows are in order already."""
    if len(offsets) < 2 or bool((offsets[1:] > offsets[:-1]).all()):
        return None
    return np.argsort(offsets, kind="stable")


def _encode_values(table: pa.Table, schemas: dict[int, str], order: np.ndarray | None = None) -> pa.BinaryArray:
    """Each row's value in Confluent wire format with its original schema id (null for tombstones),
    as one Arrow array (rows in `order` when given): no Python object per record."""
    column = table["_schema_id"]
    distinct = [i for i in pc.unique(column).to_pylist() if i is not None]
    if len(distinct) == 1 and not column.null_count:  # the common case: one writer schema, no tombstones
        return _encode(table, schemas[distinct[0]], _header(distinct[0]), order)
    ids = column.to_numpy(zero_copy_only=False)
    parts, rows = [], []
    for schema_id in distinct:
        picked = np.flatnonzero(ids == schema_id)
        parts.append(_encode(table.take(pa.array(picked)), schemas[schema_id], _header(schema_id), None))
        rows.append(picked)
    tombstones = np.flatnonzero(pc.is_null(column).to_numpy(zero_copy_only=False))
    parts.append(pa.nulls(len(tombstones), pa.binary()))
    rows.append(tombstones)
    # the rows of each part, back in table order: position of row r in the concatenated parts
    where = np.empty(table.num_rows, np.int64)
    where[np.concatenate(rows)] = np.arange(table.num_rows)
    return pa.concat_arrays(parts).take(pa.array(where if order is None else where[order]))


def _encode(table: pa.Table, schema_json: str, header: bytes, order: np.ndarray | None) -> pa.BinaryArray:
    schema = json.loads(schema_json)
    names = [f["name"] for f in schema["fields"]]
    return native_encode.encode_column(table.select(names), schema, header, order)  # falls back to fastavro by itself


def _header(schema_id: int) -> bytes:
    return b"" if schema_id == -1 else wire.frame(schema_id, b"")  # -1: raw mode, no header


class RateLimiter:
    """At most `records_per_s` records and `bytes_per_s` bytes per second (0: unlimited)."""

    def __init__(self, records_per_s: float = 0, bytes_per_s: float = 0, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.records_per_s, self.bytes_per_s = records_per_s, bytes_per_s
        self.clock, self.sleep = clock, sleep
        self.start = clock()
        self.records = self.bytes = 0

    def take(self, nbytes: int, records: int = 1) -> None:
        self.records += records
        self.bytes += nbytes
        due = max(self.records / self.records_per_s if self.records_per_s else 0,
                  self.bytes / self.bytes_per_s if self.bytes_per_s else 0)
        wait = self.start + due - self.clock()
        if wait > 0.001:
            self.sleep(wait)


def parse_rate(text: str | None) -> tuple[float, float]:
    """`--rate 5000` (records/s), `--rate 10MB` (bytes/s: any size of archiver.units, `/s` optional)."""
    if not text:
        return 0.0, 0.0
    m = re.match(r"^(\d+(?:\.\d+)?)\s*(?:/s|rps)?$", text.strip(), re.IGNORECASE)
    if m:
        return float(m[1]), 0.0
    try:
        return 0.0, float(parse_size(re.sub(r"/s$", "", text.strip(), flags=re.IGNORECASE), "--rate"))
    except ConfigError:
        raise ConfigError(f"--rate: {text!r} is not a number of records/s (5000) or bytes/s (10MB)") from None
