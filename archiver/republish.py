"""Producing replayed records into the target topic, with checkpoints for resuming.

Without --exactly-once, progress (last replayed offset per source partition) is saved to the
archive store after every flushed batch: an interrupted replay resumes after the last saved
batch, so at most one batch (`batch_records`) is produced twice. With --exactly-once, a
transactional producer commits each batch together with its checkpoint record (in the
`archiver.replay-checkpoints` topic of the target cluster): nothing is produced twice.

A checkpoint also records the replay it belongs to (target topic and selection): rerunning a
name with another target or selection would skip records the new replay never sent, so it is
refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from archiver import partitioner
from archiver.config import KafkaSettings
from archiver.errors import ConfigError, NotFound
from archiver.replay import RateLimiter, Selection
from archiver.source import kafka as source_kafka
from archiver.source.producer import open_producer
from archiver.source.records import Batch, blob_size
from archiver.store import ObjectStore

logger = logging.getLogger(__name__)

CHECKPOINT_TOPIC = "archiver.replay-checkpoints"


class StoreCheckpoint:
    """Progress saved as `_replay/<name>.json` in the archive store."""

    def __init__(self, store: ObjectStore, name: str):
        self.store, self.name, self.key = store, name, f"_replay/{name}.json"
        self.identity: dict = {}  # {"target", "selection"}: saved with the progress
        self.saved_identity: dict = {}  # as loaded; empty for a new checkpoint or one of an older version

    def load(self) -> dict[int, int]:
        try:
            doc = json.loads(self.store.get(self.key))
        except NotFound:
            return {}
        self.saved_identity = _identity_of(doc)
        return {int(p): o for p, o in doc["last_offsets"].items()}

    def save(self, progress: dict[int, int]) -> None:
        doc = {"last_offsets": progress, "saved_at": time.time()} | self.identity
        self.store.put(self.key, json.dumps(doc).encode())


def _identity_of(doc: dict) -> dict:
    return {k: doc[k] for k in ("target", "selection") if k in doc}


class KafkaCheckpoint:
    """Progress as the latest committed record of key `name` in the checkpoint topic."""

    def __init__(self, kafka: KafkaSettings, name: str):
        self.kafka, self.name = kafka, name
        self.identity: dict = {}
        self.saved_identity: dict = {}

    def load(self) -> dict[int, int]:
        source_kafka.ensure_topic(self.kafka, CHECKPOINT_TOPIC, 1, config={"cleanup.policy": "compact"})
        value = source_kafka.latest_value(self.kafka, CHECKPOINT_TOPIC, self.name.encode())
        if value is None:
            return {}
        doc = json.loads(value)
        self.saved_identity = _identity_of(doc)
        return {int(p): o for p, o in doc["last_offsets"].items()}

    def record(self, progress: dict[int, int]) -> tuple[bytes, bytes]:
        doc = {"last_offsets": progress, "saved_at": time.time()} | self.identity
        return self.name.encode(), json.dumps(doc).encode()


def selection_spec(selection: Selection, from_text: str | None = None, to_text: str | None = None) -> dict:
    """What a replay selects, as JSON data kept with its checkpoint. Keys are fingerprinted (a keys
    file may hold millions); times keep the text given, so a relative `--from -2h` is the same
    replay when rerun later."""
    keys = None
    if selection.keys is not None:
        digest = hashlib.sha256()
        for key in sorted(selection.keys):
            digest.update(len(key).to_bytes(4, "big") + key)
        keys = {"count": len(selection.keys), "sha256": digest.hexdigest()}
    return {"topic": selection.topic,
            "partitions": sorted(selection.partitions) if selection.partitions is not None else None,
            "offsets": {str(p): list(r) for p, r in sorted(selection.offsets.items())},
            "from": None if selection.start_ms is None else {"text": from_text, "ms": selection.start_ms},
            "to": None if selection.end_ms is None else {"text": to_text, "ms": selection.end_ms},
            "keys": keys, "where": selection.where}


_OPTIONS = {"topic": "--topic", "partitions": "--partitions", "offsets": "--offsets", "from": "--from",
            "to": "--to", "keys": "--key/--keys-file", "where": "--where"}


def _same(name: str, saved, now) -> bool:
    if name in ("from", "to") and saved and now:  # the same text (-2h) or the same instant
        return saved["text"] == now["text"] or saved["ms"] == now["ms"]
    return saved == now


def _shown(name: str, value) -> str:
    if value is None:
        return "none"
    if name == "keys":
        return f"{value['count']} key(s) {value['sha256'][:12]}"
    if name in ("from", "to"):
        return value["text"] or str(value["ms"])
    return json.dumps(value)


def resume(checkpoint, target: str, selection: Selection, spec: dict) -> tuple[dict[int, int], Selection]:
    """The progress saved under the checkpoint's name, and the selection to go on with.

    Raises ConfigError when the checkpoint was saved by a replay into another target topic or of
    another selection. A rerun keeps the time range of the first run (a relative `--from -2h`
    resumes the window it first meant). Checkpoints saved before they recorded their replay are
    taken as they are, and record it from now on.
    """
    progress = checkpoint.load()
    saved = checkpoint.saved_identity
    if "target" in saved and saved["target"] != target:
        raise ConfigError(f"checkpoint {checkpoint.name!r} belongs to a replay into {saved['target']!r}, not "
                          f"{target!r}; use another --checkpoint name")
    if "selection" in saved:
        differ = [f"{option} ({_shown(name, saved['selection'].get(name))} then, {_shown(name, spec.get(name))} now)"
                  for name, option in _OPTIONS.items() if not _same(name, saved["selection"].get(name), spec.get(name))]
        if differ:
            raise ConfigError(f"checkpoint {checkpoint.name!r} belongs to a replay of another selection: "
                              f"{'; '.join(differ)} differ; use another --checkpoint name")
        spec = saved["selection"]
        selection = dataclasses.replace(selection, start_ms=spec["from"]["ms"] if spec["from"] else None,
                                        end_ms=spec["to"]["ms"] if spec["to"] else None)
    checkpoint.identity = {"target": target, "selection": spec}
    return progress, selection


def target_partitions(kafka: KafkaSettings, topic: str) -> int:
    """The partition count of the target topic; ConfigError when it does not exist."""
    topics = source_kafka.list_topics(kafka)
    if topic not in topics:
        raise ConfigError(f"target topic {topic!r} does not exist in {kafka.bootstrap_servers}; create it first")
    return topics[topic]


def check_original_partitions(topic: str, partitions: int, partitioning: str, source_partitions: Iterable[int]) -> None:
    """`--partitioning original` needs a target partition for every source partition replayed."""
    needed = max(source_partitions, default=-1) + 1
    if partitioning == "original" and needed > partitions:
        raise ConfigError(f"target topic {topic!r} has {partitions} partitions but the replay keeps "
                          f"source partitions up to {needed - 1}; use --partitioning key or round-robin")


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
                 rate: RateLimiter | None = None, progress: Callable[[Stats], None] | None = None,
                 producer: str = "auto"):
        self.kafka, self.topic, self.partitioning = kafka, topic, partitioning
        self.source_topic, self.lineage = source_topic, lineage
        self.schema_ids = schema_ids or {}
        self.checkpoint, self.transactional, self.batch_records = checkpoint, transactional, batch_records
        self.rate, self.progress = rate, progress
        self.stats = Stats()
        self.partitions = target_partitions(kafka, topic)
        self._round_robin = partitioner.RoundRobin(self.partitions)
        conf = kafka.client_config() | {"linger.ms": 20, "batch.size": 1_000_000, "compression.type": "lz4",
                                        "enable.idempotence": True, "queue.buffering.max.messages": 500_000}
        if transactional:
            conf["transactional.id"] = f"archiver-replay-{checkpoint.name}"
        self.producer = open_producer(conf, producer)
        # a rate is kept per slice of records: small slices keep it smooth
        self._chunk = max(1, int(rate.records_per_s // 50) if rate.records_per_s else 1000) if rate else 1_000_000
        if transactional:
            self.producer.init_transactions(60)  # fences an earlier run of the same replay

    def check_original_partitions(self, source_partitions: Iterable[int]) -> None:
        check_original_partitions(self.topic, self.partitions, self.partitioning, source_partitions)

    def partitions_of(self, batch: Batch) -> np.ndarray:
        """The target partition of each record of `batch` (int32)."""
        n = len(batch)
        if self.partitioning == "original":
            return np.full(n, batch.partition, dtype=np.int32)
        if self.partitioning != "key":
            return self._round_robin.take(n)
        partitions = partitioner.partitions_for_keys(batch.keys, self.partitions)
        unkeyed = np.flatnonzero(partitions < 0)
        if len(unkeyed):  # null keys are spread round-robin, not hashed
            partitions[unkeyed] = self._round_robin.take(len(unkeyed))
        return partitions

    def publish(self, batches: Iterable[Batch], progress: dict[int, int]) -> Stats:
        """Produce every record; `progress` (source partition → last offset) is updated and saved
        after every `batch_records` records (and at the end)."""
        pending = 0
        if self.transactional:
            self.producer.begin_transaction()
        for batch in batches:
            begin = 0
            while begin < len(batch):
                end = min(len(batch), begin + self.batch_records - pending, begin + self._chunk)
                part = batch.slice(begin, end)
                self._produce(part)
                progress[part.partition] = part.last
                pending += len(part)
                begin = end
                if pending >= self.batch_records:
                    self._commit(progress)
                    pending = 0
                    if self.transactional:
                        self.producer.begin_transaction()
        self._commit(progress)
        if self.progress:
            self.progress(self.stats)  # the final count, also for replays shorter than one update
        return self.stats

    def _produce(self, batch: Batch) -> None:
        if self.rate:
            self.rate.take(blob_size(batch.values) + blob_size(batch.keys), len(batch))
        sent = self.producer.produce_batch(self.topic, batch, self.partitions_of(batch),
                                           self.source_topic if self.lineage else None, self.schema_ids)
        self.stats.records += len(batch)
        self.stats.bytes += sent
        if self.progress:
            self.progress(self.stats)

    def _commit(self, progress: dict[int, int]) -> None:
        if self.transactional:
            key, value = self.checkpoint.record(progress)
            self.producer.produce(CHECKPOINT_TOPIC, value, key)
            self.producer.commit_transaction(60)  # TransientError when it fails
            return
        source_kafka.flush(self.producer, timeout=120)
        if self.checkpoint is not None:
            self.checkpoint.save(progress)
