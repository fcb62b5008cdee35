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

from confluent_kafka import Consumer, TopicPartition

from archiver.errors import TerminalError
from archiver.source import native
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

    def consume_batches(self, count: int, timeout: float) -> list[Batch]:
        by_partition: dict[tuple[str, int], list] = defaultdict(list)
        for m in self.consume(count, timeout=timeout):
            if m.error():
                _kafka_error(m.error().fatal(), m.error().str())
                continue
            by_partition[(m.topic(), m.partition())].append(m)
        return [Batch.of(messages) for messages in by_partition.values()]


class NativeConsumer:
    """`archiver_native.Consumer` with confluent-kafka's interface."""

    kind = "native"

    def __init__(self, config: dict):
        import archiver_native

        self._native = archiver_native
        self._callbacks: dict[str, Callback | None] = {}
        try:
            self._consumer = archiver_native.Consumer(native.settings(config))
        except archiver_native.KafkaError as e:
            raise native.exception(e) from None

    def _call(self, method: str, *args):
        try:
            return getattr(self._consumer, method)(*args)
        except self._native.KafkaError as e:
            raise native.exception(e) from None
        finally:
            native.forward_logs(self._consumer.logs())

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
        for _code, _name, reason, fatal in errors:
            _kafka_error(fatal, reason)
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


def _kafka_error(fatal: bool, reason: str) -> None:
    if fatal:
        raise TerminalError(f"kafka: {reason}")
    logger.warning("kafka: %s", reason)
