"""Compaction: merge the small files of closed time partitions into large ones, through the ledger.

The sink writes one file per Kafka partition, output partition and commit, so a busy hour ends
up as many small files. `compact` first merges each closed directory across the Kafka partitions
(`archiver.groups`), then what is left per partition: this module. Per partition, compaction
rewrites the files per directory into files near a target size, ordered by offset (or by key
within each row group), and swaps them in with one ledger entry:

    run      = the contiguous run of live entries, from the first to the last that holds a small
               file of a closed directory
    files    = merged files for those directories + every other file of the run, unchanged
    intent   = _intents/.../<seq>-<epoch>-compaction.json, rewritten before each upload
    entry    = {kind: compaction, seq: head.seq + 1, epoch: head.epoch, start: run[0].start,
                end: run[-1].end, replaces: [seqs of run], frontier: head's next offset}
    put entry with If-None-Match: *     # races safely with the live writer: the writer steps
                                        # over a compaction; a compaction that lost retries
                                        # while its run is still live, else deletes its files

Readers see either the old entries or the compaction entry, never both, so replay, query and
verify see no duplicate and no gap at any moment, including when compaction is killed midway:
its uploads are named by an intent and removed by a later compaction once the intent is older
than `stale_after_s`. Replaced files are deleted `grace_s` after the compaction committed, so
readers that listed them just before can still read them.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import io
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from archiver import layout
from archiver.archive import Archive
from archiver.errors import ConfigError, NotFound
from archiver.ledger import (
    ABORTED,
    COMMITTED,
    Entry,
    FileEntry,
    LedgerView,
    PartitionLedger,
    append,
    writer_id,
)
from archiver.store import ObjectStore
from archiver.writer import parquet

logger = logging.getLogger(__name__)

_GC_MARKER = "_gc/topic={topic}/partition={partition}.json"


@dataclass(frozen=True)
class CompactSettings:
    """What to compact and how."""

    target_bytes: int = 128 * 1024 * 1024
    """Merged files are closed once they reach this size (Athena reads 64–256 MB files best)."""
    row_group_bytes: int = 64 * 1024 * 1024
    """In-memory (Arrow) bytes per row group: large groups for scans, bounded memory here."""
    closed_after_s: float = 3600.0
    """A time partition is closed, and compacted, this long after its end (wall clock)."""
    grace_s: float = 900.0
    """Replaced files are deleted this long after the compaction that replaced them."""
    stale_after_s: float = 3600.0
    """An unfinished compaction whose intent was not updated for this long (it is rewritten before
    each upload) is a crashed one: its uploads are removed."""
    sort_by: str = "offset"
    """offset, or key (by key then offset within each row group, for key lookups)."""
    min_files: int = 2
    """Compact a directory once it holds at least this many small files of one partition."""

    def __post_init__(self):
        if self.sort_by not in ("offset", "key"):
            raise ConfigError(f"sort_by: expected offset or key, got {self.sort_by!r}")
        if self.target_bytes <= 0 or self.row_group_bytes <= 0:
            raise ConfigError("target_bytes and row_group_bytes must be positive")


@dataclass(kw_only=True)
class Counts:
    """What a compaction did (keyword-only fields, after those of each report)."""

    directories: int = 0
    files_in: int = 0
    bytes_in: int = 0
    files_out: int = 0
    bytes_out: int = 0
    replaced_entries: int = 0
    deleted_files: int = 0
    removed_stale: int = 0
    seconds: float = 0.0


COUNTS = tuple(f.name for f in dataclasses.fields(Counts) if f.name != "seconds")


@dataclass
class PartitionReport(Counts):
    """What compaction did to one topic-partition."""

    topic: str
    partition: int
    seq: int | None = None


@dataclass
class Report:
    partitions: list[PartitionReport] = field(default_factory=list)
    groups: list = field(default_factory=list)  # groups.GroupReport: merges across partitions

    def totals(self) -> dict:
        both = [*self.groups, *self.partitions]
        out = {k: sum(getattr(p, k) for p in both) for k in COUNTS}
        out["seconds"] = round(sum(p.seconds for p in both), 3)
        out["mb_per_s"] = round(out["bytes_in"] / 1e6 / out["seconds"], 2) if out["seconds"] else 0.0
        return out


def compact(archive: Archive, topics: Iterable[str] | None = None, settings: CompactSettings = CompactSettings(),
            partitions: Callable[[str], Iterable[int]] | None = None, now: Callable[[], float] = time.time,
            dry_run: bool = False, progress: Callable[[int, int], None] | None = None,
            tables: Tables | None = None) -> Report:
    """Compact every (or the given) topic's partitions, then delete files replaced long enough ago.

    With `tables` (the Iceberg tables are published), each topic's compactions are published as
    one table commit before anything is deleted, snapshots older than the grace period expire, and
    a replaced file is deleted only once no retained snapshot names it.

    `progress(done, total)` is called after each partition. Raises ConfigError for a URL with no
    archive under it, or a topic the archive does not hold.
    """
    archive.require()
    known = archive.topics()
    chosen = list(topics) if topics else known
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        raise ConfigError(f"topic {unknown[0]!r} is not in the archive {archive.store.url}")
    from archiver import groups

    work = {t: list(partitions(t) if partitions else archive.partitions(t)) for t in chosen}
    total = sum(len(parts) for parts in work.values())
    report = Report()
    for topic, parts in work.items():
        merged = groups.compact_across(archive.store, topic, parts, settings, now, dry_run)
        if merged is not None:
            report.groups.append(merged)
        for p in parts:
            if dry_run and merged is not None and p in merged.members:
                report.partitions.append(PartitionReport(topic, p))  # what is left depends on the merge
            else:
                report.partitions.append(compact_partition(archive.store, topic, p, settings, now, dry_run,
                                                           collect=tables is None))
            if progress:
                progress(len(report.partitions), total)
    if tables is not None and not dry_run:
        collect_published(archive.store, tables, report.partitions, settings, now)
    return report


class Tables(Protocol):
    """The Iceberg side of compaction (`archiver.tables.Publisher`)."""

    def settle(self, topic: str, grace_s: float) -> dict[int, int]:
        """Publish the topic, expire snapshots older than `grace_s`; per partition, the lowest ledger
        position a retained snapshot reflects."""


def collect_published(store: ObjectStore, tables: Tables, reports: list[PartitionReport],
                      settings: CompactSettings, now: Callable[[], float] = time.time) -> None:
    """Delete replaced files no retained table snapshot names, after publishing each topic."""
    for topic in dict.fromkeys(r.topic for r in reports):
        floors = tables.settle(topic, settings.grace_s)
        for r in reports:
            if r.topic == topic:
                ledger = PartitionLedger(store, topic, r.partition)
                r.deleted_files += _collect_garbage(ledger, settings, now(), floors.get(r.partition, 0))


def compact_partition(store: ObjectStore, topic: str, partition: int, settings: CompactSettings,
                      now: Callable[[], float] = time.time, dry_run: bool = False,
                      collect: bool = True) -> PartitionReport:
    """Clean up crashed compactions, compact one partition once, delete what the grace period freed
    (unless `collect` is off: a published table decides that, see `collect_published`)."""
    started = time.monotonic()
    report = PartitionReport(topic, partition)
    ledger = PartitionLedger(store, topic, partition)
    if not dry_run:
        report.removed_stale = _remove_stale(ledger, settings, now())
    view = ledger.view()
    plan = None if view.undecided else plan_run(view.live, settings, now())  # a merge across partitions is deciding
    if plan is not None:
        run, merge = plan
        report.directories = len(merge)
        report.files_in = sum(len(files) for files in merge.values())
        report.bytes_in = sum(f.bytes for files in merge.values() for f in files)
        report.replaced_entries = len(run)
        if not dry_run:
            committed, merged = _Compaction(store, ledger, view.head, run, merge, settings, now).execute()
            if committed is not None:
                report.seq = committed.seq
                report.files_out, report.bytes_out = len(merged), sum(f.bytes for f in merged)
    if not dry_run and collect:
        report.deleted_files = _collect_garbage(ledger, settings, now())
    report.seconds = time.monotonic() - started
    return report


# --- planning --------------------------------------------------------------------------------

def directories_of(key: str) -> str:
    """The partition directories of a data key: `topic=T/<dirs>/<name>` → `<dirs>`."""
    return key.split("/", 1)[1].rsplit("/", 1)[0]


_TIME_PARTS = re.compile(r"(?:^|/)dt=(\d{4}-\d{2}-\d{2})(?:/hour=(\d{2}))?(?:/minute=(\d{2}))?(?:/|$)")


def time_partition_end(directories: str) -> float | None:
    """The end (epoch seconds) of the time partition a directory holds; None if it has none."""
    m = _TIME_PARTS.search(directories)
    if not m:
        return None
    day, hour, minute = m.groups()
    start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
    if hour is None:
        return start + 86_400
    start += int(hour) * 3600
    return start + 3600 if minute is None else start + int(minute) * 60 + 60


def plan_run(live: list[Entry], settings: CompactSettings, now: float, shared: bool = False
          ) -> tuple[list[Entry], dict[str, list[FileEntry]]] | None:
    """The run of live entries to replace and, per directory, the files to merge.

    The run starts at the first live entry holding a small file of a closed directory and stops
    before the first entry holding a small file of a directory still open: such a file would be
    carried into the compaction entry, and the next compaction would have to replace that entry
    again, so one entry would grow to list a partition's whole history. Big files, and small
    files of closed directories that have nothing to merge with, are carried as they are.

    When no such run exists (every commit also holds the current hour: records of mixed times),
    the run goes from the first to the last entry holding files to merge, carrying the small
    files of open directories: compaction still happens, and its entry grows with history.
    """
    limit = settings.target_bytes // 2

    def small(f: FileEntry) -> bool:
        """Worth merging; a file shared with other partitions only in a merge across all of them."""
        return f.bytes < limit and (shared or f.partitions is None)

    def closed(directories: str) -> bool:
        end = time_partition_end(directories)
        return end is not None and end + settings.closed_after_s <= now

    def open_small(entry: Entry) -> bool:
        return any(small(f) and not closed(directories_of(f.key)) for f in entry.files)

    first = next((i for i, e in enumerate(live) if not open_small(e)
                  and any(small(f) for f in e.files)), None)
    while first is not None:
        stop = next((i for i in range(first, len(live)) if open_small(live[i])), len(live))
        run = live[first:stop]
        by_dir: dict[str, list[FileEntry]] = collections.defaultdict(list)
        for entry in run:
            for f in entry.files:
                if small(f):
                    by_dir[directories_of(f.key)].append(f)
        merge = {d: sorted(files, key=lambda f: f.first_offset) for d, files in sorted(by_dir.items())
                 if len(files) >= settings.min_files}
        if merge:
            holds = [i for i, e in enumerate(run) if any(small(f) and directories_of(f.key) in merge
                                                         for f in e.files)]
            return run[holds[0]:holds[-1] + 1], merge
        first = next((i for i in range(stop, len(live)) if not open_small(live[i])
                      and any(small(f) for f in live[i].files)), None)
    return _carrying_plan(live, small, closed, settings.min_files)


def _carrying_plan(live: list[Entry], small: Callable[[FileEntry], bool], closed: Callable[[str], bool], min_files: int
                   ) -> tuple[list[Entry], dict[str, list[FileEntry]]] | None:
    by_dir: dict[str, list[FileEntry]] = collections.defaultdict(list)
    for entry in live:
        for f in entry.files:
            if small(f) and closed(directories_of(f.key)):
                by_dir[directories_of(f.key)].append(f)
    merge = {d: sorted(files, key=lambda f: f.first_offset) for d, files in sorted(by_dir.items())
             if len(files) >= min_files}
    if not merge:
        return None
    holds = [i for i, e in enumerate(live) if any(small(f) and directories_of(f.key) in merge
                                                  for f in e.files)]
    return live[holds[0]:holds[-1] + 1], merge


# --- doing -----------------------------------------------------------------------------------

class _Compaction:
    """One compaction of one partition: merge, upload under an intent, commit one ledger entry."""

    def __init__(self, store: ObjectStore, ledger: PartitionLedger, head: Entry, run: list[Entry],
                 merge: dict[str, list[FileEntry]], settings: CompactSettings, now: Callable[[], float]):
        self.store, self.ledger, self.head, self.run, self.merge = store, ledger, head, run, merge
        self.settings, self.now = settings, now
        self.seq = head.seq + 1
        # in its file names: a compaction that planned the same seq and lost deletes only its own
        self.run_id = secrets.token_hex(8)
        intent = layout.intent_key(ledger.topic, ledger.partition, self.seq, head.epoch, "compaction")
        self.uploads = Uploads(store, intent, settings, now)

    def execute(self) -> tuple[Entry | None, list[FileEntry]]:
        """The committed entry and the merged files (None, [] if another compaction won)."""
        merged_keys = {f.key for files in self.merge.values() for f in files}
        try:
            new_files = [entries[self.ledger.partition] for d, files in self.merge.items()
                         for entries in self._merge_directory(d, files)]
        finally:
            self.uploads.finish()
        carried = [f for e in self.run for f in e.files if f.key not in merged_keys]
        entry = Entry(self.seq, self.head.epoch, "compaction", self.run[0].start, self.run[-1].end,
                      sorted(new_files + carried, key=lambda f: (f.first_offset, f.key)),
                      records=sum(e.records for e in self.run),
                      dead_lettered=sum(e.dead_lettered for e in self.run),
                      replaces=[e.seq for e in self.run], committed_at=0.0, writer=writer_id(),
                      frontier=self.head.next_offset, lost=[r for e in self.run for r in e.lost])
        committed = self._commit(entry)
        if committed is None:
            self.uploads.discard()
            return None, []
        self.store.delete(self.uploads.intent)
        return committed, new_files

    def _commit(self, entry: Entry) -> Entry | None:
        topic, partition = self.ledger.topic, self.ledger.partition

        def after_head(entry: Entry, _existing: Entry) -> Entry | None:
            view = self.ledger.view()
            if not still_live(view, self.run):
                logger.warning("compaction of %s[%d] lost its run to another compaction; discarded", topic, partition)
                return None
            head = view.head
            return dataclasses.replace(entry, seq=head.seq + 1, epoch=head.epoch, frontier=head.next_offset,
                                       committed_at=self.now())

        committed = append(self.store, topic, partition, dataclasses.replace(entry, committed_at=self.now()),
                                  after_head)
        if committed is not None:
            logger.info("compacted %s[%d]: %d file(s) in %d director(y/ies) → seq %d, replacing %d entr(y/ies)",
                        topic, partition, sum(len(v) for v in self.merge.values()), len(self.merge), committed.seq,
                        len(self.run))
        return committed

    def _merge_directory(self, directories: str, files: list[FileEntry]) -> list[dict[int, FileEntry]]:
        def name(partition: int, f: FileEntry) -> str:
            return layout.DataKey(self.ledger.topic, partition, f.first_offset, self.head.epoch, directories,
                                  compaction=self.seq, group=self.run_id).format()

        return merge_files(self.store, [(self.ledger.partition, f) for f in files], self.settings, name,
                           self.uploads.upload)


def still_live(view: LedgerView, run: list[Entry]) -> bool:
    """Whether a compaction may still replace `run`: every entry of it is live, and no undecided
    compaction group (see `archiver.groups`) is about to replace one of them."""
    live = {e.seq for e in view.live}
    claimed = {seq for e in view.undecided for seq in e.replaces}
    return all(e.seq in live and e.seq not in claimed for e in run)


def _prefetched(store: ObjectStore, files: list[FileEntry], ahead: int = 8) -> Iterator[tuple[FileEntry, bytes]]:
    """The files' bytes in order, downloading up to `ahead` of them at once: small files are
    latency-bound, and `ahead` bounds the memory."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=ahead) as pool:
        queue: collections.deque = collections.deque()
        for f in files:
            queue.append((f, pool.submit(store.get, f.key)))
            if len(queue) >= ahead:
                done, future = queue.popleft()
                yield done, future.result()
        while queue:
            done, future = queue.popleft()
            yield done, future.result()


@dataclass
class _Part:
    """The rows of one Kafka partition in a file being written."""

    rows: int = 0
    offsets: list[int] = field(default_factory=list)
    stamps: list[int] = field(default_factory=list)
    schema_ids: set[int] = field(default_factory=set)


class _Output:
    """One merged Parquet file being written: row groups of about `row_group_bytes`, each holding
    the rows of one Kafka partition (`add` tells whose)."""

    def __init__(self, key: str, schema: pa.Schema, writer_schemas: dict[int, str], settings: CompactSettings,
                 micros: bool = True):
        self.key, self.schema, self.writer_schemas, self.settings = key, schema, writer_schemas, settings
        self.micros = micros  # timestamps stored in microseconds (see parquet.writer_options)
        self.sink = io.BytesIO()
        metadata = {parquet.WRITER_SCHEMAS_KEY: parquet.schemas_json(tuple(sorted(writer_schemas.items()))),
                    parquet.ROW_ORDER_KEY: settings.sort_by.encode()}
        self.writer = pq.ParquetWriter(self.sink, schema.with_metadata(metadata),
                                       **parquet.writer_options(schema, micros=micros))
        self.pending: list[pa.Table] = []
        self.pending_bytes = 0
        self.pending_partition: int | None = None
        self.parts: dict[int, _Part] = {}  # in the order written

    @property
    def size(self) -> int:
        return self.sink.tell() + self.pending_bytes // 8  # pending Arrow bytes compress ~8x

    def add(self, table: pa.Table, partition: int) -> None:
        if partition != self.pending_partition:
            self._write_group()  # a row group holds one partition's rows
            self.pending_partition = partition
        part = self.parts.setdefault(partition, _Part())
        part.rows += table.num_rows
        for column, acc in (("_kafka_offset", part.offsets), ("_kafka_timestamp", part.stamps)):
            bounds = pc.min_max(table[column].cast(pa.int64()))
            acc.extend(v for v in (bounds["min"].as_py(), bounds["max"].as_py()) if v is not None)
        part.schema_ids.update(i for i in pc.unique(table["_schema_id"]).to_pylist() if i is not None)
        self.pending.append(table)
        self.pending_bytes += table.nbytes
        if self.pending_bytes >= self.settings.row_group_bytes:
            self._write_group()

    def _write_group(self) -> None:
        if not self.pending:
            return
        group = pa.concat_tables(self.pending).replace_schema_metadata(self.writer.schema.metadata)
        if self.settings.sort_by == "key":
            group = group.sort_by([("_kafka_key", "ascending"), ("_kafka_offset", "ascending")])
        self.writer.write_table(group, row_group_size=group.num_rows)
        self.pending, self.pending_bytes = [], 0

    def close(self) -> tuple[dict[int, FileEntry], bytes]:
        """The file's entry for each partition with rows in it, and its bytes. A file of one
        partition is that partition's whole file; a shared one names each partition's row groups."""
        self._write_group()
        self.writer.close()
        parquet.learn_dictionaries(self.schema, self.writer.writer.metadata)
        data = self.sink.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        shared = len(self.parts) > 1
        groups = _row_groups_by_partition(data) if shared else {}
        entries = {}
        for partition, part in self.parts.items():
            entry = FileEntry(self.key, part.rows, len(data), digest, min(part.offsets), max(part.offsets),
                              min(part.stamps, default=None), max(part.stamps, default=None), sorted(part.schema_ids))
            if shared:
                indexes, compressed = groups[partition]
                entry = dataclasses.replace(entry, row_groups=indexes, partitions=sorted(self.parts),
                                            part_bytes=compressed)
            entries[partition] = entry
        return entries, data


def _row_groups_by_partition(data: bytes) -> dict[int, tuple[list[int], int]]:
    """Per Kafka partition, (its row groups, their compressed bytes), from the footer's statistics."""
    metadata = pq.read_metadata(io.BytesIO(data))
    column = next(j for j in range(metadata.num_columns) if metadata.schema.column(j).path == "_kafka_partition")
    out: dict[int, tuple[list[int], int]] = {}
    for i in range(metadata.num_row_groups):
        group = metadata.row_group(i)
        stats = group.column(column).statistics
        if stats is None or not stats.has_min_max or stats.min != stats.max:
            raise AssertionError(f"row group {i} does not hold exactly one partition's rows")
        indexes, compressed = out.get(stats.min, ([], 0))
        size = sum(group.column(j).total_compressed_size for j in range(group.num_columns))
        out[stats.min] = ([*indexes, i], compressed + size)
    return out


class Uploads:
    """Uploads named by an intent first, a few in flight at once.

    By default the intent is rewritten before each upload with every key so far (which also shows
    the compaction is alive). With `heartbeat_s`, the uploads are named by a pattern the intent
    holds instead (a merge across partitions: its directories and its group id, which a cleaner
    lists), so the intent is rewritten only that often: rewriting it per upload made a merge of
    n files write O(n²) bytes of intents and one more PUT per file.
    """

    def __init__(self, store: ObjectStore, intent: str, settings: CompactSettings, now: Callable[[], float],
                 heartbeat_s: float | None = None, **details):
        self.store, self.intent, self.settings, self.now, self.details = store, intent, settings, now, details
        self.heartbeat_s = heartbeat_s
        self.started_at = now()
        self.written_at: float | None = None
        self.keys: list[str] = []
        self._inflight: collections.deque = collections.deque()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="compaction-upload")

    def write_intent(self) -> None:
        self.written_at = self.now()
        body = {"files": self.keys, "writer": writer_id(), "started_at": self.started_at,
                "updated_at": self.written_at, **self.details}
        self.store.put(self.intent, json.dumps(body).encode())

    def upload(self, key: str, data: bytes) -> None:
        self.keys.append(key)
        if self.heartbeat_s is None or self.written_at is None or self.now() - self.written_at >= self.heartbeat_s:
            self.write_intent()  # before the upload it names (or, with a pattern, to show it is alive)
        self._drain(2 * self.settings.target_bytes - len(data))
        self._inflight.append((len(data), self._pool.submit(self.store.put, key, data)))

    def finish(self) -> None:
        """Wait for every upload; raise the first failure."""
        try:
            self._drain(0)
        finally:
            self._pool.shutdown(wait=True)

    def _drain(self, room: int) -> None:
        while self._inflight and sum(n for n, _ in self._inflight) > max(room, 0):
            self._inflight.popleft()[1].result()

    def discard(self) -> None:
        """Delete the uploads and the intent (the compaction lost, or never took effect)."""
        self.store.delete_many(self.keys)
        self.store.delete(self.intent)


def merge_files(store: ObjectStore, files: list[tuple[int, FileEntry]], settings: CompactSettings,
                name: Callable[[int, FileEntry], str], upload: Callable[[str, bytes], None]
                ) -> list[dict[int, FileEntry]]:
    """Rewrite (partition, file) inputs, in the order given, into files near the target size; per
    output, each partition's entry for it (see `_Output.close`).

    Files with other Arrow schemas or writer schemas (schema evolution) start a new output file,
    so every row keeps exactly the columns its writer schema produced, and each file's metadata
    holds the writer schemas of its rows (they must be known when a file is opened).
    """
    out: list[dict[int, FileEntry]] = []
    writer: _Output | None = None

    def close() -> None:
        entries, data = writer.close()
        upload(writer.key, data)
        out.append(entries)

    for (partition, f), data in zip(files, _prefetched(store, [f for _, f in files]), strict=True):
        table = parquet.read_table(data[1], f.row_groups)
        schema = table.schema.remove_metadata()
        writer_schemas = parquet.writer_schemas_of(table.schema.metadata)
        micros = parquet.micros_fit(table)
        if writer is not None and (writer.schema != schema or writer.writer_schemas != writer_schemas
                                   or writer.micros != micros or writer.size >= settings.target_bytes):
            close()
            writer = None
        if writer is None:
            writer = _Output(name(partition, f), schema, writer_schemas, settings, micros)
        writer.add(table.replace_schema_metadata(None), partition)
    if writer is not None:
        close()
    return out


# --- cleaning up -----------------------------------------------------------------------------

def _remove_stale(ledger: PartitionLedger, settings: CompactSettings, now: float) -> int:
    """Finish off crashed compactions: delete the uploads of intents that never committed."""
    removed = 0
    for key in list(ledger.store.list(layout.intent_prefix(ledger.topic, ledger.partition))):
        _, _, seq, epoch, kind = layout.parse_intent_key(key)
        if kind != "compaction":
            continue
        try:
            body = json.loads(ledger.store.get(key))
        except NotFound:
            continue
        if ledger.holds(seq, epoch, "compaction", body["files"]):
            ledger.store.delete(key)
        elif now - body.get("updated_at", body.get("started_at", 0)) >= settings.stale_after_s:
            ledger.store.delete_many(body["files"])
            ledger.store.delete(key)
            removed += len(body["files"])
            logger.info("removed %d file(s) of an unfinished compaction of %s[%d] (seq %d)",
                        len(body["files"]), ledger.topic, ledger.partition, seq)
    return removed


def _collect_garbage(ledger: PartitionLedger, settings: CompactSettings, now: float, floor: int | None = None) -> int:
    """Delete the files of entries replaced by compactions at least `grace_s` old that no live
    entry still names (and, given a table's `floor`, only of compactions at or below it: no
    retained snapshot names what they replaced).

    Compactions are collected in seq order, stopping at the first one still in its grace period;
    a marker object remembers the seq everything up to which was collected, so a run reads only
    the entries after it, and the entries they replaced.
    """
    store, topic, partition = ledger.store, ledger.topic, ledger.partition
    marker = _GC_MARKER.format(topic=topic, partition=partition)
    try:
        collected_through = through = json.loads(store.get(marker)).get("through", 0)  # older markers: start over
    except NotFound:
        collected_through = through = 0
    live_keys: set[str] | None = None
    others: dict[int, set[str]] = {}  # live keys of the other partitions of shared files

    def unused(f: FileEntry) -> bool:
        if f.key in live_keys:
            return False
        for p in f.partitions or ():  # shared: replaced in every member at once, checked all the same
            if p != partition and p not in others:
                others[p] = {g.key for e in PartitionLedger(store, topic, p).view().live for g in e.files}
            if p != partition and f.key in others[p]:
                return False
        return True

    doomed: list[str] = []
    for entry in ledger.entries(through):
        if entry.kind == "compaction":
            outcome = COMMITTED if entry.group is None else ledger.decisions.outcome(entry.group)
            if outcome is None:
                break  # a merge across partitions still deciding
            if outcome == ABORTED:
                through = entry.seq
                continue
            if entry.committed_at + settings.grace_s > now or (floor is not None and entry.seq > floor):
                break
            if live_keys is None:
                live_keys = {f.key for e in ledger.view().live for f in e.files}
            for seq in entry.replaces:
                try:
                    replaced = Entry.from_json(store.get(layout.ledger_key(topic, partition, seq)))
                except NotFound:
                    continue
                doomed += [f.key for f in replaced.files if unused(f)]
        through = entry.seq
    store.delete_many(list(dict.fromkeys(doomed)))
    if through != collected_through:
        store.put(marker, json.dumps({"through": through}).encode())
    return len(set(doomed))


# --- on a schedule, inside the daemon --------------------------------------------------------

class Scheduled:
    """Compaction every `interval_s` inside the daemon, in a background thread, one run at a time.

    Only partitions the daemon owns at the start of a run are compacted, so N daemons in a group
    do not all compact the same partitions. The ledger makes it safe to race the live writer.
    """

    def __init__(self, store: ObjectStore, interval_s: float, settings: CompactSettings,
                 owned: Callable[[], list[tuple[str, int]]], tables: Callable[[], Tables] | None = None):
        import schedule

        self.store = store  # its own client: the sink's stays uncontended
        self.settings, self.owned, self.tables = settings, owned, tables
        self.scheduler = schedule.Scheduler()
        self.scheduler.every(interval_s).seconds.do(self._start)
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.runs = 0
        self.totals: collections.Counter = collections.Counter()  # COUNTS summed over every run, for /metrics
        self.failures = 0

    def tick(self) -> None:
        self.scheduler.run_pending()

    def _start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return  # the previous run is still going
        partitions = sorted(self.owned())
        self._thread = threading.Thread(target=self._run, args=(partitions,), name="compaction", daemon=True)
        self._thread.start()

    def _run(self, partitions: list[tuple[str, int]]) -> None:
        from archiver import groups

        reports = []
        for topic in dict.fromkeys(t for t, _ in partitions):
            try:
                merged = groups.compact_across(self.store, topic, [p for t, p in partitions if t == topic],
                                               self.settings)
                if merged is not None:
                    self.totals.update({k: getattr(merged, k) for k in COUNTS})
            except Exception as e:  # noqa: BLE001 - a failed run is retried at the next interval
                self.failures += 1
                logger.warning("compaction of %s across partitions failed: %s", topic, e)
        for topic, partition in partitions:
            if self._stopping.is_set():
                return
            try:
                reports.append(compact_partition(self.store, topic, partition, self.settings,
                                                 collect=self.tables is None))
            except Exception as e:  # noqa: BLE001 - a failed run is retried at the next interval
                self.failures += 1
                logger.warning("compaction of %s[%d] failed: %s", topic, partition, e)
        if self.tables is not None and reports:
            try:
                collect_published(self.store, self.tables(), reports, self.settings)
            except Exception as e:  # noqa: BLE001 - replaced files wait for the next run
                self.failures += 1
                logger.warning("publishing compactions to the tables failed: %s", e)
        for report in reports:
            self.totals.update({k: getattr(report, k) for k in COUNTS})
            if report.files_in or report.deleted_files:
                logger.info("compaction of %s[%d]: %d file(s) → %d, %d replaced file(s) deleted", report.topic,
                            report.partition, report.files_in, report.files_out, report.deleted_files)
        self.runs += 1

    def close(self, timeout: float = 60.0) -> None:
        """Stop after the partition in progress (its commit is atomic either way)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
