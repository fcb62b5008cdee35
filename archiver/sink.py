"""The sink: turns consumed messages into committed Parquet files, partition by partition.

Kafka-free (the daemon feeds it messages and supplies the offset-commit and dead-letter
callbacks), so its logic is testable without a broker. Per owned partition it keeps the
ledger (commit protocol), the buffer since the last commit and, while the store fails, the
pending flush that is retried as is.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import hashlib
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from archiver import layout
from archiver.codec.arrow import nullable_schema
from archiver.codec.keys import KeyDecoder
from archiver.codec.values import Decoded, Run, ValueDecoder, shared_header
from archiver.config import TopicSettings
from archiver.errors import DeadLetterUndelivered, TerminalError, TransientError
from archiver.layout import Granularity
from archiver.ledger import Entry, FileEntry, PartitionLedger, writer_id
from archiver.metrics import Histogram
from archiver.source.records import Batch, Record
from archiver.store import ObjectStore
from archiver.writer import parquet
from archiver.writer.buffer import PartitionBuffer, Rotation, RotationPolicy

logger = logging.getLogger(__name__)

TopicPartition = tuple[str, int]


@dataclass
class Pending:
    """A flush built but not yet committed: retried as is while the store fails."""

    entry: Entry
    blobs: dict[str, bytes]
    reason: Rotation
    uploaded: bool = False
    intent_written: bool = False
    error: TransientError | None = None  # why the last attempt did not commit


@dataclass
class Owned:
    ledger: PartitionLedger
    buffer: PartitionBuffer
    settings: TopicSettings
    pending: Pending | None = None
    check_start: bool = True  # the next fetched batch follows a seek: compare it with the log start
    outage: TransientError | None = None  # a dependency is out: consume again from buffer.end once it is back
    key_buckets: dict[bytes | None, int] = field(default_factory=dict)  # bounded cache of recent keys


MAX_TOPIC_LABELS = 100  # beyond this many topics, per-topic counts go to topic="_other"


@dataclass
class TopicCounts:
    """Per-topic counters, for /metrics labels."""

    records_in: int = 0
    bytes_in: int = 0
    records_out: int = 0
    bytes_out: int = 0
    files: int = 0
    commits: int = 0
    dead_lettered: int = 0
    lost: int = 0


@dataclass
class Stats:
    records_in: int = 0
    bytes_in: int = 0
    records_out: int = 0
    bytes_out: int = 0
    files: int = 0
    commits: int = 0
    dead_lettered: int = 0
    duplicates_skipped: int = 0
    lost: int = 0  # offsets Kafka deleted (retention) before they could be archived
    rotations: dict[str, int] = field(default_factory=dict)
    upload_latency: Histogram = field(default_factory=Histogram)
    topics: dict[str, TopicCounts] = field(default_factory=dict)

    def topic(self, name: str) -> TopicCounts:
        counts = self.topics.get(name)
        if counts is None:
            if len(self.topics) >= MAX_TOPIC_LABELS:
                name = "_other"
            counts = self.topics.setdefault(name, TopicCounts())
        return counts


class Sink:
    """Owns partitions, buffers their records and commits them through the ledger."""

    def __init__(self, store: ObjectStore, settings_for: Callable[[str], TopicSettings],
                 decoder_for: Callable[[str], ValueDecoder],
                 commit_offset: Callable[[str, int, int], None],
                 dead_letter: Callable[[object, str], None] | None,
                 flush_dead_letters: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.monotonic, upload_threads: int = 8):
        self.store = store
        self._settings_for = settings_for
        self._decoder_for = decoder_for
        self.key_decoder_for: Callable[[str], KeyDecoder] | None = None  # for key_format = avro
        self.log_start: Callable[[str, int], int | None] | None = None  # Kafka's first offset of a partition
        self.check_layout: Callable[[str], None] = lambda topic: None  # ConfigError if the archive differs
        self._commit_offset = commit_offset
        self._dead_letter = dead_letter
        self._flush_dead_letters = flush_dead_letters
        self._clock = clock
        self._pool = concurrent.futures.ThreadPoolExecutor(upload_threads, thread_name_prefix="upload")
        self.owned: dict[TopicPartition, Owned] = {}
        self.stats = Stats()

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    # --- ownership ---------------------------------------------------------------------------

    def assign(self, topic: str, partition: int) -> int | None:
        """Claim the partition in the ledger; returns the offset to resume at (None: unknown)."""
        self.check_layout(topic)
        ledger = PartitionLedger(self.store, topic, partition)
        ledger.claim()
        start = ledger.next_offset()
        buffer = PartitionBuffer(topic, partition, start=start, end=start)
        self.owned[(topic, partition)] = Owned(ledger, buffer, self._settings_for(topic))
        return start

    def release(self, topic: str, partition: int, flush: bool) -> None:
        """Stop owning a partition, committing its buffer first when `flush` (a clean revoke)."""
        owned = self.owned.get((topic, partition))
        if owned is None:
            return
        if flush:
            try:
                self.flush(topic, partition, Rotation.REVOKE)
            except (TransientError, TerminalError) as e:
                logger.warning("could not commit %s[%d] on revoke, the next owner re-reads it: %s",
                               topic, partition, e)
        del self.owned[(topic, partition)]

    def resume_offset(self, topic: str, partition: int) -> int | None:
        """Where consumption must continue after a pause: one past the last buffered offset."""
        owned = self.owned[(topic, partition)]
        owned.check_start = True
        owned.outage = None
        return owned.buffer.end

    def outages(self) -> dict[TopicPartition, TransientError]:
        """Partitions that wait for a dependency: a pending commit the store or the dead-letter
        topic did not take, or records the registry could not decode yet."""
        out = {}
        for key, owned in self.owned.items():
            if owned.outage is not None:
                out[key] = owned.outage
            elif owned.pending is not None:
                out[key] = owned.pending.error or TransientError("commit pending")
        return out

    # --- ingest ------------------------------------------------------------------------------

    def ingest(self, topic: str, partition: int, messages: Batch | Sequence) -> None:
        """Buffer records of one partition (in offset order; a Batch, or confluent-kafka messages);
        may flush on rotation."""
        owned = self.owned.get((topic, partition))
        if owned is None or owned.pending is not None or owned.outage is not None:
            return  # not ours (any more), or waiting on a dependency: re-fetched from buffer.end later
        batch = messages if isinstance(messages, Batch) else Batch.of(messages)
        if not len(batch):
            return
        expected = owned.buffer.end
        if expected is not None and batch.first < expected:
            fresh = batch.from_offset(expected)
            self.stats.duplicates_skipped += len(batch) - len(fresh)
            batch = fresh
            if not len(batch):
                return
        if owned.check_start:
            owned.check_start = False
            self._check_lost(owned, batch.first)
        for begin, end in _schema_segments(batch.values):
            segment = batch.slice(begin, end)
            try:
                self._ingest_segment(owned, segment)
            except TransientError as e:  # the registry (or the dead-letter topic) is out: not bad data
                owned.outage = e
                logger.warning("%s[%d] waits at offset %d: %s", topic, partition, segment.first, e)
                return
            except pa.ArrowException as e:  # a decoded value Arrow cannot hold as archived
                raise TerminalError(f"cannot archive {topic}[{partition}] offsets {segment.first}.."
                                    f"{segment.last}: {' '.join(str(e).split())}") from e
            if owned.pending is not None:
                return

    def _check_lost(self, owned: Owned, first: int) -> None:
        """After a seek to `buffer.end`, a first offset beyond it is either normal (a transaction
        marker, records removed by log compaction) or records that retention deleted before they
        were archived (the consumer reset to the log start). Kafka's log start tells which; lost
        ranges are recorded in the commit, logged and counted, so status and verify report them."""
        buffer = owned.buffer
        expected = buffer.end
        if expected is None or first <= expected or self.log_start is None:
            return
        low = self.log_start(buffer.topic, buffer.partition)
        if low is None or low <= expected:
            return
        lost = (expected, min(low, first))
        buffer.lost.append(lost)
        self.stats.lost += lost[1] - lost[0]
        self.stats.topic(buffer.topic).lost += lost[1] - lost[0]
        logger.error("%s[%d] offsets %d..%d (%d records) were deleted by Kafka (retention) before they were "
                     "archived", buffer.topic, buffer.partition, lost[0], lost[1] - 1, lost[1] - lost[0])

    def _ingest_segment(self, owned: Owned, batch: Batch) -> None:
        buffer = owned.buffer
        decoded = self._decoder_for(buffer.topic).decode(batch.values)
        keys = None
        if owned.settings.key_format == "avro":
            decoded, keys = self._decode_keys(buffer.topic, decoded, batch.keys)
        schema_ids = {r.schema_id for r in decoded.runs if r.schema_id is not None}
        if schema_ids and buffer.schema_ids and not schema_ids <= set(buffer.schema_ids):
            self.flush(buffer.topic, buffer.partition, Rotation.SCHEMA_CHANGE)
            if owned.pending is not None:
                return
        for position, reason in decoded.errors:
            self._reject(batch.record(position), reason)
        now = self._clock()
        buffer.advance(batch.first, batch.last, now)
        buffer.dead_lettered += len(decoded.errors)
        value_bytes = sum(map(len, filter(None, batch.values)))
        self.stats.records_in += len(batch)
        self.stats.bytes_in += value_bytes
        counts = self.stats.topic(buffer.topic)
        counts.records_in += len(batch)
        counts.bytes_in += value_bytes
        if decoded.runs:
            table, _ = self._table(owned, decoded.runs, batch, keys)
            times = self._partition_times(owned, table)
            ids, names = self._route(owned, table, times)
            buffer.add(table, ids, names, times)
            decoder = self._decoder_for(buffer.topic)
            for schema_id in schema_ids:
                buffer.schema_ids.setdefault(schema_id, decoder.schema_text(schema_id))
        self._maybe_rotate(owned, now)

    def _decode_keys(self, topic: str, decoded: Decoded, keys: list) -> tuple[Decoded, pa.Array]:
        """Avro keys, one per position (null where undecodable); rows with a bad key join the errors."""
        column, key_errors = self.key_decoder_for(topic).decode(keys)
        bad = {i for i, _ in key_errors}
        good = [i for i in range(len(keys)) if i not in bad]
        slot = dict(zip(good, range(len(good))))
        aligned = column.take(pa.array([slot.get(i) for i in range(len(keys))], pa.int64()))
        if not bad:
            return decoded, aligned
        known = {i for i, _ in decoded.errors}
        errors = sorted(decoded.errors + [(i, r) for i, r in key_errors if i not in known])
        runs = []
        for run in decoded.runs:
            keep = [j for j, i in enumerate(run.rows) if i not in bad]
            if keep:
                table = None if run.table is None else run.table.take(pa.array(keep, pa.int64()))
                runs.append(Run(run.schema_id, [run.rows[j] for j in keep], table))
        return Decoded(runs, errors), aligned

    def _table(self, owned: Owned, runs: list[Run], batch: Batch,
               keys: pa.Array | None = None) -> tuple[pa.Table, list[int] | None]:
        """The runs' rows with their metadata, in offset order, and their positions (None: all)."""
        if len(runs) == 1 and len(runs[0].rows) == len(batch):
            return self._with_metadata(owned, runs[0], batch, None, keys), None
        tables = [self._with_metadata(owned, run, batch, run.rows, keys) for run in runs]
        rows = sorted(i for run in runs for i in run.rows)
        return (tables[0] if len(tables) == 1 else _in_offset_order(tables)), rows

    def _reject(self, message, reason: str) -> None:
        where = f"{message.topic()}[{message.partition()}] offset {message.offset()}"
        if self._dead_letter is None:
            raise TerminalError(f"undecodable record at {where}: {reason}")
        self._dead_letter(message, reason)
        self.stats.dead_lettered += 1
        self.stats.topic(message.topic()).dead_lettered += 1
        logger.warning("dead-lettered %s: %s", where, reason)

    def _with_metadata(self, owned: Owned, run: Run, batch: Batch, rows: list[int] | None,
                       keys: pa.Array | None = None) -> pa.Table:
        if keys is not None and rows is not None:
            keys = keys.take(pa.array(rows, pa.int64()))
        return batch_rows(run, batch.take(rows), owned.settings.key_format, keys)

    # --- routing -------------------------------------------------------------------------------

    def _partition_times(self, owned: Owned, table: pa.Table) -> np.ndarray:
        """Per row, the epoch ms that picks its time partition (0 when there is none)."""
        times = pc.fill_null(table["_kafka_timestamp"].cast(pa.int64()), 0)
        field_name = owned.settings.time_field
        if field_name and field_name in table.column_names:
            column = table[field_name]
            if pa.types.is_timestamp(column.type):
                column = pc.cast(column, pa.timestamp("ms", tz=column.type.tz))
            times = pc.coalesce(pc.cast(column, pa.int64()), times)
        return times.to_numpy()

    def _route(self, owned: Owned, table: pa.Table, times: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Per row, the index of its output partition in `names` (directories under topic=T/)."""
        granularity = Granularity(owned.settings.time_granularity)
        periods = times // granularity.millis  # floor division: the time bucket's number
        parts, part_names = self._key_parts(owned, table)
        first = int(periods.min())
        codes, ids = np.unique((periods - first) * len(part_names) + parts, return_inverse=True)
        names = []
        for code in codes.tolist():
            period, part = divmod(code, len(part_names))
            path = layout.time_path((first + period) * granularity.millis, granularity)
            names.append(path if part_names[part] is None else f"{path}/{part_names[part]}")
        return ids, names

    def _key_parts(self, owned: Owned, table: pa.Table) -> tuple[np.ndarray, list[str | None]]:
        """Per row, the index of its key directory in the returned list (None: no key directory)."""
        s = owned.settings
        if s.key_partitioning == "hash":
            keys, rows = _distinct(table["_kafka_key"])
            buckets = np.array([self._key_bucket(owned, key) for key in keys], dtype=np.int64)
            return buckets[rows], _bucket_paths(s.key_buckets)
        if s.key_partitioning == "field":
            allowed = frozenset(s.key_field_values)
            if s.key_field not in table.column_names:
                return np.zeros(table.num_rows, np.int64), [layout.field_value_path(s.key_field, None, allowed)]
            values, rows = _distinct(table[s.key_field])
            paths = [layout.field_value_path(s.key_field, v, allowed) for v in values]
            distinct = sorted(set(paths))  # values outside `allowed` share one path
            slot = {path: i for i, path in enumerate(distinct)}
            return np.array([slot[path] for path in paths], dtype=np.int64)[rows], distinct
        return np.zeros(table.num_rows, np.int64), [None]

    def _key_bucket(self, owned: Owned, key: bytes | None) -> int:
        bucket = owned.key_buckets.get(key)
        if bucket is None:
            bucket = layout.key_bucket(key, owned.settings.key_buckets)
            if len(owned.key_buckets) < 100_000:
                owned.key_buckets[key] = bucket
        return bucket

    # --- rotation and commit -----------------------------------------------------------------

    def _maybe_rotate(self, owned: Owned, now: float) -> None:
        s = owned.settings
        policy = RotationPolicy(s.max_records, s.max_bytes, int(s.time_window_s * 1000), s.interval_s)
        reason = owned.buffer.rotation_due(policy, now)
        if reason is not None:
            self.flush(owned.buffer.topic, owned.buffer.partition, reason)

    def tick(self, max_buffer_bytes: int) -> None:
        """Periodic work: interval rotation of idle partitions and the global memory cap."""
        now = self._clock()
        for owned in list(self.owned.values()):
            if owned.pending is None:
                self._maybe_rotate(owned, now)
        while self.buffered_bytes() > max_buffer_bytes:
            candidates = [o for o in self.owned.values() if o.pending is None and not o.buffer.empty]
            if not candidates:
                break
            largest = max(candidates, key=lambda o: o.buffer.nbytes)
            self.flush(largest.buffer.topic, largest.buffer.partition, Rotation.MEMORY)

    def buffered_bytes(self) -> int:
        total = 0
        for owned in self.owned.values():
            total += owned.buffer.nbytes
            if owned.pending is not None:
                total += sum(len(b) for b in owned.pending.blobs.values())
        return total

    def flush(self, topic: str, partition: int, reason: Rotation) -> bool:
        """Commit the partition's buffer. True when committed (or nothing to commit).

        A store failure leaves the flush pending (see `retry`); FencedError means the partition
        belongs to another owner now.
        """
        owned = self.owned[(topic, partition)]
        if owned.pending is None:
            if owned.buffer.empty:
                return True
            owned.pending = self._build(owned, reason)
        return self._complete(owned)

    def retry(self, topic: str, partition: int) -> bool:
        owned = self.owned.get((topic, partition))
        return owned is None or owned.pending is None or self._complete(owned)

    def _build(self, owned: Owned, reason: Rotation) -> Pending:
        buffer, ledger = owned.buffer, owned.ledger
        seq = ledger.head.seq + 1
        # one file at a time, in this thread: encoding in the pool cost more CPU and memory
        encoded = [self._encode_file(owned, dirs, table) for dirs, table in buffer.files()]
        files = [file for file, _ in encoded]
        entry = Entry(seq, ledger.epoch, "commit", buffer.start, buffer.end, files,
                      records=sum(f.rows for f in files), dead_lettered=buffer.dead_lettered,
                      committed_at=0.0, writer=writer_id(), lost=[list(r) for r in buffer.lost])
        buffer.release_rows()  # the encoded files are all a retry needs: free the Arrow buffers now
        return Pending(entry, {file.key: data for file, data in encoded}, reason)

    def _encode_file(self, owned: Owned, directories: str, table: pa.Table) -> tuple[FileEntry, bytes]:
        buffer, s = owned.buffer, owned.settings
        offsets = pc.min_max(table["_kafka_offset"])
        first, last = offsets["min"].as_py(), offsets["max"].as_py()
        key = layout.DataKey(buffer.topic, buffer.partition, first, owned.ledger.epoch, directories).format()
        codec, level = s.compression, s.compression_level
        if table.num_rows < s.small_file_rows and codec in ("zstd", "gzip"):
            codec, level = "snappy", None  # set-up costs more than a small file saves; compaction rewrites it
        try:
            data = parquet.encode(table, buffer.schema_ids, codec, level)
        except (pa.ArrowException, OSError) as e:  # e.g. Avro fixed(0) or an empty record
            raise TerminalError(f"cannot write Parquet for {key}: {' '.join(str(e).split())}") from e
        stamps = pc.min_max(table["_kafka_timestamp"])
        ids = sorted({i for i in table["_schema_id"].unique().to_pylist() if i is not None})
        return FileEntry(key, table.num_rows, len(data), hashlib.sha256(data).hexdigest(), first, last,
                         _ms(stamps["min"]), _ms(stamps["max"]), ids), data

    def _complete(self, owned: Owned) -> bool:
        pending, ledger, buffer = owned.pending, owned.ledger, owned.buffer
        try:
            if not pending.intent_written:
                ledger.write_intent(list(pending.blobs))
                pending.intent_written = True
            if not pending.uploaded:
                started = time.monotonic()
                list(self._pool.map(lambda kv: self.store.put(kv[0], kv[1]), pending.blobs.items()))
                self.stats.upload_latency.observe(time.monotonic() - started)
                pending.uploaded = True
            self._flush_dead_letters()
            entry = pending.entry
            pending.entry = ledger.commit(dataclasses.replace(entry, committed_at=time.time()))
        except DeadLetterUndelivered as e:
            logger.warning("commit of %s[%d] seq %d withdrawn: %s", buffer.topic, buffer.partition,
                           pending.entry.seq, e)
            self.rewind_dead_lettered(e)
            return False
        except TransientError as e:
            logger.warning("commit of %s[%d] seq %d delayed: %s", buffer.topic, buffer.partition,
                           pending.entry.seq, e)
            pending.error = e
            return False
        except TerminalError:
            self._abandon(owned)
            raise
        self._committed(owned, pending)
        return True

    def _committed(self, owned: Owned, pending: Pending) -> None:
        buffer, entry = owned.buffer, pending.entry
        written = sum(f.bytes for f in entry.files)
        self.stats.files += len(entry.files)
        self.stats.commits += 1
        self.stats.records_out += entry.records
        self.stats.bytes_out += written
        counts = self.stats.topic(buffer.topic)
        counts.files += len(entry.files)
        counts.commits += 1
        counts.records_out += entry.records
        counts.bytes_out += written
        self.stats.rotations[pending.reason.value] = self.stats.rotations.get(pending.reason.value, 0) + 1
        logger.info("committed %s[%d] offsets %d..%d: %d records in %d file(s), %d bytes, %d dead-lettered "
                    "(seq %d, epoch %d, %s)", buffer.topic, buffer.partition, entry.start, entry.end - 1,
                    entry.records, len(entry.files), sum(f.bytes for f in entry.files), entry.dead_lettered,
                    entry.seq, entry.epoch, pending.reason.value)
        owned.pending = None
        buffer.reset()
        if owned.ledger.checkpoint_due():  # reads up to CHECKPOINT_EVERY entries: off the poll loop
            owned.ledger.checkpointed = entry.seq
            self._pool.submit(self._checkpoint, owned.ledger, entry.seq)
        try:
            self._commit_offset(buffer.topic, buffer.partition, entry.end)
        except Exception as e:  # noqa: BLE001 - best effort: the ledger, not Kafka, decides where to resume
            logger.warning("Kafka offset commit for %s[%d] failed: %s", buffer.topic, buffer.partition, e)

    @staticmethod
    def _checkpoint(ledger: PartitionLedger, seq: int) -> None:
        try:
            ledger.write_checkpoint(seq)
        except (TransientError, TerminalError) as e:  # readers fall back on more entries; the next one retries
            logger.warning("ledger checkpoint of %s[%d] at seq %d not written: %s", ledger.topic, ledger.partition,
                           seq, e)

    def rewind_dead_lettered(self, error: DeadLetterUndelivered) -> None:
        """The dead-letter producer lost records: every partition with dead letters not yet
        committed drops its buffer (and pending commit) and consumes again from its last commit.

        Which dead letter failed is not known per partition, so all of them are produced again:
        the dead-letter topic may hold a record twice, the archive never skips one.
        """
        for owned in list(self.owned.values()):
            buffer = owned.buffer
            pending_dead = owned.pending.entry.dead_lettered if owned.pending else 0
            if not (buffer.dead_lettered or pending_dead) or buffer.start is None:
                continue
            for key in (owned.pending.blobs if owned.pending and owned.pending.intent_written else ()):
                try:
                    self.store.delete(key)  # uncommitted; the next owner's claim would remove it too
                except (TransientError, TerminalError):
                    pass
            owned.pending = None
            start = buffer.start
            buffer.__init__(buffer.topic, buffer.partition, start=start, end=start)
            owned.outage = error
            logger.warning("%s[%d] will consume again from offset %d: %s", buffer.topic, buffer.partition,
                           start, error)

    def _abandon(self, owned: Owned) -> None:
        """Fenced or failed for good: delete what this writer uploaded and forget the partition."""
        for key in (owned.pending.blobs if owned.pending else ()):
            try:
                self.store.delete(key)
            except (TransientError, TerminalError):
                pass
        self.owned.pop((owned.buffer.topic, owned.buffer.partition), None)


def archived_rows(run: Run, partition: int, offsets: list[int], stamps: list[tuple[int, int]],
                  keys: list[bytes | None], headers: list, key_format: str = "bytes",
                  decoded_keys: pa.Array | None = None) -> pa.Table:
    """`batch_rows` of records given as lists (confluent-kafka's timestamp pairs and header lists)."""
    meta = Batch.of([Record("", partition, offset, stamp, key, None, header)
                     for offset, stamp, key, header in zip(offsets, stamps, keys, headers, strict=True)])
    return batch_rows(run, meta, key_format, decoded_keys)


def batch_rows(run: Run, batch: Batch, key_format: str = "bytes", decoded_keys: pa.Array | None = None) -> pa.Table:
    """The rows a file stores for one decoded run: value columns, then the Kafka metadata columns.

    `decoded_keys` (key_format = avro) become the `_key` column as they are.
    """
    meta = parquet.metadata_columns(batch, run.schema_id)
    if key_format == "string":
        meta = meta.append_column("_key", _keys_as_text(meta["_kafka_key"]))
    elif decoded_keys is not None:
        meta = meta.append_column("_key", decoded_keys)
    if run.table is None:
        return meta
    values = run.table
    wanted = nullable_schema(values.schema)  # tombstone rows null whole structs
    if not wanted.equals(values.schema):  # a no-op cast is not free, and pyarrow breaks structs of null children
        values = pa.Table.from_arrays([c if c.type == f.type else parquet.cast(c, f.type)
                                       for c, f in zip(values.columns, wanted, strict=True)], schema=wanted)
    return pa.Table.from_arrays(values.columns + meta.columns,
                                schema=pa.schema(list(values.schema) + list(meta.schema)))


def _keys_as_text(keys: pa.ChunkedArray) -> pa.Array:
    """Keys as UTF-8 strings; a key that is not valid UTF-8 gets a null `_key` (its bytes stay in _kafka_key)."""
    try:
        return pc.cast(keys, pa.string())
    except pa.ArrowInvalid:
        return pa.array([_utf8_or_none(k) for k in keys.to_pylist()], pa.string())


def _utf8_or_none(key: bytes | None) -> str | None:
    try:
        return key.decode("utf-8") if key is not None else None
    except UnicodeDecodeError:
        return None


def _ms(value: pa.Scalar) -> int | None:
    return None if not value.is_valid else value.cast(pa.int64()).as_py()


def _schema_segments(values: Sequence[bytes | None]) -> list[tuple[int, int]]:
    """[begin, end) ranges split at writer-schema changes (tombstones join any segment), so a
    change can rotate."""
    if shared_header(values) is not None:
        return [(0, len(values))]
    bounds, current = [0], None
    for i, value in enumerate(values):
        if value is None or len(value) < 5:
            continue
        sid = value[1:5]
        if current is not None and sid != current:
            bounds.append(i)
        current = sid
    bounds.append(len(values))
    return [(begin, end) for begin, end in itertools.pairwise(bounds) if end > begin]


def _distinct(column: pa.ChunkedArray) -> tuple[list, np.ndarray]:
    """The distinct values of a column (Python objects) and, per row, the index of its value."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    try:
        encoded = column.combine_chunks().dictionary_encode(null_encoding="encode")
    except pa.ArrowNotImplementedError:  # nested types have no hash kernel: compare Python values
        index: dict[str, int] = {}
        distinct, rows = [], []
        for value in column.to_pylist():
            rows.append(index.setdefault(repr(value), len(index)))
            if len(distinct) < len(index):
                distinct.append(value)
        return distinct, np.array(rows, dtype=np.int64)
    return encoded.dictionary.to_pylist(), encoded.indices.to_numpy()


@functools.lru_cache(maxsize=16)
def _bucket_paths(buckets: int) -> list[str]:
    return [layout.bucket_path(bucket, buckets) for bucket in range(buckets)]


def _in_offset_order(tables: list[pa.Table]) -> pa.Table:
    table = pa.concat_tables(tables, promote_options="default")
    return table.take(pc.sort_indices(table["_kafka_offset"]))
