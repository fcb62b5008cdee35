"""Thin wrappers over confluent-kafka that translate its errors into archiver's."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
    libversion,
)
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from archiver.config import KafkaSettings
from archiver.errors import TerminalError, TransientError


def librdkafka_version(kafka_client: str = "python") -> str:
    """The librdkafka version of the native module (`kafka_client` native) or of confluent-kafka."""
    if kafka_client == "native":
        import archiver_native

        return archiver_native.LIBRDKAFKA_VERSION
    return libversion()[0]


def admin(settings: KafkaSettings) -> AdminClient:
    return AdminClient(settings.client_config())


REFUSALS = (KafkaError._AUTHENTICATION, KafkaError._SSL, KafkaError.TOPIC_AUTHORIZATION_FAILED,
            KafkaError.GROUP_AUTHORIZATION_FAILED, KafkaError.SASL_AUTHENTICATION_FAILED)
"""librdkafka's codes of a broker refusing the client: credentials, TLS, authorization."""


def is_refusal(code: int, text: str) -> bool:
    """Whether a librdkafka error says the broker refused this client (its configuration or the
    broker's must change), rather than that it could not be reached. A handshake cut short by a
    reset (a broker restarting) is not a refusal."""
    if "connection reset by peer" in text:
        return False
    return code in REFUSALS or "SSL handshake failed" in text or "SSL routines" in text \
        or "SASL authentication" in text


def _refusal(errors: list) -> str | None:
    """The reason a broker refused the connection (authentication, TLS), from librdkafka's error
    events: what "Failed to get metadata" alone does not say."""
    for error in reversed(errors):
        if is_refusal(error.code(), error.str()):
            return error.str()
    return None


class CheckedProducer(Producer):
    """A producer that remembers the messages librdkafka gave up on.

    `flush()` returning 0 only says the queue is empty: a message that failed for good (too large
    for the topic, timed out while the broker was away, not authorized) leaves it too, and only
    its delivery report tells. Reports are asked for failures only
    (`delivery.report.only.error`), so successful deliveries cost nothing; `flush` below raises
    on any failure, before the caller treats the messages as written.
    """

    def __init__(self, conf: dict):
        self.failures: list[str] = []
        super().__init__(conf | {"delivery.report.only.error": True, "on_delivery": self._failed})

    def _failed(self, error, message, origin: str | None = None) -> None:
        if error is not None:
            where = message.topic() if message.partition() < 0 else f"{message.topic()}[{message.partition()}]"
            self.failures.append(f"{where}{f' ({origin})' if origin else ''}: {error.str()}")

    def produce_from(self, origin: str, *args, **kwargs) -> None:
        """produce(), naming in a failure report where the message came from (e.g. a dead letter's record).

        A message that never got a partition (the topic is missing, the broker unreachable) has
        partition -1, which names nothing: only assigned partitions are shown.
        """
        self.produce(*args, on_delivery=lambda error, message: self._failed(error, message, origin), **kwargs)

    def discard(self) -> None:
        """Drop what is still queued and forget past failures (the caller produces it all again)."""
        self.purge()
        self.flush(0)
        self.failures.clear()


def producer(settings: KafkaSettings, **extra: str | int) -> CheckedProducer:
    conf = settings.client_config() | {"linger.ms": 20, "compression.type": "lz4", "enable.idempotence": True}
    return CheckedProducer(conf | extra)


def list_topics(settings: KafkaSettings, timeout: float = 10.0) -> dict[str, int]:
    """Topic name -> partition count for every topic the cluster reports."""
    errors: list = []  # its connection failures are reported in the exception, not also as log lines
    client = AdminClient(settings.client_config() | {"error_cb": errors.append, "log_level": 2})
    try:
        metadata = client.list_topics(timeout=timeout)
    except KafkaException as e:
        client.poll(0)  # serves the error events of the attempt
        refused = _refusal(errors)
        if refused is not None:  # not an outage: the settings are wrong (or the broker's are)
            raise TerminalError(f"kafka at {settings.bootstrap_servers} refused the connection: {refused}") from e
        raise TransientError(f"kafka at {settings.bootstrap_servers} unreachable: {e.args[0].str()}") from e
    return {name: len(t.partitions) for name, t in metadata.topics.items() if not t.error}


def ensure_topic(settings: KafkaSettings, name: str, partitions: int, timeout: float = 30.0,
                 config: dict[str, str] | None = None, replication_factor: int = 1) -> bool:
    """Create `name` with `partitions` partitions (and topic `config`) unless it exists; True when created.

    -1 for `partitions` or `replication_factor` takes the broker's default.
    """
    existing = list_topics(settings, timeout)
    if name in existing:
        return False
    client = admin(settings)  # must outlive the futures
    futures = client.create_topics([NewTopic(name, partitions, replication_factor, config=config or {})],
                                   operation_timeout=timeout)
    try:
        futures[name].result(timeout)
    except KafkaException as e:
        if e.args[0].name() == "TOPIC_ALREADY_EXISTS":
            return False
        raise TerminalError(f"creating topic {name!r} failed: {e.args[0].str()}") from e
    return True


def ensure_dead_letter_topic(settings: KafkaSettings, topic: str, create: bool, partitions: int,
                             replication_factor: int) -> bool:
    """Check that the dead-letter topic exists, creating it when `create`; True when created.

    Raises:
        TerminalError: it is missing and may not, or could not, be created.
    """
    if topic in list_topics(settings):
        return False
    if not create:
        raise TerminalError(f"dead-letter topic {topic!r} does not exist in {settings.bootstrap_servers} and "
                            "run.dlq_create is off: create it, or name another with run.dlq_topic")
    try:
        return ensure_topic(settings, topic, partitions, replication_factor=replication_factor)
    except TerminalError as e:
        raise TerminalError(f"dead-letter topic {topic!r} does not exist in {settings.bootstrap_servers} and "
                            f"could not be created ({e.__cause__.args[0].str() if e.__cause__ else e}): "
                            "create it, or name another with run.dlq_topic") from None


def flush(producer: Producer, timeout: float = 60.0) -> None:
    """Wait for every produced message to be acknowledged.

    Raises:
        TransientError: messages are still queued after `timeout`.
        TerminalError: a `CheckedProducer` lost messages for good (they are not retried: the
            caller must not count them as written).
    """
    remaining = producer.flush(timeout)
    if remaining:
        raise TransientError(f"{remaining} messages still unacknowledged after {timeout:.0f}s")
    failures = getattr(producer, "failures", None)
    if failures:
        raise TerminalError(f"{len(failures)} message(s) not delivered, the first to {failures[0]}")


def read_to_end(settings: KafkaSettings, topic: str, timeout: float = 30.0) -> Iterator[Message]:
    """Every message of `topic` from the beginning up to the end offsets seen at the start."""
    consumer = Consumer(settings.client_config() | {"group.id": "archiver-reader", "enable.auto.commit": False,
                                                     "enable.partition.eof": False})
    try:
        metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if metadata is None or metadata.error:
            raise TerminalError(f"topic {topic!r} does not exist")
        ends = {}
        for p in metadata.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        deadline = time.monotonic() + timeout
        while ends:
            if time.monotonic() > deadline:
                raise TransientError(f"timed out reading {topic!r}; partitions still behind: {sorted(ends)}")
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                raise TransientError(f"reading {topic!r}: {message.error().str()}")
            yield message
            if message.offset() + 1 >= ends.get(message.partition(), 0):
                ends.pop(message.partition(), None)
    finally:
        consumer.close()


@dataclass(frozen=True)
class KafkaOffsets:
    """What Kafka says about one partition."""

    log_start: int
    end: int
    committed: int | None  # the archiver group's committed offset; None when it has none


def group_offsets(settings: KafkaSettings, group_id: str, partitions: Mapping[str, int],
                  timeout: float = 15.0) -> dict[tuple[str, int], KafkaOffsets]:
    """Log-start, end and the group's committed offset of every partition of `partitions` (topic -> count)."""
    tps = [TopicPartition(t, p) for t, count in sorted(partitions.items()) for p in range(count)]
    if not tps:
        return {}
    client = admin(settings)
    try:
        starts = _list_offsets(client, tps, OffsetSpec.earliest(), timeout)
        ends = _list_offsets(client, tps, OffsetSpec.latest(), timeout)
        request = [ConsumerGroupTopicPartitions(group_id, tps)]
        future = client.list_consumer_group_offsets(request, request_timeout=timeout)[group_id]
        committed = {(tp.topic, tp.partition): tp.offset for tp in future.result(timeout).topic_partitions}
    except KafkaException as e:
        raise TransientError(f"kafka at {settings.bootstrap_servers}: offsets not available: "
                             f"{e.args[0].str()}") from e
    return {key: KafkaOffsets(starts[key], ends[key], committed[key] if committed.get(key, -1) >= 0 else None)
            for key in starts}


def _list_offsets(client, tps: list[TopicPartition], spec: OffsetSpec, timeout: float) -> dict[tuple[str, int], int]:
    futures = client.list_offsets({tp: spec for tp in tps}, request_timeout=timeout)
    return {(tp.topic, tp.partition): f.result(timeout).offset for tp, f in futures.items()}


def latest_value(settings: KafkaSettings, topic: str, key: bytes, timeout: float = 60.0) -> bytes | None:
    """The value of the last committed record with `key` in partition 0 of `topic` (read
    committed: records of aborted transactions are skipped), None when there is none."""
    consumer = Consumer(settings.client_config() | {"group.id": "archiver-replay-checkpoints",
                                                     "isolation.level": "read_committed",
                                                     "enable.auto.commit": False})
    try:
        tp = TopicPartition(topic, 0)
        low, high = consumer.get_watermark_offsets(tp, timeout=30)
        found = None
        if high <= low:
            return found
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None:
                if consumer.position([tp])[0].offset >= high:
                    break
                continue
            if not message.error() and message.key() == key and message.value():
                found = message.value()
            if message.offset() + 1 >= high:
                break
        return found
    finally:
        consumer.close()
