"""The native consumer against confluent-kafka's on the real broker: the same records as the
same columns, and the group behaviour the daemon relies on (rebalance callbacks, commits,
watermarks, pause and seek)."""

import random
import time
import uuid

import numpy as np
import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

from archiver.config import KafkaSettings
from archiver.source import kafka as source_kafka
from archiver.source.consumer import NativeConsumer, PythonConsumer, open_consumer
from archiver.source.records import Batch

native = pytest.importorskip("archiver_native", reason="the native module is not built (pip install ./native)")


@pytest.fixture
def kafka(services) -> KafkaSettings:
    return KafkaSettings.from_env(services.env)


def varied_messages(count: int, seed: int = 5) -> list[dict]:
    """Keys, values and headers of every shape Kafka allows: null, empty, binary, repeated header
    names, null header values, non-ASCII names; explicit and broker-set timestamps."""
    rng = random.Random(seed)

    def blob():
        return rng.choice([None, b"", bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 40)))])

    out = []
    for i in range(count):
        headers = rng.choice([None, [], [("a", None)], [("a", b"1"), ("a", b"2")],
                              [("ключ", "значение".encode()), ("trace", blob() or b"x")]])
        out.append({"key": blob(), "value": blob(), "headers": headers,
                    "timestamp": rng.choice([0, 1_700_000_000_000 + i])})
    return out


def produce(kafka: KafkaSettings, topic: str, messages: list[dict], partitions: int = 3,
            config: dict | None = None) -> None:
    source_kafka.ensure_topic(kafka, topic, partitions, config=config)
    producer = source_kafka.producer(kafka)
    for i, m in enumerate(messages):
        producer.produce(topic, m["value"], m["key"], partition=i % partitions, headers=m["headers"],
                         timestamp=m["timestamp"])
    source_kafka.flush(producer)


def consume_all(consumer, topic: str, expected: int, timeout: float = 60.0) -> dict[int, Batch]:
    """Every record of `topic` as one batch per partition."""
    consumer.subscribe([topic])
    runs: dict[int, list[Batch]] = {}
    deadline = time.monotonic() + timeout
    while sum(len(b) for bs in runs.values() for b in bs) < expected:
        assert time.monotonic() < deadline, "timed out consuming"
        for batch in consumer.consume_batches(500, 0.5):
            runs.setdefault(batch.partition, []).append(batch)
    return {p: concat(bs) for p, bs in runs.items()}


def concat(batches: list[Batch]) -> Batch:
    import pyarrow as pa
    first = batches[0]
    return Batch(first.topic, first.partition, np.concatenate([b.offsets for b in batches]),
                 np.concatenate([b.timestamps for b in batches]), np.concatenate([b.types for b in batches]),
                 [k for b in batches for k in b.keys], [v for b in batches for v in b.values],
                 pa.concat_arrays([b.headers for b in batches]))


def config(kafka: KafkaSettings, group: str) -> dict:
    return kafka.client_config() | {"group.id": group, "auto.offset.reset": "earliest",
                                    "enable.auto.commit": False, "partition.assignment.strategy": "cooperative-sticky"}


@pytest.mark.parametrize("timestamp_type", ["CreateTime", "LogAppendTime"])
def test_both_consumers_give_the_same_columns(kafka, unique, timestamp_type):
    messages = varied_messages(600)
    produce(kafka, unique, messages, config={"message.timestamp.type": timestamp_type})
    got = {}
    for consumer in (NativeConsumer(config(kafka, f"{unique}-n")), PythonConsumer(config(kafka, f"{unique}-p"))):
        try:
            got[consumer.kind] = consume_all(consumer, unique, len(messages))
        finally:
            consumer.close()

    native_batches, python_batches = got["native"], got["python"]
    assert sorted(native_batches) == sorted(python_batches) == [0, 1, 2]
    for p in range(3):
        n, py = native_batches[p], python_batches[p]
        assert (n.topic, n.partition) == (py.topic, py.partition) == (unique, p)
        assert n.offsets.tolist() == py.offsets.tolist() == list(range(200))
        assert n.types.tolist() == py.types.tolist()
        assert set(n.types.tolist()) == {1 if timestamp_type == "CreateTime" else 2}
        assert n.timestamps.tolist() == py.timestamps.tolist()
        assert n.keys == py.keys == [m["key"] for m in messages[p::3]]
        assert n.values == py.values == [m["value"] for m in messages[p::3]]
        assert n.headers.equals(py.headers)
        assert [n.record(i).headers() for i in range(len(n))] == [m["headers"] or None for m in messages[p::3]]
        assert [n.record(i) for i in range(len(n))] == [py.record(i) for i in range(len(py))]


def test_native_group_membership_assigns_commits_pauses_and_seeks(kafka, unique):
    produce(kafka, unique, [{"key": b"k", "value": b"v%d" % i, "headers": None, "timestamp": 0}
                            for i in range(30)], partitions=3)
    events = []

    def on_assign(consumer, partitions):
        events.append(("assign", sorted(tp.partition for tp in partitions)))
        consumer.incremental_assign([TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING) for tp in partitions])

    def on_revoke(consumer, partitions):
        events.append(("revoke", sorted(tp.partition for tp in partitions)))
        consumer.incremental_unassign(partitions)

    group = f"{unique}-g"
    first = open_consumer(config(kafka, group), "native")
    assert first.kind == "native"
    first.subscribe([unique], on_assign=on_assign, on_revoke=on_revoke)
    seen = consume_until(first, 30)
    assert events[0] == ("assign", [0, 1, 2])
    assert sorted(seen) == [(p, o) for p in range(3) for o in range(10)]

    first.commit(offsets=[TopicPartition(unique, 0, 7)], asynchronous=False)
    assert [tp.offset for tp in first.committed([TopicPartition(unique, 0), TopicPartition(unique, 1)],
                                                timeout=10)] == [7, -1001]
    assert first.get_watermark_offsets(TopicPartition(unique, 1), timeout=10) == (0, 10)
    assert first.get_watermark_offsets(TopicPartition(unique, 1), cached=True)[1] == 10
    assert first.position([TopicPartition(unique, 2)])[0].offset == 10

    first.seek(TopicPartition(unique, 2, 4))
    first.pause([TopicPartition(unique, 1)])
    produce(kafka, unique, [{"key": None, "value": b"late", "headers": None, "timestamp": 0}] * 3, partitions=3)
    again = consume_until(first, 7 + 1)  # partition 2 from 4 (6 old + 1 new), 0's new one; 1 paused
    assert (1, 10) not in again and (2, 4) in again and (0, 10) in again
    first.resume([TopicPartition(unique, 1)])
    assert (1, 10) in consume_until(first, 1)

    second = open_consumer(config(kafka, group), "native")  # a second member: cooperative rebalance
    second_events = []
    second.subscribe([unique], on_assign=lambda c, ps: (second_events.append(len(ps)), c.incremental_assign(ps)))
    deadline = time.monotonic() + 60
    while not second_events or len(events) < 2:
        assert time.monotonic() < deadline, f"no rebalance: {events} {second_events}"
        first.consume_batches(100, 0.2)
        second.consume_batches(100, 0.2)
    assert events[1][0] == "revoke" and 0 < len(events[1][1]) < 3  # incremental: only what moves
    second.close()
    first.close()
    assert events[-1][0] == "revoke"  # close leaves the group through the revoke callback


def consume_until(consumer, count: int, timeout: float = 30.0) -> list[tuple[int, int]]:
    seen = []
    deadline = time.monotonic() + timeout
    while len(seen) < count:
        assert time.monotonic() < deadline, f"only {len(seen)} of {count} records: {seen}"
        for batch in consumer.consume_batches(100, 0.3):
            seen += [(batch.partition, int(o)) for o in batch.offsets]
    return seen


def test_native_errors_are_kafka_exceptions(kafka, unique):
    consumer = NativeConsumer(config(kafka, unique))
    try:
        with pytest.raises(KafkaException) as raised:
            consumer.get_watermark_offsets(TopicPartition(f"missing-{uuid.uuid4().hex}", 0), timeout=2)
        assert raised.value.args[0].code() != 0 and raised.value.args[0].str()
    finally:
        consumer.close()
    with pytest.raises(KafkaException, match="No such configuration property"):
        NativeConsumer(config(kafka, unique) | {"no.such.property": "1"})


def test_an_exception_in_a_rebalance_callback_surfaces_from_consume(kafka, unique):
    produce(kafka, unique, [{"key": None, "value": b"v", "headers": None, "timestamp": 0}], partitions=1)
    consumer = NativeConsumer(config(kafka, unique))

    def on_assign(consumer, partitions):
        raise RuntimeError("assign failed")

    consumer.subscribe([unique], on_assign=on_assign)
    try:
        with pytest.raises(RuntimeError, match="assign failed"):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                consumer.consume_batches(10, 0.5)
    finally:
        consumer.close()
