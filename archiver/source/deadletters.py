"""The dead-letter topic: undecodable records, sent as they came with why and where from."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaException

from archiver.config import KafkaSettings
from archiver.errors import DeadLetterUndelivered, TerminalError, TransientError
from archiver.source import kafka as source_kafka

logger = logging.getLogger(__name__)


class DeadLetters:
    """Sends undecodable records to `topic`, each with its key, value, headers and timestamp and
    the archiver.error/topic/partition/offset headers. The producer starts on the first record."""

    def __init__(self, kafka: KafkaSettings, topic: str):
        self.kafka, self.topic = kafka, topic
        self._producer: source_kafka.CheckedProducer | None = None

    def send(self, record, reason: str) -> None:
        """Queue `record` (a message or `records.Record`) for the topic.

        Raises:
            DeadLetterUndelivered: the producer's queue is full: the topic is not taking them.
        """
        if self._producer is None:
            self._producer = source_kafka.producer(self.kafka, **{"linger.ms": 5})
        headers = list(record.headers() or []) + [
            ("archiver.error", reason.encode()), ("archiver.topic", record.topic().encode()),
            ("archiver.partition", str(record.partition()).encode()),
            ("archiver.offset", str(record.offset()).encode()),
        ]
        ts_type, ts = record.timestamp()
        try:
            self._producer.produce_from(f"dead letter of {record.topic()}[{record.partition()}] offset "
                                        f"{record.offset()}", self.topic, record.value(), record.key(),
                                        headers=headers, timestamp=ts if ts_type else 0)
        except (BufferError, KafkaException) as e:  # the local queue is full: the topic is not taking them
            raise DeadLetterUndelivered(f"dead-letter topic {self.topic!r} is not taking records: {e}") from e
        self._producer.poll(0)

    def flush(self) -> None:
        """Every dead letter durable before the range holding it is committed; an outage otherwise.

        Raises:
            DeadLetterUndelivered: some were not delivered; all still queued are dropped (the
                partitions holding them consume again and send every one again).
        """
        if self._producer is None:
            return
        try:
            source_kafka.flush(self._producer, timeout=30)
        except (TransientError, TerminalError) as e:
            self._producer.discard()
            raise DeadLetterUndelivered(f"dead-letter topic {self.topic!r}: {e}") from e

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(10)
