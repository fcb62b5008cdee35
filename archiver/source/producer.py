"""Replay's producer: batches of records produced in one call.

`NativeProducer` (archiver_native, where it is built and serves the settings) produces a whole
`Batch` in one call without the GIL and without a Python object per record (replay hands it keys
and values as Arrow arrays). `PythonProducer` (confluent-kafka) produces it record by record. Both report delivery
failures in `failures` (as `source.kafka.CheckedProducer` does, which `source.kafka.flush` reads)
and translate errors into confluent-kafka's KafkaException, so callers handle them alike.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
from confluent_kafka import KafkaException

from archiver.errors import TerminalError, TransientError
from archiver.source import native
from archiver.source.kafka import CheckedProducer
from archiver.source.records import Batch, blob_buffers, blob_list, blob_size, raw

logger = logging.getLogger(__name__)

def open_producer(config: dict, kind: str = "auto") -> PythonProducer | NativeProducer:
    """A producer for `config` (confluent-kafka's dict); `kind` as `consumer.open_consumer`'s."""
    if kind == "python":
        return PythonProducer(config)
    reason = native.unsupported(config)
    if reason is None:
        return NativeProducer(config)
    if kind == "native":
        raise TerminalError(f"run.kafka_client is native, but {reason}")
    logger.info("producing with confluent-kafka: %s", reason)
    return PythonProducer(config)


def lineage_headers(topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    return [("archiver.source.topic", topic.encode()), ("archiver.source.partition", str(partition).encode()),
            ("archiver.source.offset", str(offset).encode())]


def with_schema_id(value: bytes | None, schema_ids: dict[int, int]) -> bytes | None:
    """A Confluent wire-format value with its schema id replaced as `schema_ids` says."""
    if value is not None and schema_ids and len(value) >= 5 and value[0] == 0:
        new_id = schema_ids.get(int.from_bytes(value[1:5], "big"))
        if new_id is not None:
            return value[:1] + new_id.to_bytes(4, "big") + value[5:]
    return value


class PythonProducer(CheckedProducer):
    """confluent-kafka's producer, a batch produced record by record."""

    kind = "python"

    def commit_transaction(self, timeout: float = 60.0) -> None:
        """Raises TransientError when the transaction fails (nothing of it is visible)."""
        try:
            super().commit_transaction(timeout)
        except KafkaException as e:
            raise TransientError(f"replay transaction failed: {e.args[0].str()}") from e

    def produce_batch(self, topic: str, batch: Batch, partitions: np.ndarray, lineage: str | None = None,
                      schema_ids: dict[int, int] | None = None) -> int:
        """Produce every record of `batch` to `topic`, record i to `partitions[i]`; `lineage` (the
        source topic) adds the archiver.source.* headers. Returns the bytes of keys and values."""
        stamps = np.where(batch.types == 0, 0, batch.timestamps).tolist()
        keys, values, offsets = blob_list(batch.keys), blob_list(batch.values), batch.offsets.tolist()
        headers = [[(h["key"], h["value"]) for h in row] for row in batch.headers.to_pylist()]
        for i, partition in enumerate(partitions.tolist()):
            value, key = with_schema_id(values[i], schema_ids or {}), keys[i]
            extra = lineage_headers(lineage, batch.partition, offsets[i]) if lineage is not None else []
            while True:
                try:
                    self.produce(topic, value, key, partition=partition, headers=(headers[i] + extra) or None,
                                 timestamp=stamps[i])
                    break
                except BufferError:
                    self.poll(0.05)
            if i % 1000 == 999:  # serve delivery reports now and then, not per record
                self.poll(0)
        self.poll(0)
        return blob_size(keys) + blob_size(values)


class NativeProducer:
    """`archiver_native.Producer` with the interface of confluent-kafka's (as replay uses it)."""

    kind = "native"

    def __init__(self, config: dict):
        self.failures: list[str] = []
        self._producer = native.open_client("Producer", config)

    def _call(self, method: str, *args):
        try:
            return native.call(self._producer, method, *args)
        finally:  # delivery failures and client errors of the call
            self.failures += self._producer.failures()
            for _code, _name, reason, fatal in self._producer.errors():
                if fatal:
                    raise TerminalError(f"kafka: {reason}")
                logger.warning("kafka: %s", reason)

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None, partition: int = -1,
                headers: list | None = None, timestamp: int = 0) -> None:
        self._call("produce", topic, value, key, partition, list(headers or []), timestamp)

    def produce_batch(self, topic: str, batch: Batch, partitions: np.ndarray, lineage: str | None = None,
                      schema_ids: dict[int, int] | None = None) -> int:
        """As `PythonProducer.produce_batch`, in one native call."""
        stamps = np.where(batch.types == 0, 0, batch.timestamps).astype(np.int64)
        lineage = None if lineage is None else (lineage, batch.partition,
                                                raw(np.ascontiguousarray(batch.offsets, np.int64)))
        return self._call("produce_batch", topic, raw(np.ascontiguousarray(partitions, np.int32)), raw(stamps),
                          blob_buffers(batch.keys), blob_buffers(batch.values), header_columns(batch.headers),
                          lineage, schema_ids or None)

    def poll(self, timeout: float = 0.0) -> int:
        self._call("poll", timeout)
        return 0

    def flush(self, timeout: float = 60.0) -> int:
        return self._call("flush", timeout)

    def purge(self) -> None:
        self._call("purge")

    def init_transactions(self, timeout: float = 60.0) -> None:
        self._call("init_transactions", timeout)

    def begin_transaction(self) -> None:
        self._call("begin_transaction")

    def commit_transaction(self, timeout: float = 60.0) -> None:
        """Raises TransientError when the transaction fails (nothing of it is visible)."""
        try:
            self._call("commit_transaction", timeout)
        except KafkaException as e:
            raise TransientError(f"replay transaction failed: {e.args[0].str()}") from e

    def abort_transaction(self, timeout: float = 60.0) -> None:
        self._call("abort_transaction", timeout)


def header_columns(headers: pa.Array) -> tuple:
    """The buffers of a list<struct<key, value>> column as `archiver_native.Producer.produce_batch`
    takes them: list offsets into the entries, name offsets, names, value offsets, values, and one
    byte per entry saying whether its value is set (None when all are). Lent, not copied."""
    def offsets(array: pa.Array, buffer: int = 1) -> memoryview:
        found = np.frombuffer(array.buffers()[buffer], np.int32)
        return raw(found[array.offset:array.offset + len(array) + 1])

    def data(array: pa.Array) -> memoryview | bytes:
        found = array.buffers()[2]
        return b"" if found is None else raw(found)

    entries = headers.values  # the whole child: the list offsets index into it
    names, values = entries.field(0), entries.field(1)  # sliced as the struct is
    valid = None if values.null_count == 0 else \
        raw(np.asarray(values.is_valid().to_numpy(zero_copy_only=False), np.uint8))
    return offsets(headers), offsets(names), data(names), offsets(values), data(values), valid
