"""`archiver run`: the consumer-group member that feeds the sink (stream and --once modes).

The composition root: builds the consumer, the sink, the dead-letter producer and the metrics
server from RunSettings; handles rebalances, signals, pause/resume and the end of a batch run.
"""

from __future__ import annotations

import functools
import logging
import random
import signal
import time
from collections import defaultdict
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, OFFSET_INVALID, Consumer, KafkaException, TopicPartition

from archiver import layout, runtime
from archiver.codec.keys import KeyDecoder
from archiver.codec.registry import Registry
from archiver.codec.values import ValueDecoder
from archiver.config import RunSettings
from archiver.errors import TerminalError, TransientError
from archiver.layouts import LayoutGuard
from archiver.ledger import FencedError
from archiver.metrics import Heartbeat
from archiver.sink import Sink
from archiver.source import kafka as source_kafka
from archiver.store import open_store
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


class Daemon:
    """One member of the archiver consumer group."""

    def __init__(self, settings: RunSettings, once: bool = False):
        self.settings = settings
        self.once = once
        self.store = open_store(settings.archive_url)
        self.registry = Registry(settings.registry) if settings.registry else None
        self._decoders: dict[str, ValueDecoder] = {}
        self._dlq = None
        self._stop = False
        self._paused: dict[tuple[str, int], tuple[float, float]] = {}  # partition -> (retry at, backoff)
        self._ends: dict[tuple[str, int], int] = {}  # --once: end offsets seen at start
        self.rebalances = 0
        self._highs: dict[tuple[str, int], int] = {}
        self.heartbeat = Heartbeat()
        self.consumer = Consumer(settings.kafka.client_config() | {
            "group.id": settings.group_id,
            "partition.assignment.strategy": "cooperative-sticky",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            # Prefetch is memory too: fetched buffers stay allocated while any of their messages
            # is queued, so keep it to a few MB. A short backoff when the queue is full keeps a
            # small queue from starving the loop (the default 1 s wait made fetching the bottleneck).
            "fetch.max.bytes": 2_097_152,
            "max.partition.fetch.bytes": 1_048_576,
            "queued.max.messages.kbytes": 2_048,
            "queued.min.messages": 2_000,
            "fetch.queue.backoff.ms": 20,
            "max.poll.interval.ms": 600_000,
            "session.timeout.ms": settings.session_timeout_ms,
        } | ({"group.instance.id": settings.group_instance_id} if settings.group_instance_id else {}))
        dead_letter = self._dead_letter if settings.on_decode_error == "dlq" else None
        self.sink = Sink(self.store, settings.for_topic, self._decoder, self._commit_offset, dead_letter,
                         self._flush_dead_letters)
        self.sink.key_decoder_for = self._key_decoder
        self.sink.log_start = self._log_start
        self.sink.check_layout = LayoutGuard(self.store, settings).check
        self._key_decoders: dict[str, KeyDecoder] = {}
        self.compaction = None
        if settings.compact_interval_s > 0 and not once:
            from archiver.compact import CompactSettings, Scheduled

            self.compaction = Scheduled(settings.archive_url, settings.compact_interval_s, CompactSettings(
                target_bytes=settings.compact_target_bytes, closed_after_s=settings.compact_closed_after_s,
                grace_s=settings.compact_grace_s), lambda: list(self.sink.owned))

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

    def _log_start(self, topic: str, partition: int) -> int | None:
        try:
            return self.consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)[0]
        except KafkaException as e:
            logger.warning("cannot read the log start offset of %s[%d]: %s", topic, partition, e)
            return None

    def _commit_offset(self, topic: str, partition: int, offset: int) -> None:
        self.consumer.commit(offsets=[TopicPartition(topic, partition, offset)], asynchronous=True)

    def _dead_letter(self, message, reason: str) -> None:
        if self._dlq is None:
            self._dlq = source_kafka.producer(self.settings.kafka, **{"linger.ms": 5})
        headers = list(message.headers() or []) + [
            ("archiver.error", reason.encode()), ("archiver.topic", message.topic().encode()),
            ("archiver.partition", str(message.partition()).encode()),
            ("archiver.offset", str(message.offset()).encode()),
        ]
        ts_type, ts = message.timestamp()
        self._dlq.produce(self.settings.dlq_topic, message.value(), message.key(), headers=headers,
                          timestamp=ts if ts_type else 0)
        self._dlq.poll(0)

    def _flush_dead_letters(self) -> None:
        if self._dlq is not None:
            source_kafka.flush(self._dlq, timeout=30)  # durable before the range is committed

    # --- rebalances ----------------------------------------------------------------------------

    def _on_assign(self, consumer, partitions) -> None:
        self.rebalances += 1
        starts = {(tp.topic, tp.partition): self.sink.assign(tp.topic, tp.partition) for tp in partitions}
        unknown = [tp for tp in partitions if starts[(tp.topic, tp.partition)] is None]
        committed = self._committed(consumer, unknown) if unknown else {}
        positions = []
        for tp in partitions:
            start = starts[(tp.topic, tp.partition)]
            if start is None:  # never archived: Kafka's committed offset, else the earliest
                start = committed.get((tp.topic, tp.partition), OFFSET_INVALID)
                start = start if start >= 0 else OFFSET_BEGINNING
            positions.append(TopicPartition(tp.topic, tp.partition, start))
            logger.info("assigned %s[%d], starting at %s", tp.topic, tp.partition, start)
        if self.once:
            self._record_ends(partitions)
        consumer.incremental_assign(positions)

    @staticmethod
    def _committed(consumer, partitions) -> dict[tuple[str, int], int]:
        """Kafka's committed offsets, retried: a busy group coordinator may time out mid-rebalance."""
        for attempt in range(3):
            try:
                return {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(partitions, timeout=10)}
            except KafkaException as e:
                logger.warning("committed offsets not available (attempt %d of 3): %s", attempt + 1, e)
        logger.warning("starting never-archived partitions at their earliest offset")
        return {}

    def _on_revoke(self, consumer, partitions) -> None:
        self.rebalances += 1
        for tp in partitions:
            self.sink.release(tp.topic, tp.partition, flush=True)
            self._paused.pop((tp.topic, tp.partition), None)
        consumer.incremental_unassign(partitions)

    def _on_lost(self, consumer, partitions) -> None:
        self.rebalances += 1
        for tp in partitions:
            self.sink.release(tp.topic, tp.partition, flush=False)
            self._paused.pop((tp.topic, tp.partition), None)
        consumer.incremental_unassign(partitions)

    def _record_ends(self, partitions) -> None:
        for tp in partitions:
            if (tp.topic, tp.partition) not in self._ends:
                low, high = self.consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=30)
                self._ends[(tp.topic, tp.partition)] = high if high > low else -1

    # --- the loop ------------------------------------------------------------------------------

    def paused_partitions(self) -> list[tuple[str, int]]:
        return list(self._paused)

    def lag(self) -> dict[tuple[str, int], int]:
        """High watermark (as last fetched) minus the archived-and-buffered position, per partition.

        Read from the metrics thread: uses only what the main loop recorded (the consumer is not
        called from other threads).
        """
        out = {}
        for key, high in list(self._highs.items()):
            owned = self.sink.owned.get(key)
            if owned is not None and owned.buffer.end is not None:
                out[key] = max(0, high - owned.buffer.end)
        return out

    def _record_highs(self) -> None:
        highs = {}
        for topic, partition in list(self.sink.owned):
            try:
                watermarks = self.consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            except KafkaException:
                continue
            if watermarks and watermarks[1] >= 0:
                highs[(topic, partition)] = watermarks[1]
        self._highs = highs

    def _serve_metrics(self):
        if not self.settings.metrics_address:
            return None
        from archiver.metrics import serve

        try:
            return serve(self.settings.metrics_address, self, self.heartbeat.healthy,
                         lambda: self.heartbeat.healthy() and self.rebalances > 0 and not self._paused)
        except OSError as e:
            raise TerminalError(f"run.metrics_address {self.settings.metrics_address}: {e.strerror}") from None

    def run(self) -> Summary:
        started = time.monotonic()
        runtime.tune_gc()
        self._install_signals()
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
                if self.once and self._reached_ends():
                    break
            self._flush_all(Rotation.END)
        finally:
            self._close()
            if server is not None:
                server.shutdown()
        s = self.sink.stats
        return Summary(s.records_in, s.records_out, s.dead_lettered, s.files, s.commits, s.bytes_in,
                       s.bytes_out, time.monotonic() - started, dict(s.rotations))

    def stop(self, *_args) -> None:
        self._stop = True

    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def _subscribe(self) -> None:
        if self.settings.topic_pattern:
            topics = ["^" + self.settings.topic_pattern.removeprefix("^")]
        else:
            topics = [layout.check_topic(t) for t in self.settings.topics]
            existing = source_kafka.list_topics(self.settings.kafka)
            missing = [t for t in topics if t not in existing]
            if missing:
                raise TerminalError(f"topic {missing[0]!r} does not exist in {self.settings.kafka.bootstrap_servers}")
            for topic in topics:  # before consuming; topics of a pattern are checked when assigned
                self.sink.check_layout(topic)
        self.consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)

    def _poll(self) -> bool:
        """Consume and dispatch one batch; True when messages came. The batch is freed on return,
        not held through the next consume()."""
        messages = self.consumer.consume(POLL_BATCH, timeout=0.5)
        self._dispatch(messages)
        return bool(messages)

    def _dispatch(self, messages) -> None:
        by_partition: dict[tuple[str, int], list] = defaultdict(list)
        for m in messages:
            if m.error():
                if m.error().fatal():
                    raise TerminalError(f"kafka: {m.error().str()}")
                logger.warning("kafka: %s", m.error().str())
                continue
            by_partition[(m.topic(), m.partition())].append(m)
        for (topic, partition), batch in by_partition.items():
            if (topic, partition) in self._paused:
                continue  # re-fetched from the resume offset once the pending flush lands
            self._guard(topic, partition, functools.partial(self.sink.ingest, topic, partition, batch))

    def _guard(self, topic: str, partition: int, action) -> None:
        """Run a sink action; pause the partition while the store fails, re-claim when fenced."""
        try:
            action()
        except FencedError as e:
            logger.warning("%s; claiming it again", e)
            self._reclaim(topic, partition)
            return
        owned = self.sink.owned.get((topic, partition))
        if owned is not None and owned.pending is not None and (topic, partition) not in self._paused:
            self.consumer.pause([TopicPartition(topic, partition)])
            self._paused[(topic, partition)] = (time.monotonic() + 1.0, 1.0)
            logger.warning("paused %s[%d] while the store is unavailable", topic, partition)

    def _reclaim(self, topic: str, partition: int) -> None:
        start = self.sink.assign(topic, partition)
        self.consumer.seek(TopicPartition(topic, partition, start if start is not None else OFFSET_BEGINNING))

    def _tick(self) -> None:
        self._record_highs()
        if self.compaction is not None:
            self.compaction.tick()
        now = time.monotonic()
        for (topic, partition), (retry_at, backoff) in list(self._paused.items()):
            if now < retry_at:
                continue
            if self.sink.retry(topic, partition):
                self._resume(topic, partition)
            else:  # bounded, jittered exponential backoff
                backoff = min(30.0, backoff * 2)
                self._paused[(topic, partition)] = (now + backoff * (0.5 + random.random() / 2), backoff)
        try:
            self.sink.tick(self.settings.max_buffer_bytes)
        except FencedError as e:
            logger.warning("%s", e)
        for (topic, partition), owned in list(self.sink.owned.items()):
            if owned.pending is not None and (topic, partition) not in self._paused:
                self._guard(topic, partition, lambda: None)

    def _resume(self, topic: str, partition: int) -> None:
        del self._paused[(topic, partition)]
        if (topic, partition) not in self.sink.owned:
            return
        offset = self.sink.resume_offset(topic, partition)
        tp = TopicPartition(topic, partition, offset if offset is not None else OFFSET_BEGINNING)
        self.consumer.resume([tp])
        self.consumer.seek(tp)
        logger.info("resumed %s[%d] at offset %s", topic, partition, offset)

    def _reached_ends(self) -> bool:
        if not self._ends or not self.sink.owned:
            return False
        for key, end in self._ends.items():
            owned = self.sink.owned.get(key)
            if owned is None:
                continue
            position = owned.buffer.end
            if end >= 0 and (position is None or position < end):
                try:
                    position = self.consumer.position([TopicPartition(*key)])[0].offset
                except KafkaException:
                    return False
                if position < end:
                    return False
        return True

    def _flush_all(self, reason: Rotation) -> None:
        deadline = time.monotonic() + self.settings.shutdown_timeout_s
        for topic, partition in list(self.sink.owned):
            while time.monotonic() < deadline:
                try:
                    if self.sink.flush(topic, partition, reason):
                        break
                except FencedError as e:
                    logger.warning("%s", e)
                    break
                time.sleep(1.0)
            else:
                raise TransientError(f"could not commit {topic}[{partition}] within "
                                     f"{self.settings.shutdown_timeout_s:.0f}s of stopping; its records are "
                                     "archived by the next run")

    def _close(self) -> None:
        if self.compaction is not None:
            self.compaction.close()
        try:
            self.consumer.close()
        except KafkaException as e:
            logger.warning("closing the consumer: %s", e)
        self.sink.close()
        if self._dlq is not None:
            self._dlq.flush(10)
        if self.registry is not None:
            self.registry.close()
