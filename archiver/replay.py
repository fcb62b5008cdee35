"""`archiver replay`: re-publish archived records into Kafka, faithfully.

Reads the archive through its ledger (never by listing the bucket), selects records by
partition, offset range, time range, key and a SQL predicate, re-encodes each value with its
original writer schema (byte-identical to the message the archive consumed) and produces it with
the original key bytes, headers and timestamp, per source partition in offset order.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import operator
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from archiver.archive import Archive
from archiver.codec import native_encode
from archiver.codec import wire
from archiver.errors import ConfigError
from archiver.ledger import Entry, FileEntry
from archiver.writer.parquet import writer_schemas_of

_RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_time(text: str, now_ms: int, option: str) -> int:
    """Epoch ms of an ISO-8601 time (UTC unless it says otherwise), `now`, or a relative `-2h`."""
    text = text.strip()
    if text == "now":
        return now_ms
    relative = _RELATIVE.match(text)
    if relative:
        return now_ms - int(float(relative[1]) * _UNIT_MS[relative[2]])
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{option}: {text!r} is not an ISO-8601 time, 'now' or a relative time such as -2h") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


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
        if self.end_ms is not None and f.min_timestamp is not None and f.min_timestamp >= self.end_ms:
            return False
        return True


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

    @property
    def files(self) -> int:
        return sum(len(p.files) for p in self.partitions)

    @property
    def max_records(self) -> int:
        return sum(f.rows for p in self.partitions for f in p.files)

    @property
    def bytes(self) -> int:
        return sum(f.bytes for p in self.partitions for f in p.files)

    def describe(self) -> dict:
        return {
            "topic": self.topic, "files": self.files, "records_at_most": self.max_records, "bytes": self.bytes,
            "partitions": {p.partition: {"files": len(p.files), "first_offset": min(f.first_offset for f in p.files),
                                         "last_offset": max(f.last_offset for f in p.files),
                                         "records_at_most": sum(f.rows for f in p.files)}
                           for p in self.partitions if p.files},
        }


def plan(archive: Archive, selection: Selection) -> Plan:
    """Locate the selected records through the ledger; ConfigError when nothing matches."""
    if selection.topic not in archive.topics():
        raise ConfigError(f"topic {selection.topic!r} is not in the archive {archive.store.url} "
                          f"(archived topics: {', '.join(archive.topics()) or 'none'})")
    partitions = []
    for partition in archive.partitions(selection.topic):
        if not selection.wants_partition(partition):
            continue
        entries = []
        for entry in archive.live_entries(selection.topic, partition):
            files = [f for f in entry.files if selection.wants_file(f, partition)]
            if files:
                entries.append((entry, files))
        if entries:
            partitions.append(PartitionPlan(partition, entries))
    result = Plan(selection.topic, partitions)
    if not result.files:
        raise ConfigError(f"the selection matches no archived records of {selection.topic!r}")
    return result


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
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="download")

    def records(self, partition_plan: PartitionPlan, after_offset: int = -1) -> Iterator[Record]:
        """One partition's selected records, in offset order (after `after_offset`)."""
        return self.stream([partition_plan], {partition_plan.partition: after_offset})

    def stream(self, plans: list[PartitionPlan], after: dict[int, int]) -> Iterator[Record]:
        """The selected records of every planned partition, partition after partition, each in
        offset order. The next entry's files download while this one's records are produced:
        reading is latency-bound (many small objects), producing is CPU-bound."""
        work = [(plan.partition, files, after.get(plan.partition, -1)) for plan in plans
                for entry, files in plan.entries
                if entry.end is None or entry.end - 1 > after.get(plan.partition, -1)]  # else replayed before
        with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as ahead:
            upcoming = ahead.submit(self._read, work[0][1]) if work else None
            for i, (partition, _, after_offset) in enumerate(work):
                table = upcoming.result()
                upcoming = ahead.submit(self._read, work[i + 1][1]) if i + 1 < len(work) else None
                table = self._select(table, partition, after_offset)
                if table.num_rows:
                    yield from self._records(table)

    def _read(self, files: list[FileEntry]) -> pa.Table:
        """One entry's files, downloaded in parallel, as one table with their writer schemas."""
        tables, schemas = [], {}
        for f, data in zip(files, self._pool.map(lambda f: self.archive.store.get(f.key), files)):
            self.bytes_read += len(data)
            table = pq.read_table(io.BytesIO(data))
            schemas.update(writer_schemas_of(table.schema.metadata))
            tables.append(table.replace_schema_metadata(None))
        table = pa.concat_tables(tables, promote_options="default")
        return table.replace_schema_metadata({b"schemas": json.dumps(schemas).encode()})

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

    def _records(self, table: pa.Table) -> Iterator[Record]:
        schemas = {int(k): v for k, v in json.loads(table.schema.metadata[b"schemas"]).items()}
        columns = [table["_kafka_partition"].to_pylist(), table["_kafka_offset"].to_pylist(),
                   table["_kafka_key"].to_pylist(), _encode_values(table, schemas),
                   _header_lists(table["_kafka_headers"]), pc.cast(table["_kafka_timestamp"], pa.int64()).to_pylist()]
        order = _offset_order(table["_kafka_offset"])
        if order is not None:  # files of an entry hold interleaved offsets: put rows in offset order
            pick = operator.itemgetter(*order)
            columns = [list(pick(c)) for c in columns]
        return map(Record._make, zip(*columns))


def _offset_order(offsets: pa.ChunkedArray) -> list[int] | None:
    """Row positions in offset order, or None when the rows are in order already. Reordering the
    Python lists costs far less than sorting the table (a take of every nested column)."""
    array = offsets.to_numpy()
    if len(array) < 2 or bool((array[1:] > array[:-1]).all()):
        return None
    return np.argsort(array, kind="stable").tolist()


def _header_lists(column: pa.ChunkedArray) -> list[list[tuple[str, bytes]]]:
    """Per row, its headers as (key, value) tuples, from the flat child arrays (no per-header dicts)."""
    array = column.combine_chunks()
    start = array.offsets[0].as_py()
    bounds = [o - start for o in array.offsets.to_pylist()]
    entries = array.values.slice(start, bounds[-1])
    pairs = list(zip(entries.field("key").to_pylist(), entries.field("value").to_pylist()))
    return [pairs[a:b] for a, b in zip(bounds, bounds[1:])]


def _encode_values(table: pa.Table, schemas: dict[int, str]) -> list[bytes | None]:
    """Each row's value in Confluent wire format with its original schema id; None for tombstones."""
    column = table["_schema_id"]
    distinct = [i for i in pc.unique(column).to_pylist() if i is not None]
    if len(distinct) == 1 and not column.null_count:  # the common case: one writer schema, no tombstones
        return [_header(distinct[0]) + datum for datum in _encode(table, schemas[distinct[0]])]
    ids = column.to_pylist()
    values: list[bytes | None] = [None] * table.num_rows
    for schema_id in distinct:
        rows = [n for n, i in enumerate(ids) if i == schema_id]
        header = _header(schema_id)
        for n, datum in zip(rows, _encode(table.take(pa.array(rows)), schemas[schema_id])):
            values[n] = header + datum
    return values


def _encode(table: pa.Table, schema_json: str) -> list[bytes]:
    schema = json.loads(schema_json)
    names = [f["name"] for f in schema["fields"]]
    return native_encode.encode_rows(table.select(names), schema)  # falls back to fastavro by itself


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

    def take(self, nbytes: int) -> None:
        self.records += 1
        self.bytes += nbytes
        due = max(self.records / self.records_per_s if self.records_per_s else 0,
                  self.bytes / self.bytes_per_s if self.bytes_per_s else 0)
        wait = self.start + due - self.clock()
        if wait > 0.001:
            self.sleep(wait)


def parse_rate(text: str | None) -> tuple[float, float]:
    """`--rate 5000` (records/s), `--rate 10MB` (bytes/s, also KB/GB)."""
    if not text:
        return 0.0, 0.0
    m = re.match(r"^(\d+(?:\.\d+)?)\s*(|/s|rps|[KMG]B(?:/s)?)$", text.strip(), re.IGNORECASE)
    if not m:
        raise ConfigError(f"--rate: {text!r} is not a number of records/s (5000) or bytes/s (10MB)")
    number, unit = float(m[1]), m[2].upper().removesuffix("/S")
    if unit in ("", "RPS"):
        return number, 0.0
    return 0.0, number * {"KB": 1e3, "MB": 1e6, "GB": 1e9}[unit]
