"""Producing replayed records into the target topic, with checkpoints for resuming.

Without --exactly-once, progress (last replayed offset per source partition) is saved to the
archive store after every flushed batch: an interrupted replay resumes after the last saved
batch, so at most one batch (`batch_records`) is produced twice. With --exactly-once, a
transactional producer commits each batch together with its checkpoint record (in the
`archiver.replay-checkpoints` topic of the target cluster): nothing is produced twice.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from archiver import partitioner
from archiver.config import KafkaSettings
from archiver.errors import ConfigError, NotFound, TransientError
from archiver.replay import RateLimiter, Record
from archiver.source import kafka as source_kafka
from archiver.store import ObjectStore

logger = logging.getLogger(__name__)

CHECKPOINT_TOPIC = "archiver.replay-checkpoints"


class StoreCheckpoint:
    """Progress saved as `_replay/<name>.json` in the archive store."""

    def __init__(self, store: ObjectStore, name: str):
        self.store, self.key = store, f"_replay/{name}.json"

    def load(self) -> dict[int, int]:
        try:
            return {int(p): o for p, o in json.loads(self.store.get(self.key))["last_offsets"].items()}
        except NotFound:
            return {}

    def save(self, progress: dict[int, int]) -> None:
        self.store.put(self.key, json.dumps({"last_offsets": progress, "saved_at": time.time()}).encode())


class KafkaCheckpoint:
    """Progress as the latest committed record of key `name` in the checkpoint topic."""

    def __init__(self, kafka: KafkaSettings, name: str):
        self.kafka, self.name = kafka, name

    def load(self) -> dict[int, int]:
        source_kafka.ensure_topic(self.kafka, CHECKPOINT_TOPIC, 1, config={"cleanup.policy": "compact"})
        consumer = Consumer(self.kafka.client_config() | {"group.id": "archiver-replay-checkpoints",
                                                          "isolation.level": "read_committed",
                                                          "enable.auto.commit": False})
        try:
            tp = TopicPartition(CHECKPOINT_TOPIC, 0)
            low, high = consumer.get_watermark_offsets(tp, timeout=30)
            progress: dict[int, int] = {}
            if high <= low:
                return progress
            consumer.assign([TopicPartition(CHECKPOINT_TOPIC, 0, OFFSET_BEGINNING)])
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                message = consumer.poll(1.0)
                if message is None:
                    if consumer.position([tp])[0].offset >= high:
                        break
                    continue
                if not message.error() and message.key() == self.name.encode() and message.value():
                    progress = {int(p): o for p, o in json.loads(message.value())["last_offsets"].items()}
                if message.offset() + 1 >= high:
                    break
            return progress
        finally:
            consumer.close()

    def record(self, progress: dict[int, int]) -> tuple[bytes, bytes]:
        return self.name.encode(), json.dumps({"last_offsets": progress, "saved_at": time.time()}).encode()


@dataclass
class Stats:
    records: int = 0
    bytes: int = 0
    started: float = field(default_factory=time.monotonic)

    def as_dict(self) -> dict:
        seconds = time.monotonic() - self.started
        return {"records": self.records, "bytes": self.bytes, "seconds": round(seconds, 3),
                "records_per_s": round(self.records / seconds) if seconds else 0}


class Publisher:
    """Produces records to the target topic, choosing partitions and saving progress."""

    def __init__(self, kafka: KafkaSettings, topic: str, partitioning: str, *, source_topic: str,
                 lineage: bool = False, schema_ids: dict[int, int] | None = None,
                 checkpoint=None, transactional: bool = False, batch_records: int = 10_000,
                 rate: RateLimiter | None = None, progress: Callable[[Stats], None] | None = None):
        self.kafka, self.topic, self.partitioning = kafka, topic, partitioning
        self.source_topic, self.lineage = source_topic, lineage
        self.schema_ids = schema_ids or {}
        self.checkpoint, self.transactional, self.batch_records = checkpoint, transactional, batch_records
        self.rate, self.progress = rate, progress
        self.stats = Stats()
        self.partitions = self._target_partitions()
        self._round_robin = partitioner.RoundRobin(self.partitions)
        conf = kafka.client_config() | {"linger.ms": 20, "batch.size": 1_000_000, "compression.type": "lz4",
                                        "enable.idempotence": True, "queue.buffering.max.messages": 500_000}
        if transactional:
            conf["transactional.id"] = f"archiver-replay-{checkpoint.name}"
        self.producer = source_kafka.CheckedProducer(conf)
        if transactional:
            self.producer.init_transactions(60)  # fences an earlier run of the same replay

    def _target_partitions(self) -> int:
        topics = source_kafka.list_topics(self.kafka)
        if self.topic not in topics:
            raise ConfigError(f"target topic {self.topic!r} does not exist in {self.kafka.bootstrap_servers}; "
                              "create it first")
        return topics[self.topic]

    def check_original_partitions(self, source_partitions: Iterable[int]) -> None:
        needed = max(source_partitions, default=-1) + 1
        if self.partitioning == "original" and needed > self.partitions:
            raise ConfigError(f"target topic {self.topic!r} has {self.partitions} partitions but the replay keeps "
                              f"source partitions up to {needed - 1}; use --partitioning key or round-robin")

    def partition_of(self, record: Record) -> int:
        if self.partitioning == "original":
            return record.partition
        if self.partitioning == "key" and record.key is not None:
            return partitioner.partition_for_key(record.key, self.partitions)
        return self._round_robin.next()

    def publish(self, records: Iterable[Record], progress: dict[int, int]) -> Stats:
        """Produce every record; `progress` (source partition → last offset) is updated and saved."""
        pending = 0
        if self.transactional:
            self.producer.begin_transaction()
        for record in records:
            self._produce(record)
            progress[record.partition] = record.offset
            pending += 1
            if pending >= self.batch_records:
                self._commit(progress)
                pending = 0
                if self.transactional:
                    self.producer.begin_transaction()
        self._commit(progress)
        if self.progress:
            self.progress(self.stats)  # the final count, also for replays shorter than one update
        return self.stats

    def _produce(self, record: Record) -> None:
        value = record.value
        if value is not None and self.schema_ids and len(value) >= 5:
            new_id = self.schema_ids.get(int.from_bytes(value[1:5], "big"))
            if new_id is not None:
                value = value[:1] + new_id.to_bytes(4, "big") + value[5:]
        headers = record.headers
        if self.lineage:
            headers = headers + [("archiver.source.topic", self.source_topic.encode()),
                                 ("archiver.source.partition", str(record.partition).encode()),
                                 ("archiver.source.offset", str(record.offset).encode())]
        size = len(value or b"") + len(record.key or b"")
        if self.rate:
            self.rate.take(size)
        while True:
            try:
                self.producer.produce(self.topic, value, record.key, partition=self.partition_of(record),
                                      headers=headers or None, timestamp=record.timestamp_ms or 0)
                break
            except BufferError:
                self.producer.poll(0.05)
        self.stats.records += 1
        if self.stats.records % 1000 == 0:  # serve delivery reports now and then, not per record
            self.producer.poll(0)
        self.stats.bytes += size
        if self.progress and self.stats.records % 2000 == 0:
            self.progress(self.stats)

    def _commit(self, progress: dict[int, int]) -> None:
        if self.transactional:
            key, value = self.checkpoint.record(progress)
            self.producer.produce(CHECKPOINT_TOPIC, value, key)
            try:
                self.producer.commit_transaction(60)
            except KafkaException as e:
                raise TransientError(f"replay transaction failed: {e.args[0].str()}") from e
            return
        source_kafka.flush(self.producer, timeout=120)
        if self.checkpoint is not None:
            self.checkpoint.save(progress)
