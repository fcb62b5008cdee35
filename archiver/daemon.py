"""`archiver run`: the consumer-group member that feeds the sink (stream and --once modes).

The composition root: builds the consumer, the sink, the dead-letter producer and the metrics
server from RunSettings; handles rebalances, signals, pause/resume and the end of a batch run.
"""

from __future__ import annotations

import functools
import logging
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from archiver import layout, runtime
from archiver.codec.keys import KeyDecoder
from archiver.codec.registry import Registry
from archiver.codec.values import ValueDecoder
from archiver.config import RunSettings
from archiver.errors import DeadLetterUndelivered, TerminalError, TransientError
from archiver.layouts import LayoutGuard
from archiver.ledger import FencedError
from archiver.metrics import Heartbeat
from archiver.retry import Backoff
from archiver.sink import Sink
from archiver.source import kafka as source_kafka
from archiver.source.consumer import GroupConsumer
from archiver.source.deadletters import DeadLetters
from archiver.source.records import Batch
from archiver.store import REQUESTS
from archiver.writer.buffer import Rotation

logger = logging.getLogger(__name__)

POLL_BATCH = 10_000
TICK_S = 1.0


@dataclass
class Summary:
    """What a run did, for the --once summary and tests."""

    records_in: int
    records_out: int
    dead_lettered: int
    files: int
    commits: int
    bytes_in: int
    bytes_out: int
    seconds: float
    rotations: dict[str, int]
    lost: int = 0
    requests: dict[str, int] = field(default_factory=dict)  # object store requests, by operation


@dataclass
class Outage:
    """A partition waiting for a dependency. Kept from the first failure until the partition
    makes progress again, across the pauses and retries in between."""

    error: TransientError
    since: float
    backoff: Backoff = field(default_factory=Backoff)
    retry_at: float = 0.0
    paused: bool = False


class OutageTimeout(TransientError):
    """--once gave up waiting for a dependency."""


@dataclass
class Refused:
    """Kafka refuses this member (credentials, TLS, authorization) since `since`."""

    reason: str
    since: float
    probe_at: float = 0.0


PROBE_S = 5.0  # how often a refused member asks a partition leader whether it accepts it again


class Daemon:
    """One member of the archiver consumer group."""

    def __init__(self, settings: RunSettings, once: bool = False,
                 progress: Callable[[Daemon], None] | None = None, consumer: GroupConsumer | None = None):
        """`consumer`: the group member to consume with (tests give a fake); by default one built
        from `settings`."""
        self.settings = settings
        self.once = once
        self.progress = progress  # called every tick (--once on a terminal draws a progress line)
        self.store = settings.open_store()
        self.registry = Registry(settings.registry) if settings.registry else None
        self._decoders: dict[str, ValueDecoder] = {}
        self.dead_letters = DeadLetters(settings.kafka, settings.dlq_topic)
        self._stop = False
        self.stopped_by: int | None = None  # the signal that stopped the run
        self._outages: dict[tuple[str, int], Outage] = {}
        self._starts: dict[tuple[str, int], int] = {}  # where each assigned partition started
        self.outages_started: Counter[str] = Counter()  # by dependency, for /metrics
        self._ends: dict[tuple[str, int], int] = {}  # --once: end offsets seen at start
        self.rebalances = 0
        self.refused: Refused | None = None
        self._highs: dict[tuple[str, int], int] = {}
        self.heartbeat = Heartbeat()
        self.consumer = consumer if consumer is not None else GroupConsumer(settings)
        dead_letter = self.dead_letters.send if settings.on_decode_error == "dlq" else None
        self.sink = Sink(self.store, settings.for_topic, self._decoder, self._commit_offset, dead_letter,
                         self.dead_letters.flush)
        self.sink.key_decoder_for = self._key_decoder
        self.sink.log_start = self.consumer.log_start
        self.sink.check_layout = LayoutGuard(self.store, settings).check
        self._key_decoders: dict[str, KeyDecoder] = {}
        self.publishing = None
        if settings.catalog.configured and settings.publish_interval_s > 0:
            from archiver import tables

            self.publishing = tables.Scheduled(settings, settings.publish_interval_s,
                                               lambda: {topic for topic, _ in self.sink.owned})
        self.compaction = None
        if settings.compact_interval_s > 0 and not once:
            from archiver.compact import CompactSettings, Scheduled

            self.compaction = Scheduled(settings.open_store(), settings.compact_interval_s, CompactSettings(
                target_bytes=settings.compact_target_bytes, closed_after_s=settings.compact_closed_after_s,
                grace_s=settings.compact_grace_s), lambda: list(self.sink.owned),
                self.publishing.publisher if self.publishing is not None else None)

    # --- wiring ------------------------------------------------------------------------------

    def _decoder(self, topic: str) -> ValueDecoder:
        decoder = self._decoders.get(topic)
        if decoder is None:
            s = self.settings.for_topic(topic)
            decoder = ValueDecoder(self.registry, s.value_schema_file if s.value_format == "raw" else None,
                                   native_allowed=self.settings.decoder == "auto")
            self._decoders[topic] = decoder
        return decoder

    def _key_decoder(self, topic: str) -> KeyDecoder:
        if topic not in self._key_decoders:
            self._key_decoders[topic] = KeyDecoder(self.registry, native_allowed=self.settings.decoder == "auto")
        return self._key_decoders[topic]

    def _commit_offset(self, topic: str, partition: int, offset: int) -> None:
        """After each commit to the archive: Kafka's offset follows, and a commit ends an outage."""
        outage = self._outages.get((topic, partition))
        if outage is not None and not outage.paused:
            self._recovered(topic, partition)
        self.consumer.commit(topic, partition, offset)

    # --- rebalances ----------------------------------------------------------------------------

    def _on_assign(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int | None]:
        """Where each assigned partition starts: after what the archive holds, else at Kafka's
        committed offset, else the earliest (None)."""
        self.rebalances += 1
        starts = {tp: self.sink.assign(*tp) for tp in partitions}
        unknown = [tp for tp in partitions if starts[tp] is None]
        committed = self.consumer.committed(unknown) if unknown else {}
        positions = {}
        for tp in partitions:
            start = starts[tp] if starts[tp] is not None else committed.get(tp)
            self._starts[tp] = start
            positions[tp] = start
            logger.info("assigned %s[%d], starting at %s", *tp, "the earliest offset" if start is None else start)
        if self.once:
            for tp in partitions:
                if tp not in self._ends:
                    self._ends[tp] = self.consumer.end(*tp)
        return positions

    def _on_revoke(self, partitions: list[tuple[str, int]]) -> None:
        self.rebalances += 1
        for tp in partitions:
            self.sink.release(*tp, flush=True)
            self._outages.pop(tp, None)

    def _on_lost(self, partitions: list[tuple[str, int]]) -> None:
        self.rebalances += 1
        for tp in partitions:
            self.sink.release(*tp, flush=False)
            self._outages.pop(tp, None)

    # --- the loop ------------------------------------------------------------------------------

    def paused_partitions(self) -> list[tuple[str, int]]:
        return [key for key, outage in list(self._outages.items()) if outage.paused]

    def waiting(self) -> Counter[str]:
        """Paused partitions by the dependency they wait for; every owned partition waits for
        Kafka while it refuses this member."""
        waiting = Counter(o.error.dependency for o in list(self._outages.values()) if o.paused)
        if self.refused is not None:
            waiting["kafka"] = max(1, len(self.sink.owned))
        return waiting

    def lag(self) -> dict[tuple[str, int], int]:
        """High watermark (as last fetched) minus the committed frontier, per partition: every
        record not yet committed to the archive, buffered ones included.

        Read from the metrics thread: uses only what the main loop recorded (the consumer is not
        called from other threads).
        """
        out = {}
        for key, high in list(self._highs.items()):
            owned = self.sink.owned.get(key)
            if owned is None:
                continue
            committed = owned.buffer.start if owned.buffer.start is not None else owned.buffer.end
            if committed is not None:
                out[key] = max(0, high - committed)
        return out

    def _record_highs(self) -> None:
        highs = {key: self.consumer.high_watermark(*key) for key in list(self.sink.owned)}
        self._highs = {key: high for key, high in highs.items() if high is not None}

    def _serve_metrics(self):
        if not self.settings.metrics_address:
            return None
        from archiver.metrics import serve

        try:
            return serve(self.settings.metrics_address, self, self.heartbeat.healthy,
                         lambda: self.heartbeat.healthy() and self.rebalances > 0 and not self._outages
                         and self.refused is None)
        except OSError as e:
            raise TerminalError(f"run.metrics_address {self.settings.metrics_address}: {e.strerror}") from None

    def run(self) -> Summary:
        started = time.monotonic()
        runtime.tune_gc()
        self._install_signals()
        self._check_dead_letter_topic()
        server = self._serve_metrics()
        self._subscribe()
        last_tick = time.monotonic()
        try:
            while not self._stop:
                self.heartbeat.beat()
                received = self._poll()
                if time.monotonic() - last_tick >= TICK_S or not received:
                    self._tick()
                    last_tick = time.monotonic()
                elif self.sink.buffered_bytes() > self.settings.max_buffer_bytes:
                    self._tick()  # the memory cap holds between ticks too
                if self.once and (self._gave_up() is not None or self._batch_done()):
                    break
                if self._refused_too_long():
                    break
            # before closing: a revoke forgets outages
            gave_up = self._refusal_error() or (self._gave_up() if self.once else None)
            if gave_up is None:
                topics = {topic for topic, _ in self.sink.owned}
                self._flush_all(Rotation.END)
                if self.publishing is not None:  # the tables include what this run committed
                    self.publishing.publish_all(sorted(topics))
            else:  # commit what each partition took before the outage; its records stay for the next run
                self._flush_each_once(Rotation.END)
        finally:
            self._close()
            if server is not None:
                server.shutdown()
        if gave_up is not None:
            raise gave_up
        s = self.sink.stats
        return Summary(s.records_in, s.records_out, s.dead_lettered, s.files, s.commits, s.bytes_in,
                       s.bytes_out, time.monotonic() - started, dict(s.rotations), s.lost, REQUESTS.snapshot())

    def stop(self, signum: int | None = None, _frame=None) -> None:
        self._stop = True
        self.stopped_by = signum

    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def _check_dead_letter_topic(self) -> None:
        """The dead-letter topic exists (created if allowed) before anything is consumed."""
        s = self.settings
        if s.on_decode_error != "dlq":
            return
        if source_kafka.ensure_dead_letter_topic(s.kafka, s.dlq_topic, s.dlq_create, s.dlq_partitions,
                                                 s.dlq_replication_factor):
            logger.warning("created the dead-letter topic %r", s.dlq_topic)

    def _subscribe(self) -> None:
        if self.settings.topic_pattern:
            topics = ["^" + self.settings.topic_pattern.removeprefix("^")]
        else:
            topics = [layout.check_topic(t) for t in self.settings.topics]
            existing = self.consumer.topics()
            missing = [t for t in topics if t not in existing]
            if missing:
                raise TerminalError(f"topic {missing[0]!r} does not exist in {self.settings.kafka.bootstrap_servers}")
            for topic in topics:  # before consuming; topics of a pattern are checked when assigned
                self.sink.check_layout(topic)
        self.consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)

    def _poll(self) -> bool:
        """Consume and dispatch one batch; True when records came. The batch is freed on return,
        not held through the next consume()."""
        batches = self.consumer.batches(POLL_BATCH, timeout=0.5)
        self._note_refusal(bool(batches))
        self._dispatch(batches)
        return bool(batches)

    # --- Kafka refusing this member: not ready, then stop -------------------------------------

    def _note_refusal(self, received: bool) -> None:
        reason = self.consumer.refusal()
        now = time.monotonic()
        if reason is not None and self.refused is None:
            self.refused = Refused(reason, now, now + PROBE_S)
            self.outages_started["kafka"] += 1
            logger.warning("kafka refused this member: %s; not ready, stopping in %.0fs unless it accepts it again",
                           reason, self.settings.kafka_refused_timeout_s)
        elif reason is not None:
            self.refused.reason = reason
        elif received and self.refused is not None:
            self._accepted()

    def _accepted(self) -> None:
        logger.warning("kafka accepts this member again after %.0fs", time.monotonic() - self.refused.since)
        self.refused = None

    def _refused_too_long(self) -> bool:
        """Whether Kafka has refused this member for run.kafka_refused_timeout_s; until then a
        partition leader is asked every PROBE_S whether it accepts it again (an idle topic brings
        no records to tell)."""
        refused = self.refused
        if refused is None:
            return False
        now = time.monotonic()
        if now >= refused.probe_at:
            refused.probe_at = now + PROBE_S
            probe = next(iter(self.sink.owned), None) or next(iter(self._starts), None)
            if probe is not None and self.consumer.reachable(*probe) and self.consumer.refusal() is None:
                self._accepted()
                return False
        return self._refusal_error() is not None

    def _refusal_error(self) -> TerminalError | None:
        """The run's error once Kafka has refused this member for run.kafka_refused_timeout_s."""
        refused = self.refused
        if refused is None or time.monotonic() - refused.since < self.settings.kafka_refused_timeout_s:
            return None
        return TerminalError(f"kafka at {self.settings.kafka.bootstrap_servers} refused this member for "
                             f"{self.settings.kafka_refused_timeout_s:.0f}s: {refused.reason}")

    def _dispatch(self, batches: list[Batch]) -> None:
        for batch in batches:
            topic, partition = batch.topic, batch.partition
            outage = self._outages.get((topic, partition))
            if outage is not None and outage.paused:
                continue  # re-fetched from where it stopped once the dependency is back
            self._guard(topic, partition, functools.partial(self.sink.ingest, topic, partition, batch))
            if outage is not None and outage.error.dependency == "registry" and \
                    (topic, partition) not in self.sink.outages():
                self._recovered(topic, partition)  # decoded: the registry answers again
        self._pause_outages()

    def _guard(self, topic: str, partition: int, action) -> None:
        """Run a sink action; re-claim the partition when fenced."""
        try:
            action()
        except FencedError as e:
            logger.warning("%s; claiming it again", e)
            self._reclaim(topic, partition)

    def _reclaim(self, topic: str, partition: int) -> None:
        self.consumer.seek(topic, partition, self.sink.assign(topic, partition))

    # --- outages: pause, back off, resume where the archive stopped ---------------------------

    def _pause_outages(self) -> None:
        """Pause every partition that waits for a dependency and is not paused yet."""
        now = time.monotonic()
        for key, error in self.sink.outages().items():
            outage = self._outages.get(key)
            if outage is None:
                outage = self._outages[key] = Outage(error, now)
                self.outages_started[error.dependency] += 1
            elif outage.paused:
                continue
            outage.error = error
            outage.paused = True
            delay = outage.backoff.next_delay()
            outage.retry_at = now + delay
            self.consumer.pause(*key)
            logger.warning("paused %s[%d] for %.1fs, waiting for the %s: %s", *key, delay, error.waiting_for, error)

    def _retry_outages(self) -> None:
        now = time.monotonic()
        for key, outage in list(self._outages.items()):
            if not outage.paused or now < outage.retry_at:
                continue
            if key not in self.sink.owned:
                del self._outages[key]
                continue
            if self.sink.owned[key].pending is not None:  # the store (or dead-letter topic) owes a commit
                if not self.sink.retry(*key):
                    outage.paused = False  # paused again, after the next backoff, by _pause_outages
                    continue
                self._recovered(*key)
            self._resume(*key)  # records are fetched again from where the archive stopped

    def _recovered(self, topic: str, partition: int) -> None:
        outage = self._outages.pop((topic, partition), None)
        if outage is not None:
            logger.warning("%s[%d]: the %s is back after %.0fs", topic, partition, outage.error.waiting_for,
                           time.monotonic() - outage.since)

    def _gave_up(self) -> OutageTimeout | None:
        """--once: the outage that outlasted run.outage_timeout_s, as the run's error."""
        limit = self.settings.outage_timeout_s
        now = time.monotonic()
        late = [(key, o) for key, o in self._outages.items() if now - o.since >= limit]
        if not late:
            return None
        (topic, partition), outage = late[0]
        return OutageTimeout(f"gave up after waiting {limit:.0f}s for the {outage.error.waiting_for} "
                             f"({len(late)} partition(s), first {topic}[{partition}]): {outage.error}; nothing "
                             "past it was committed, the next run continues from there")

    def _tick(self) -> None:
        self._record_highs()
        if self.compaction is not None:
            self.compaction.tick()
        if self.publishing is not None and not self.once:
            self.publishing.tick()
        self._retry_outages()
        try:
            self.sink.tick(self.settings.max_buffer_bytes)
        except FencedError as e:
            logger.warning("%s", e)
        self._pause_outages()
        if self.progress is not None:
            self.progress(self)

    def _resume(self, topic: str, partition: int) -> None:
        outage = self._outages.get((topic, partition))
        if outage is not None:
            outage.paused = False
        if (topic, partition) not in self.sink.owned:
            return
        offset = self.sink.resume_offset(topic, partition)
        if offset is None:  # nothing consumed yet: where the assignment started it
            offset = self._starts.get((topic, partition))
        self.consumer.resume(topic, partition, offset)
        logger.info("resumed %s[%d] at offset %s", topic, partition, "the earliest" if offset is None else offset)

    def _reached_ends(self) -> bool:
        if not self._ends or not self.sink.owned:
            return False
        for key, end in self._ends.items():
            owned = self.sink.owned.get(key)
            if owned is None:
                continue
            position = owned.buffer.end
            if position is None:  # nothing consumed: where the assignment started it (the group's
                position = self._starts.get(key)  # committed offset may already be the end)
            if end >= 0 and (position is None or position < end):
                position = self.consumer.position(*key)
                if position is None or position < end or key in self._outages:
                    return False
        return True

    def _batch_done(self) -> bool:
        """--once: every partition reached its end offset and committed. A commit the dead-letter
        topic made withdraw sends its partition back to consume again, so the run goes on."""
        if self.sink.outages() or not self._reached_ends():
            return False
        self._flush_each_once(Rotation.END)  # a commit that fails waits for its outage, retried by _tick
        self._pause_outages()
        return not self.sink.outages()

    def _flush_each_once(self, reason: Rotation) -> None:
        for topic, partition in list(self.sink.owned):
            try:
                self.sink.flush(topic, partition, reason)
            except FencedError as e:
                logger.warning("%s", e)

    def _flush_all(self, reason: Rotation) -> None:
        """Commit what every partition archived, retrying through store outages until
        run.shutdown_timeout_s; records a partition could not take stay for the next run.

        Raises:
            TransientError: a partition could not commit what it consumed.
        """
        deadline = time.monotonic() + self.settings.shutdown_timeout_s
        for topic, partition in list(self.sink.owned):
            backoff = Backoff(initial=0.5, maximum=5.0)
            while time.monotonic() < deadline:
                try:
                    if self.sink.flush(topic, partition, reason):
                        break
                except FencedError as e:
                    logger.warning("%s", e)
                    break
                time.sleep(min(backoff.next_delay(), max(0.0, deadline - time.monotonic())))
            else:
                raise TransientError(f"could not commit {topic}[{partition}] within "
                                     f"{self.settings.shutdown_timeout_s:.0f}s of stopping; its records are "
                                     "archived by the next run")
        # commits the dead-letter topic made withdraw: consumed records this run could not commit
        withdrawn = {key: e for key, e in self.sink.outages().items() if isinstance(e, DeadLetterUndelivered)}
        if withdrawn:
            (topic, partition), error = next(iter(withdrawn.items()))
            raise TransientError(f"could not commit {topic}[{partition}] before stopping: {error}; its records "
                                 "are archived by the next run")

    def _close(self) -> None:
        if self.compaction is not None:
            self.compaction.close()
        if self.publishing is not None:
            self.publishing.close()
        self.consumer.close()
        self.sink.close()
        self.dead_letters.close()
        if self.registry is not None:
            self.registry.close()
