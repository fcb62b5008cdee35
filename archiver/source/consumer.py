"""The archiver's group consumer: the native one (`archiver_native`) where it is built and
serves the settings, confluent-kafka's otherwise.

Both have confluent-kafka's Consumer methods the daemon uses (subscribe with on_assign, on_revoke
and on_lost, incremental_assign, commit, committed, get_watermark_offsets, position, seek, pause,
resume, close; TopicPartition in and out, KafkaException on errors) and `consume_batches`, which
returns each partition's records as a `Batch` of columns. Both wrap librdkafka, so settings,
error codes and the group protocol are the same; the native one hands records over without a
Python object per record (but the key and the value) and polls without the GIL.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from archiver.config import RunSettings
from archiver.errors import TerminalError
from archiver.retry import retry
from archiver.source import native
from archiver.source.kafka import is_refusal, list_topics
from archiver.source.records import Batch

logger = logging.getLogger(__name__)
Callback = Callable[[object, list[TopicPartition]], None]


def open_consumer(config: dict, kind: str = "auto") -> PythonConsumer | NativeConsumer:
    """A group consumer for `config` (confluent-kafka's dict). `kind`: auto (native where it can
    serve the settings, with a log line saying why not otherwise), native (the same, but an error
    instead of falling back) or python."""
    if kind == "python":
        return PythonConsumer(config)
    reason = native.unsupported(config)
    if reason is None:
        return NativeConsumer(config)
    if kind == "native":
        raise TerminalError(f"run.kafka_client is native, but {reason}")
    logger.info("consuming with confluent-kafka: %s", reason)
    return PythonConsumer(config)


class PythonConsumer(Consumer):
    """confluent-kafka's consumer, its messages handed over as batches."""

    kind = "python"

    def __init__(self, config: dict):
        super().__init__(config)
        self.refusals: list[str] = []

    def consume_batches(self, count: int, timeout: float) -> list[Batch]:
        by_partition: dict[tuple[str, int], list] = defaultdict(list)
        for m in self.consume(count, timeout=timeout):
            if m.error():
                _kafka_error(m.error().code(), m.error().fatal(), m.error().str(), self.refusals)
                continue
            by_partition[(m.topic(), m.partition())].append(m)
        return [Batch.of(messages) for messages in by_partition.values()]


class NativeConsumer:
    """`archiver_native.Consumer` with confluent-kafka's interface."""

    kind = "native"

    def __init__(self, config: dict):
        self._callbacks: dict[str, Callback | None] = {}
        self._consumer = native.open_client("Consumer", config)
        self.refusals: list[str] = []

    def _call(self, method: str, *args):
        return native.call(self._consumer, method, *args)

    def subscribe(self, topics: list[str], on_assign: Callback | None = None, on_revoke: Callback | None = None,
                  on_lost: Callback | None = None) -> None:
        self._callbacks = {"assign": on_assign, "revoke": on_revoke, "lost": on_lost or on_revoke}
        self._call("subscribe", list(topics), self._rebalanced)

    def _rebalanced(self, kind: str, partitions: list[tuple[str, int]]) -> None:
        callback = self._callbacks.get(kind)
        tps = [TopicPartition(topic, partition) for topic, partition in partitions]
        if callback is not None:
            callback(self, tps)
        elif kind == "assign":
            self.incremental_assign(tps)
        elif kind in ("revoke", "lost"):
            self.incremental_unassign(tps)

    def consume_batches(self, count: int, timeout: float) -> list[Batch]:
        runs, errors = self._call("consume", count, timeout)
        for code, _name, reason, fatal in errors:
            _kafka_error(code, fatal, reason, self.refusals)
        return [Batch.from_native(run) for run in runs]

    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        self._call("incremental_assign", [(tp.topic, tp.partition, tp.offset) for tp in partitions])

    def incremental_unassign(self, partitions: list[TopicPartition]) -> None:
        self._call("incremental_unassign", [(tp.topic, tp.partition) for tp in partitions])

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in self._call("assignment")]

    def committed(self, partitions: list[TopicPartition], timeout: float = 10.0) -> list[TopicPartition]:
        found = self._call("committed", [(tp.topic, tp.partition) for tp in partitions], timeout)
        return [TopicPartition(t, p, o) for t, p, o in found]

    def commit(self, offsets: list[TopicPartition], asynchronous: bool = True) -> None:
        self._call("commit", [(tp.topic, tp.partition, tp.offset) for tp in offsets], asynchronous)

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float = 10.0,
                              cached: bool = False) -> tuple[int, int]:
        return self._call("watermarks", partition.topic, partition.partition, timeout, cached)

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(t, p, o) for t, p, o in
                self._call("position", [(tp.topic, tp.partition) for tp in partitions])]

    def seek(self, partition: TopicPartition) -> None:
        """As confluent-kafka's: takes effect on the next fetch (does not wait for it)."""
        self._call("seek", partition.topic, partition.partition, partition.offset, 0.0)

    def pause(self, partitions: list[TopicPartition]) -> None:
        self._call("pause", [(tp.topic, tp.partition) for tp in partitions])

    def resume(self, partitions: list[TopicPartition]) -> None:
        self._call("resume", [(tp.topic, tp.partition) for tp in partitions])

    def close(self) -> None:
        self._call("close")


def _kafka_error(code: int, fatal: bool, reason: str, refusals: list[str]) -> None:
    """A consumer error event: fatal ones stop the daemon; a broker refusing the client is kept
    in `refusals` for the daemon to wait on (librdkafka has logged it); others are logged."""
    if fatal:
        raise TerminalError(f"kafka: {reason}")
    if is_refusal(code, reason):
        refusals.append(reason)
        return
    logger.warning("kafka: %s", reason)


TP = tuple[str, int]


class GroupConsumer:
    """The archiver's member of its consumer group: the Kafka settings it consumes with,
    assignments, positions, commits and watermarks by (topic, partition), and Kafka's errors as
    archiver's or as log lines. The daemon sees no Kafka client type."""

    def __init__(self, settings: RunSettings):
        self.settings = settings
        self.client = open_consumer(settings.kafka.client_config() | {
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
        } | ({"group.instance.id": settings.group_instance_id} if settings.group_instance_id else {}),
            settings.kafka_client)
        self.kind = self.client.kind

    def topics(self) -> dict[str, int]:
        """Topic name -> partition count of every topic in the cluster."""
        return list_topics(self.settings.kafka)

    def subscribe(self, topics: list[str], on_assign: Callable[[list[TP]], dict[TP, int | None]],
                  on_revoke: Callable[[list[TP]], None], on_lost: Callable[[list[TP]], None]) -> None:
        """`on_assign` returns where each assigned partition starts (None: its earliest offset);
        after `on_revoke` and `on_lost` the partitions are unassigned."""
        def assigned(client, partitions):
            starts = on_assign([(tp.topic, tp.partition) for tp in partitions])
            client.incremental_assign([TopicPartition(t, p, OFFSET_BEGINNING if o is None else o)
                                       for (t, p), o in starts.items()])

        def taken(handler):
            def callback(client, partitions):
                handler([(tp.topic, tp.partition) for tp in partitions])
                client.incremental_unassign(partitions)
            return callback

        self.client.subscribe(topics, on_assign=assigned, on_revoke=taken(on_revoke), on_lost=taken(on_lost))

    def batches(self, count: int, timeout: float) -> list[Batch]:
        return self.client.consume_batches(count, timeout)

    def refusal(self) -> str | None:
        """The last refusal (credentials, TLS, authorization) a broker answered since the last
        call, or None."""
        refusals, self.client.refusals = self.client.refusals, []
        return refusals[-1] if refusals else None

    def reachable(self, topic: str, partition: int) -> bool:
        """Whether the partition's leader answers a request now (asks it for the watermarks)."""
        try:
            self.client.get_watermark_offsets(TopicPartition(topic, partition), timeout=5, cached=False)
        except KafkaException:
            return False
        return True

    def committed(self, partitions: list[TP]) -> dict[TP, int]:
        """Kafka's committed offsets of `partitions` (those without one left out), retried: a busy
        group coordinator may time out mid-rebalance. Empty when they stay unavailable."""
        def read():
            tps = [TopicPartition(t, p) for t, p in partitions]
            return {(tp.topic, tp.partition): tp.offset for tp in self.client.committed(tps, timeout=10)
                    if tp.offset >= 0}

        try:
            return retry(read, attempts=3, retry_on=(KafkaException,), on_retry=lambda n, e: logger.warning(
                "committed offsets not available (attempt %d of 3): %s", n, e))
        except KafkaException as e:
            logger.warning("starting never-archived partitions at their earliest offset: %s", e)
            return {}

    def commit(self, topic: str, partition: int, offset: int) -> None:
        """Commit `offset` (the next to consume) to Kafka, asynchronously: the archive is the truth."""
        self.client.commit(offsets=[TopicPartition(topic, partition, offset)], asynchronous=True)

    def log_start(self, topic: str, partition: int) -> int | None:
        """Kafka's log start offset (asked of the broker), or None when it cannot be read."""
        try:
            return self.client.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)[0]
        except KafkaException as e:
            logger.warning("cannot read the log start offset of %s[%d]: %s", topic, partition, e)
            return None

    def end(self, topic: str, partition: int) -> int:
        """The offset after the last record (asked of the broker), -1 for an empty partition."""
        low, high = self.client.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
        return high if high > low else -1

    def high_watermark(self, topic: str, partition: int) -> int | None:
        """The high watermark as last fetched (no request), None when unknown."""
        try:
            watermarks = self.client.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
        except KafkaException:
            return None
        return watermarks[1] if watermarks and watermarks[1] >= 0 else None

    def position(self, topic: str, partition: int) -> int | None:
        try:
            return self.client.position([TopicPartition(topic, partition)])[0].offset
        except KafkaException:
            return None

    def seek(self, topic: str, partition: int, offset: int | None) -> None:
        """Consume from `offset` next (None: the earliest)."""
        self.client.seek(TopicPartition(topic, partition, OFFSET_BEGINNING if offset is None else offset))

    def pause(self, topic: str, partition: int) -> None:
        self.client.pause([TopicPartition(topic, partition)])

    def resume(self, topic: str, partition: int, offset: int | None) -> None:
        """Fetch again, from `offset` (None: the earliest)."""
        tp = TopicPartition(topic, partition, OFFSET_BEGINNING if offset is None else offset)
        self.client.resume([tp])
        self.client.seek(tp)

    def close(self) -> None:
        """Leave the group (the revoke callback runs first); an error is only logged."""
        try:
            self.client.close()
        except KafkaException as e:
            logger.warning("closing the consumer: %s", e)
