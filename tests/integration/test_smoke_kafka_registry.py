"""Avro in Confluent wire format through the real broker, schema in the real registry."""

import json

import pytest

from archiver import demo
from archiver.codec import wire
from archiver.codec.registry import Registry
from archiver.config import KafkaSettings, RegistrySettings
from archiver.errors import NotFound
from archiver.source import kafka as source_kafka


@pytest.fixture
def kafka(services) -> KafkaSettings:
    return KafkaSettings.from_env(services.env)


@pytest.fixture
def registry(services) -> Registry:
    with Registry(RegistrySettings.from_env(services.env)) as registry:
        yield registry


def test_demo_events_round_trip_through_broker_and_registry(kafka, registry, unique):
    count = 500
    schema_id = demo.produce(kafka, registry, unique, count, partitions=3, start_ms=1_700_000_000_000,
                             span_ms=3_600_000)
    expected = {e.value["event_id"]: e for e in demo.events(count, 1_700_000_000_000, 3_600_000)}

    records = demo.consume_back(kafka, registry, unique)

    assert len(records) == count
    assert {r["partition"] for r in records} == {0, 1, 2}
    for record in records:
        event = expected[str(record["value"]["event_id"])]
        assert record["key"] == event.key
        assert record["headers"] == event.headers
        assert record["value"]["session_id"] == event.value["session_id"]
        assert int(record["value"]["event_time"].timestamp() * 1000) == event.timestamp_ms
        assert record["value"]["device"] == event.value["device"]
        assert record["value"]["tags"] == event.value["tags"]
    assert registry.schema_text(schema_id) and json.loads(registry.schema_text(schema_id))["name"] == "PageEvent"


def test_registry_ids_are_stable_and_distinct_per_schema(registry, unique):
    first = registry.register(f"{unique}-value", demo.SCHEMA)
    assert registry.register(f"{unique}-value", demo.SCHEMA) == first
    evolved = dict(demo.SCHEMA, fields=demo.SCHEMA["fields"] + [{"name": "extra", "type": ["null", "string"],
                                                                    "default": None}])
    second = registry.register(f"{unique}-value", evolved)
    assert second != first
    assert [f["name"] for f in registry.parsed(second)["fields"]][-1] == "extra"


def test_unknown_schema_id_is_not_found(registry):
    with pytest.raises(NotFound, match="schema id 987654"):
        registry.parsed(987654)


def test_wire_header_carries_the_registered_id(kafka, registry, unique):
    schema_id = demo.produce(kafka, registry, unique, 10, partitions=1)
    messages = list(source_kafka.read_to_end(kafka, unique))
    assert [wire.schema_id_of(m.value()) for m in messages] == [schema_id] * 10
