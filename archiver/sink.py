"""The sink: turns consumed messages into committed Parquet files, partition by partition.

Kafka-free (the daemon feeds it batches and supplies the offset-commit and dead-letter
callbacks), so its logic is testable without a broker. Per owned partition it keeps the
ledger (commit protocol), the buffer since the last commit and, while the store fails, the
pending flush that is retried as is.

It runs the stages of `archiver.writer`, and owns what they share: partitions, outages, stats.
  rows     decoded runs of a batch with their Kafka metadata (`writer.rows`)
  routing  each row's output partition (`writer.routing`), into the buffer (`writer.buffer`)
  files    the buffer as Parquet files, uploaded and committed in one entry (`writer.files`)
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from archiver.codec.keys import KeyDecoder
from archiver.codec.values import ValueDecoder
from archiver.config import TopicSettings
from archiver.errors import DeadLetterUndelivered, TerminalError, TransientError
from archiver.ledger import PartitionLedger
from archiver.metrics import Histogram
from archiver.source.records import Batch, blob_size
from archiver.store import ObjectStore
from archiver.writer import files, rows
from archiver.writer.buffer import PartitionBuffer, Rotation, RotationPolicy
from archiver.writer.files import Pending
from archiver.writer.routing import Router

logger = logging.getLogger(__name__)

TopicPartition = tuple[str, int]


@dataclass
class Owned:
    ledger: PartitionLedger
    buffer: PartitionBuffer
    settings: TopicSettings
    router: Router
    pending: Pending | None = None
    check_start: bool = True  # the next fetched batch follows a seek: compare it with the log start
    outage: TransientError | None = None  # a dependency is out: consume again from buffer.end once it is back


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
    last_commit_at: float = field(default_factory=time.time)  # epoch s of the last commit (start before it)
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
        settings = self._settings_for(topic)
        self.owned[(topic, partition)] = Owned(ledger, buffer, settings, Router(settings))
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
        for begin, end in rows.schema_segments(batch.values):
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
            decoded, keys = rows.with_keys(decoded, batch.keys, self.key_decoder_for(buffer.topic).decode)
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
        value_bytes = blob_size(batch.values)
        self.stats.records_in += len(batch)
        self.stats.bytes_in += value_bytes
        counts = self.stats.topic(buffer.topic)
        counts.records_in += len(batch)
        counts.bytes_in += value_bytes
        if decoded.runs:
            table, _ = rows.table_of(decoded.runs, batch, owned.settings.key_format, keys)
            ids, names, times = owned.router.route(table)
            buffer.add(table, ids, names, times)
            decoder = self._decoder_for(buffer.topic)
            for schema_id in schema_ids:
                buffer.schema_ids.setdefault(schema_id, decoder.schema_text(schema_id))
        self._maybe_rotate(owned, now)

    def _reject(self, message, reason: str) -> None:
        where = f"{message.topic()}[{message.partition()}] offset {message.offset()}"
        if self._dead_letter is None:
            raise TerminalError(f"undecodable record at {where}: {reason}")
        self._dead_letter(message, reason)
        self.stats.dead_lettered += 1
        self.stats.topic(message.topic()).dead_lettered += 1
        logger.warning("dead-lettered %s: %s", where, reason)

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
            owned.pending = files.build(owned.buffer, owned.ledger, owned.settings, reason)
        return self._complete(owned)

    def retry(self, topic: str, partition: int) -> bool:
        owned = self.owned.get((topic, partition))
        return owned is None or owned.pending is None or self._complete(owned)

    def _complete(self, owned: Owned) -> bool:
        pending, buffer = owned.pending, owned.buffer
        try:
            files.commit(pending, owned.ledger, self.store, self._pool, self._flush_dead_letters,
                         self.stats.upload_latency)
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
        self.stats.last_commit_at = time.time()
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
            if owned.pending and owned.pending.intent_written:
                files.discard(self.store, owned.pending.blobs)  # uncommitted
            owned.pending = None
            start = buffer.start
            buffer.__init__(buffer.topic, buffer.partition, start=start, end=start)
            owned.outage = error
            logger.warning("%s[%d] will consume again from offset %d: %s", buffer.topic, buffer.partition,
                           start, error)

    def _abandon(self, owned: Owned) -> None:
        """Fenced or failed for good: delete what this writer uploaded and forget the partition."""
        files.discard(self.store, owned.pending.blobs if owned.pending else ())
        self.owned.pop((owned.buffer.topic, owned.buffer.partition), None)

