"""`archiver verify`: audit an archive against its ledger.

The ledger is the archive's claim about itself; this module checks the claim against the
objects. Ledger checks (always): live entries chain without gaps or overlaps, counts add up,
every file's offsets lie inside its entry's range. Data checks (unless quick): every live file
exists, has the ledger's size and sha256, reads as Parquet with the ledger's row count, belongs
to its partition, holds offsets in ascending order inside its ledger range, and no offset of a
partition is in two rows. Every live file lies in a directory of the topic's recorded layout
(without a record: under the same directory names as the others). Objects under `topic=T/`
that no entry (live or replaced) and no in-flight intent names are orphans: a warning, since
readers never see them.

Offsets inside a range may legitimately have no row (transaction markers, compacted-away or
dead-lettered records), so "no gap" is proved by the ranges, never by counting rows.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import io
import itertools
import json
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from archiver import layouts
from archiver.archive import Archive
from archiver.errors import ConfigError, NotFound
from archiver.ledger import Checkpoint, Decisions, Entry, FileEntry, PartitionLedger, effective, live_of
from archiver.store import ObjectStore
from archiver.writer.parquet import ROW_ORDER_KEY

_SHOWN_RUNS = 5  # offset runs named in one problem line before "... and N more"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the archive, precise enough to act on."""

    topic: str
    partition: int
    where: str  # "offsets 10..19", "file <key>", "entry seq 7"
    what: str
    kind: str  # gap | overlap | duplicate | missing | size | sha256 | unreadable | rows | partition | order | range
    #          | records | checkpoint | layout

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}] {self.where}: {self.what}"


@dataclass(frozen=True)
class Orphan:
    """A data object no ledger entry references: invisible to readers, left by a zombie or a crash."""

    topic: str
    key: str

    def __str__(self) -> str:
        return f"{self.topic} orphan object {self.key}: referenced by no ledger entry"


@dataclass
class Report:
    """What `verify` found, with enough counts to show what was covered."""

    quick: bool = False
    problems: list[Problem] = field(default_factory=list)
    orphans: list[Orphan] = field(default_factory=list)
    topics: int = 0
    partitions: int = 0
    entries: int = 0
    files: int = 0
    rows: int = 0
    bytes: int = 0

    checked: int = 0  # files checked so far (for progress; `files` counts them as their partition starts)

    @property
    def ok(self) -> bool:
        return not self.problems

    def passes(self, strict: bool = False) -> bool:
        """No problem, and with `strict` no orphan either: `verify` exits 0 exactly then."""
        return self.ok and not (strict and self.orphans)

    def to_dict(self, strict: bool = False) -> dict:
        """One JSON document: every problem and orphan, the counts covered, and the verdict."""
        counts = ("topics", "partitions", "entries", "files", "rows", "bytes")
        return {"ok": self.passes(strict), "quick": self.quick, "strict": strict,
                "problems": [dataclasses.asdict(p) | {"message": str(p)} for p in self.problems],
                "orphans": [dataclasses.asdict(o) for o in self.orphans],
                "summary": {k: getattr(self, k) for k in counts}
                | {"problems": len(self.problems), "orphans": len(self.orphans)}}

    def summary(self) -> str:
        checked = "ledger and object listing" if self.quick else "ledger and data"
        return (f"verified {checked} of {self.topics} topic(s), {self.partitions} partition(s), "
                f"{self.entries} live entries, {self.files} files ({self.rows:,} rows, {self.bytes:,} bytes): "
                f"{len(self.problems)} problem(s), {len(self.orphans)} orphan(s)")


# --- reading the ledger once ----------------------------------------------------------------


def read_ledger(archive: Archive, topic: str, partition: int) -> tuple[list[Entry], list[Entry]]:
    """(every entry, the live ones) of a partition, reading its whole ledger once."""
    entries = archive.entries(topic, partition)
    return entries, live_of(effective(entries, Decisions(archive.store, topic))[0])


def check_checkpoints(store: ObjectStore, topic: str, partition: int, entries: list[Entry]) -> list[Problem]:
    """Each checkpoint must be what the entries up to its seq add up to."""
    ledger = PartitionLedger(store, topic, partition)
    problems = []
    for seq in ledger.checkpoint_seqs():
        try:
            stored = ledger.read_checkpoint(seq)
        except NotFound:
            continue
        upto = effective([e for e in entries if e.seq <= seq], ledger.decisions)[0]
        if stored != Checkpoint.of(seq, None, upto):
            problems.append(Problem(topic, partition, f"checkpoint seq {seq}", "disagrees with the ledger entries "
                                    "up to it (status, replay and query read through it)", "checkpoint"))
    return problems


def offset_runs(offsets: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted offsets as inclusive runs of consecutive values: [1, 2, 3, 7] -> [(1, 3), (7, 7)]."""
    runs: list[tuple[int, int]] = []
    for o in offsets:
        if runs and o == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], o)
        else:
            runs.append((o, o))
    return runs


def describe_offsets(offsets: np.ndarray) -> str:
    """`offsets 3..9, 12 (8)` for a sorted array, naming at most a few runs."""
    runs = offset_runs(int(o) for o in offsets)
    shown = ", ".join(f"{a}..{b}" if a != b else str(a) for a, b in runs[:_SHOWN_RUNS])
    more = f" and {len(runs) - _SHOWN_RUNS} more runs" if len(runs) > _SHOWN_RUNS else ""
    return f"offset{'s' if len(offsets) > 1 else ''} {shown}{more} ({len(offsets)})"


# --- ledger checks (pure) -------------------------------------------------------------------


def check_entries(topic: str, partition: int, live: list[Entry]) -> list[Problem]:
    """Chain, counts and file ranges of a partition's live entries (in offset order)."""
    problems: list[Problem] = []
    prev: Entry | None = None
    for entry in live:
        if entry.start is None or entry.end is None or entry.end < entry.start:
            problems.append(Problem(topic, partition, f"entry seq {entry.seq}",
                                    f"invalid range [{entry.start}, {entry.end})", "range"))
            continue
        problems += _check_counts(topic, partition, entry)
        problems += [Problem(topic, partition, f"offsets {a}..{b - 1}",
                             f"lost: {b - a} record(s) deleted by Kafka (retention) before archiver read them "
                             f"(entry seq {entry.seq})", "lost") for a, b in entry.lost]
        if prev is not None:
            problems += _check_chain(topic, partition, prev, entry)
        if prev is None or entry.end > prev.end:
            prev = entry
    return problems


def _check_chain(topic: str, partition: int, prev: Entry, entry: Entry) -> list[Problem]:
    """`prev` is the live entry reaching furthest so far; `entry` must start exactly where it ends."""
    if entry.start > prev.end:
        return [Problem(topic, partition, f"offsets {prev.end}..{entry.start - 1}",
                        f"gap: covered by no live entry (seq {prev.seq} ends at {prev.end}, "
                        f"seq {entry.seq} starts at {entry.start})", "gap")]
    if entry.start < prev.end:
        last = min(prev.end, entry.end) - 1
        return [Problem(topic, partition, f"offsets {entry.start}..{last}",
                        f"duplicate: entries seq {prev.seq} [{prev.start}, {prev.end}) and seq {entry.seq} "
                        f"[{entry.start}, {entry.end}) overlap", "overlap")]
    return []


def _check_counts(topic: str, partition: int, entry: Entry) -> list[Problem]:
    problems = []
    where = f"entry seq {entry.seq} [{entry.start}, {entry.end})"
    rows = sum(f.rows for f in entry.files)
    if entry.records != rows:
        problems.append(Problem(topic, partition, where,
                                f"counts {entry.records} records but its files hold {rows} rows", "records"))
    if rows + entry.dead_lettered > entry.end - entry.start:
        problems.append(Problem(topic, partition, where,
                                f"{rows} rows + {entry.dead_lettered} dead-lettered exceed its "
                                f"{entry.end - entry.start} offsets", "records"))
    for f in entry.files:
        if f.first_offset > f.last_offset or f.first_offset < entry.start or f.last_offset >= entry.end:
            problems.append(Problem(topic, partition, f"file {f.key}",
                                    f"offsets {f.first_offset}..{f.last_offset} lie outside its entry "
                                    f"seq {entry.seq} [{entry.start}, {entry.end})", "range"))
        elif f.rows > f.last_offset - f.first_offset + 1:
            problems.append(Problem(topic, partition, f"file {f.key}",
                                    f"{f.rows} rows for only {f.last_offset - f.first_offset + 1} offsets "
                                    f"{f.first_offset}..{f.last_offset}", "duplicate"))
    return problems


# --- data checks (pure, given the bytes) ----------------------------------------------------


@dataclass
class FileCheck:
    """The problems of one file and its offsets (sorted, unique) for the partition-wide duplicate check."""

    problems: list[Problem]
    offsets: np.ndarray | None = None


def check_file(topic: str, partition: int, file: FileEntry, data: bytes) -> FileCheck:
    """Size, checksum, Parquet readability, row count, partition column and offsets of one file."""
    where = f"file {file.key}"
    problems = []
    if len(data) != file.bytes:
        problems.append(Problem(topic, partition, where, f"{len(data)} bytes, the ledger says {file.bytes}", "size"))
    digest = hashlib.sha256(data).hexdigest()
    if digest != file.sha256:
        problems.append(Problem(topic, partition, where, f"sha256 {digest[:16]}…, the ledger says "
                                f"{file.sha256[:16]}…", "sha256"))
    try:
        partitions, offsets, groups, by_key = _read_columns(data, file.row_groups)
    except (pa.ArrowException, OSError, KeyError, ValueError, TypeError) as e:
        problems.append(Problem(topic, partition, where,
                                f"not readable as archive Parquet: {' '.join(str(e).split())[:200]}", "unreadable"))
        return FileCheck(problems)
    problems += _check_rows(topic, partition, file, partitions, offsets, groups if by_key else None)
    return FileCheck(problems, np.unique(offsets))


def _read_columns(data: bytes, row_groups: list[int] | None = None) -> tuple[np.ndarray, np.ndarray, list[int], bool]:
    """(_kafka_partition, _kafka_offset) of every row (of `row_groups` only, in a file shared by
    several partitions), the row count of each row group, and whether rows are in key order within
    row groups (`compact --sort-by key`), decoding every column batch by batch.

    Decoding all columns proves the file readable; keeping two bounds memory to them.
    """
    parquet = pq.ParquetFile(io.BytesIO(data))
    by_key = (parquet.schema_arrow.metadata or {}).get(ROW_ORDER_KEY) == b"key"
    partitions, offsets, groups = [], [], []
    for group in (range(parquet.num_row_groups) if row_groups is None else row_groups):
        rows = 0
        for batch in parquet.iter_batches(batch_size=65_536, row_groups=[group]):
            rows += batch.num_rows
            for name, out in (("_kafka_partition", partitions), ("_kafka_offset", offsets)):
                column = batch.column(name)  # KeyError when absent
                if column.null_count:
                    raise KeyError(f"column {name} has {column.null_count} null(s)")
                out.append(column.to_numpy().astype(np.int64))
        groups.append(rows)
    empty = np.array([], dtype=np.int64)
    return ((np.concatenate(partitions) if partitions else empty), (np.concatenate(offsets) if offsets else empty),
            groups, by_key)


def _check_rows(topic: str, partition: int, file: FileEntry, partitions: np.ndarray,
                offsets: np.ndarray, key_ordered_groups: list[int] | None = None) -> list[Problem]:
    """`key_ordered_groups`: the row counts of the row groups of a file in key order within each
    row group; its offsets must ascend from row group to row group instead of from row to row."""
    where = f"file {file.key}"
    problems = []
    if len(offsets) != file.rows:
        problems.append(Problem(topic, partition, where, f"{len(offsets)} rows, the ledger says {file.rows}", "rows"))
    wrong = partitions != partition
    if wrong.any():
        problems.append(Problem(topic, partition, where, f"{int(wrong.sum())} row(s) have _kafka_partition "
                                f"{int(partitions[wrong][0])}, not {partition}", "partition"))
    if key_ordered_groups is None:
        steps = np.diff(offsets)
        if (steps < 0).any():
            row = int(np.argmax(steps < 0)) + 1
            problems.append(Problem(topic, partition, where, f"_kafka_offset not ascending at row {row} "
                                    f"({int(offsets[row - 1])} then {int(offsets[row])})", "order"))
    else:
        bounds = np.cumsum([0, *key_ordered_groups])
        spans = [(int(offsets[a:b].min()), int(offsets[a:b].max())) for a, b in itertools.pairwise(bounds) if b > a]
        for group, (before, after) in enumerate(itertools.pairwise(spans), start=1):
            if after[0] <= before[1]:
                problems.append(Problem(topic, partition, where, f"row group {group} starts at offset {after[0]}, "
                                        f"not after row group {group - 1} (up to {before[1]})", "order"))
    ordered = np.sort(offsets)  # repeats need not be adjacent when the order is wrong too
    repeated = np.unique(ordered[1:][np.diff(ordered) == 0])
    if len(repeated):
        problems.append(Problem(topic, partition, where,
                                f"duplicate: {describe_offsets(repeated)} in more than one row of the file", "duplicate"))
    outside = np.unique(offsets[(offsets < file.first_offset) | (offsets > file.last_offset)])
    if len(outside):
        problems.append(Problem(topic, partition, where, f"{describe_offsets(outside)} outside its ledger range "
                                f"{file.first_offset}..{file.last_offset}", "range"))
    return problems


class SeenOffsets:
    """The offsets of one partition seen so far, one bit each, in chunks allocated on first use.

    A bitmap over the archived range costs 1/8 byte per offset whatever the rows hold, and
    chunks keep a corrupt far-away offset from allocating the whole distance.
    """

    _SHIFT = 23  # 8M offsets = 1 MiB per chunk

    def __init__(self) -> None:
        self._chunks: dict[int, np.ndarray] = {}

    def add(self, offsets: np.ndarray) -> np.ndarray:
        """Mark sorted unique `offsets` seen; returns those seen before."""
        if not len(offsets):
            return offsets
        chunk_ids = offsets >> self._SHIFT
        bounds = np.flatnonzero(np.diff(chunk_ids)) + 1
        repeated = []
        for part in np.split(offsets, bounds):
            chunk = self._chunks.setdefault(int(part[0] >> self._SHIFT), np.zeros(1 << (self._SHIFT - 3), np.uint8))
            local = part & ((1 << self._SHIFT) - 1)
            index, bits = local >> 3, (np.uint8(1) << (local & 7).astype(np.uint8))
            repeated.append(part[(chunk[index] & bits) != 0])
            np.bitwise_or.at(chunk, index, bits)
        return np.concatenate(repeated)


# --- the audit --------------------------------------------------------------------------------


def verify(archive: Archive, topics: Iterable[str] | None = None, quick: bool = False,
           workers: int = 4, progress: Callable[[Report], None] | None = None) -> Report:
    """Audit `topics` (default: every archived topic) against the ledger; never raises for what it finds.

    `progress` is called with the report so far after each file checked.
    Raises ConfigError for a URL with no archive under it, or a topic the archive does not hold.
    """
    archive.require()
    known = archive.topics()
    wanted = list(topics) if topics else known
    for topic in wanted:
        if topic not in known:
            raise ConfigError(f"topic {topic!r} is not in the archive at {archive.store.url}")
    report = Report(quick=quick)
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="verify") as pool:
        for topic in wanted:
            _verify_topic(archive, topic, report, quick, pool, workers, progress or (lambda _: None))
    return report


def _verify_topic(archive: Archive, topic: str, report: Report, quick: bool,
                  pool: concurrent.futures.Executor, workers: int, progress: Callable[[Report], None]) -> None:
    # Listing data before reading intents and then the ledger means an object uploaded
    # meanwhile is either absent from the listing or named by an intent or entry read later.
    listed = dict(archive.store.list_sizes(f"topic={topic}/"))
    in_flight = _intent_files(archive.store, topic)
    referenced: set[str] = set()
    recorded, reference = layouts.read(archive.store, topic), []
    objects: set[str] = set()  # a file merged across partitions is named by each of them
    report.topics += 1
    for partition in archive.partitions(topic):
        entries, live = read_ledger(archive, topic, partition)
        referenced.update(f.key for e in entries for f in e.files)
        files = [f for e in live for f in sorted(e.files, key=lambda f: (f.first_offset, f.key))]
        report.partitions += 1
        report.entries += len(live)
        report.files += len({f.key for f in files} - objects)
        objects.update(f.key for f in files)
        report.rows += sum(f.rows for f in files)
        report.bytes += sum(f.own_bytes for f in files)
        report.problems += check_entries(topic, partition, live)
        report.problems += check_checkpoints(archive.store, topic, partition, entries)
        report.problems += [Problem(topic, partition, f"file {key}", why, "layout")
                            for key, why in layouts.misplaced(recorded, (f.key for f in files), reference)]
        if quick:
            report.problems += _check_listed(archive.store, topic, partition, files, listed)
            report.checked += len(files)
            progress(report)
        else:
            report.problems += _check_data(archive.store, topic, partition, files, pool, workers,
                                           lambda: _count_checked(report, progress))
    report.orphans += [Orphan(topic, key) for key in sorted(set(listed) - referenced - in_flight)]


def _intent_files(store: ObjectStore, topic: str) -> set[str]:
    """Files named by intents: uploads in flight, or a crashed writer's that its successor deletes."""
    names: set[str] = set()
    for key in store.list(f"_intents/topic={topic}/"):
        try:
            names.update(json.loads(store.get(key))["files"])
        except NotFound:
            continue  # committed or cleaned up since the listing
    return names


def _check_listed(store: ObjectStore, topic: str, partition: int, files: list[FileEntry],
                  listed: dict[str, int]) -> list[Problem]:
    """Existence and size of live files, from the listing alone."""
    problems = []
    for f in files:
        if f.key not in listed and f.key not in store.list(f.key):  # committed after the listing?
            problems.append(Problem(topic, partition, f"file {f.key}", f"missing (offsets "
                                    f"{f.first_offset}..{f.last_offset}, {f.rows} rows)", "missing"))
        elif f.key in listed and listed[f.key] != f.bytes:
            problems.append(Problem(topic, partition, f"file {f.key}",
                                    f"{listed[f.key]} bytes, the ledger says {f.bytes}", "size"))
    return problems


def _count_checked(report: Report, progress: Callable[[Report], None]) -> None:
    report.checked += 1
    progress(report)


def _check_data(store: ObjectStore, topic: str, partition: int, files: list[FileEntry],
                pool: concurrent.futures.Executor, workers: int, checked: Callable[[], None]) -> list[Problem]:
    """Every live file read and checked in `pool`, then offsets merged for duplicates across files."""
    problems: list[Problem] = []
    seen = SeenOffsets()

    def check(f: FileEntry) -> FileCheck:
        try:
            data = store.get(f.key)
        except NotFound:
            return FileCheck([Problem(topic, partition, f"file {f.key}", f"missing (offsets "
                                      f"{f.first_offset}..{f.last_offset}, {f.rows} rows)", "missing")])
        return check_file(topic, partition, f, data)

    for f, result in zip(files, _bounded_map(pool, check, files, workers * 2)):
        checked()
        problems += result.problems
        if result.offsets is not None:
            again = seen.add(result.offsets)
            if len(again):
                problems.append(Problem(topic, partition, f"file {f.key}",
                                        f"duplicate: {describe_offsets(again)} already in another row of the "
                                        f"partition{_covering(files, f, int(again[0]))}", "duplicate"))
    return problems


def _covering(files: list[FileEntry], this: FileEntry, offset: int) -> str:
    """Other live files whose ledger range covers `offset`: where the first copy probably is."""
    keys = [f.key for f in files if f is not this and f.first_offset <= offset <= f.last_offset]
    return f" (ledger ranges covering offset {offset}: {', '.join(keys[:3])})" if keys else ""


def _bounded_map(pool: concurrent.futures.Executor, fn: Callable, items: list, window: int) -> Iterator:
    """`pool.map` in order with at most `window` results in flight, so memory stays bounded."""
    pending: deque[concurrent.futures.Future] = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
