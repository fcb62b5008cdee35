"""Realistic web-analytics events for the demo and the benchmark.

Sessions of page views, clicks, scrolls and purchases: an Avro record with a nested record, enums,
an array, nullable fields and timestamp-millis; keyed by session id; two headers per message.
"""

from __future__ import annotations

import io
import random
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import fastavro

from archiver.codec import wire
from archiver.codec.registry import Registry
from archiver.config import KafkaSettings
from archiver.source import kafka as source_kafka

SCHEMA = {
    "type": "record",
    "name": "PageEvent",
    "namespace": "com.example.analytics",
    "doc": "One user interaction on the web site.",
    "fields": [
        {"name": "event_id", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "event_type", "type": {"type": "enum", "name": "EventType",
                                        "symbols": ["PAGE_VIEW", "CLICK", "SCROLL", "PURCHASE", "SIGNUP"]}},
        {"name": "session_id", "type": "string"},
        {"name": "user_id", "type": ["null", "string"], "default": None},
        {"name": "url", "type": "string"},
        {"name": "referrer", "type": ["null", "string"], "default": None},
        {"name": "duration_ms", "type": ["null", "long"], "default": None},
        {"name": "device", "type": {"type": "record", "name": "Device", "fields": [
            {"name": "kind", "type": {"type": "enum", "name": "DeviceKind", "symbols": ["DESKTOP", "MOBILE", "TABLET"]}},
            {"name": "os", "type": "string"},
            {"name": "browser", "type": "string"},
            {"name": "screen_width", "type": ["null", "int"], "default": None},
        ]}},
        {"name": "country", "type": "string"},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "amount_cents", "type": ["null", "long"], "default": None},
    ],
}
PARSED = fastavro.parse_schema(SCHEMA)

_PAGES = ["/", "/pricing", "/docs", "/docs/getting-started", "/blog", "/blog/kafka-to-s3", "/signup",
          "/checkout", "/product/archiver", "/product/replay", "/about", "/careers"]
_REFERRERS = [None, None, "https://www.google.com/", "https://news.ycombinator.com/", "https://t.co/x",
              "https://www.bing.com/"]
_COUNTRIES = ["US", "FR", "DE", "GB", "IN", "BR", "JP", "CA", "NL", "ES"]
_DEVICES = [("DESKTOP", "macOS", "Safari", 1440), ("DESKTOP", "Windows", "Chrome", 1920),
            ("DESKTOP", "Linux", "Firefox", 2560), ("MOBILE", "iOS", "Safari", 390),
            ("MOBILE", "Android", "Chrome", 412), ("TABLET", "iPadOS", "Safari", None)]
_TAGS = ["campaign:winter", "ab:new-nav", "ab:control", "beta", "logged-in", "returning"]


@dataclass(frozen=True)
class Event:
    """One demo message: key, Avro value as a dict, headers and the record timestamp."""

    key: bytes
    value: dict
    headers: list[tuple[str, bytes]]
    timestamp_ms: int


def events(count: int, start_ms: int, span_ms: int, sessions: int = 300, seed: int = 7) -> Iterator[Event]:
    """`count` events spread over [start_ms, start_ms + span_ms), in time order."""
    rng = random.Random(seed)
    session_ids = [f"s-{uuid.UUID(int=rng.getrandbits(128)).hex[:16]}" for _ in range(sessions)]
    users = {s: (f"u-{rng.randrange(10_000):05d}" if rng.random() < 0.6 else None) for s in session_ids}
    step = span_ms / max(count, 1)
    for i in range(count):
        session = rng.choice(session_ids)
        kind, os_name, browser, width = _DEVICES[zlib.crc32(session.encode()) % len(_DEVICES)]
        event_type = rng.choices(["PAGE_VIEW", "CLICK", "SCROLL", "PURCHASE", "SIGNUP"], [50, 30, 15, 3, 2])[0]
        ts = start_ms + int(i * step)
        value = {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "event_time": ts,
            "event_type": event_type,
            "session_id": session,
            "user_id": users[session],
            "url": "https://shop.example.com" + rng.choice(_PAGES),
            "referrer": rng.choice(_REFERRERS),
            "duration_ms": rng.randrange(50, 120_000) if event_type == "PAGE_VIEW" else None,
            "device": {"kind": kind, "os": os_name, "browser": browser, "screen_width": width},
            "country": _COUNTRIES[zlib.crc32(session.encode()[::-1]) % len(_COUNTRIES)],
            "tags": rng.sample(_TAGS, rng.randrange(0, 3)),
            "amount_cents": rng.randrange(500, 50_000) if event_type == "PURCHASE" else None,
        }
        headers = [("source", b"web-frontend"), ("trace-id", rng.getrandbits(64).to_bytes(8, "big").hex().encode())]
        yield Event(session.encode(), value, headers, ts)


def encode(value: dict, schema_id: int) -> bytes:
    """A demo value in Confluent wire format."""
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, PARSED, value)
    return wire.frame(schema_id, buf.getvalue())


def decode(message: bytes, parsed_schema) -> dict:
    """Decode a wire-format message written with `parsed_schema`."""
    return fastavro.schemaless_reader(io.BytesIO(memoryview(message)[wire.HEADER_SIZE:]), parsed_schema)


def produce(kafka: KafkaSettings, registry: Registry, topic: str, count: int, partitions: int = 6,
            start_ms: int | None = None, span_ms: int = 3 * 3600_000) -> int:
    """Create `topic` if needed, register the schema under `<topic>-value` and produce `count`
    events whose timestamps cover the `span_ms` before `start_ms + span_ms` (default: now).

    Returns the schema id the events were written with.
    """
    source_kafka.ensure_topic(kafka, topic, partitions)
    schema_id = registry.register(f"{topic}-value", SCHEMA)
    if start_ms is None:
        start_ms = int(time.time() * 1000) - span_ms
    producer = source_kafka.producer(kafka)
    for event in events(count, start_ms, span_ms):
        producer.produce(topic, encode(event.value, schema_id), event.key, headers=event.headers,
                         timestamp=event.timestamp_ms)
        producer.poll(0)
    source_kafka.flush(producer)
    return schema_id


def consume_back(kafka: KafkaSettings, registry: Registry, topic: str, timeout: float = 30.0) -> list[dict]:
    """Read `topic` from the beginning to its current end and decode every value."""
    decoded = []
    for message in source_kafka.read_to_end(kafka, topic, timeout):
        schema = registry.parsed(wire.schema_id_of(message.value()))
        decoded.append({"partition": message.partition(), "offset": message.offset(),
                        "key": message.key(), "headers": message.headers(), "value": decode(message.value(), schema)})
    return decoded
