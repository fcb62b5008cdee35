"""The sink's commit logic with a fake consumer feed, a local store and the real decoders."""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass

import fastavro
import pytest

from archiver import demo
from archiver.archive import Archive
from archiver.codec.values import ValueDecoder
from archiver.config import TopicSettings
from archiver.errors import TerminalError, TransientError
from archiver.ledger import FencedError
from archiver.sink import Sink
from archiver.store import open_store
from archiver.writer.buffer import Rotation


@dataclass
class FakeMessage:
    _topic: str
    _partition: int
    _offset: int
    _key: bytes | None
    _value: bytes | None
    _ts: int
    _headers: list | None = None

    def topic(self): return self._topic
    def partition(self): return self._partition
    def offset(self): return self._offset
    def key(self): return self._key
    def value(self): return self._value
    def timestamp(self): return (1, self._ts)
    def headers(self): return self._headers


class FakeRegistry:
    def __init__(self, schemas: dict[int, dict]):
        self.schemas = schemas

    def schema_text(self, schema_id):
        from archiver.errors import NotFound
        if schema_id not in self.schemas:
            raise NotFound(f"schema id {schema_id}")
        return json.dumps(self.schemas[schema_id])


def messages(count: int, first_offset: int = 0, schema_id: int = 1, partition: int = 0):
    out = []
    for i, e in enumerate(demo.events(count, 1_764_000_000_000, 2 * 3600_000)):
        out.append(FakeMessage("t", partition, first_offset + i, e.key, demo.encode(e.value, schema_id),
                               e.timestamp_ms, e.headers))
    return out


class Harness:
    def __init__(self, store, settings=TopicSettings(), dlq=True, registry=None):
        self.committed: dict[tuple[str, int], int] = {}
        self.dead = []
        decoder = ValueDecoder(registry or FakeRegistry({1: demo.SCHEMA}))
        self.sink = Sink(store, lambda t: settings, lambda t: decoder,
                         lambda t, p, o: self.committed.__setitem__((t, p), o),
                         (lambda m, r: self.dead.append((m.offset(), r))) if dlq else None)


@pytest.fixture
def store(tmp_path):
    return open_store(f"file://{tmp_path}")


def archived(store, topic="t"):
    table = Archive(store).read_topic(topic)
    return sorted(zip(table["_kafka_partition"].to_pylist(), table["_kafka_offset"].to_pylist()))


def test_flush_commits_every_offset_once_and_commits_kafka_after(store):
    h = Harness(store)
    assert h.sink.assign("t", 0) is None
    h.sink.ingest("t", 0, messages(500))
    assert h.committed == {}  # nothing durable yet
    assert h.sink.flush("t", 0, Rotation.END)
    assert h.committed == {("t", 0): 500}
    assert archived(store) == [(0, o) for o in range(500)]


def test_the_last_commit_time_moves_with_commits_only(store):
    """What /metrics reports as archiver_last_commit_timestamp_seconds (the no-commit alert's input)."""
    h = Harness(store)
    h.sink.assign("t", 0)
    started = h.sink.stats.last_commit_at
    h.sink.ingest("t", 0, messages(10))
    assert h.sink.stats.last_commit_at == started  # buffered is not committed
    time.sleep(0.01)
    assert h.sink.flush("t", 0, Rotation.END)
    assert h.sink.stats.last_commit_at > started


def test_redelivered_offsets_are_skipped(store):
    h = Harness(store)
    h.sink.assign("t", 0)
    batch = messages(100)
    h.sink.ingest("t", 0, batch[:60])
    h.sink.ingest("t", 0, batch[40:])
    h.sink.flush("t", 0, Rotation.END)
    assert archived(store) == [(0, o) for o in range(100)]
    assert h.sink.stats.duplicates_skipped == 20


def test_a_restarted_owner_resumes_where_the_ledger_ends(store):
    first = Harness(store)
    first.sink.assign("t", 0)
    first.sink.ingest("t", 0, messages(300)[:200])
    first.sink.flush("t", 0, Rotation.END)
    first.sink.ingest("t", 0, messages(300)[200:])  # buffered, then the process dies
    second = Harness(store)
    assert second.sink.assign("t", 0) == 200
    second.sink.ingest("t", 0, messages(300)[200:])
    second.sink.flush("t", 0, Rotation.END)
    assert archived(store) == [(0, o) for o in range(300)]


def test_a_fenced_writer_deletes_its_files(store):
    zombie = Harness(store)
    zombie.sink.assign("t", 0)
    zombie.sink.ingest("t", 0, messages(50))
    Harness(store).sink.assign("t", 0)
    with pytest.raises(FencedError):
        zombie.sink.flush("t", 0, Rotation.END)
    assert [k for k in store.list("topic=")] == []
    assert ("t", 0) not in zombie.sink.owned


def test_undecodable_records_go_to_the_dead_letter_callback_and_the_range_stays_contiguous(store):
    h = Harness(store)
    h.sink.assign("t", 0)
    batch = messages(10)
    batch[3]._value = b"\x01garbage"  # bad magic byte
    batch[5]._value = batch[5]._value[:-3]  # truncated
    batch[7]._value = b"\x00\x00\x00\x00\x63" + batch[7]._value[5:]  # unknown schema id 99
    h.sink.ingest("t", 0, batch)
    h.sink.flush("t", 0, Rotation.END)
    assert [o for o, _ in h.dead] == [3, 5, 7]
    assert "magic byte" in h.dead[0][1] and "unknown schema id 99" in h.dead[2][1]
    assert archived(store) == [(0, o) for o in range(10) if o not in (3, 5, 7)]
    entry = [e for e in Archive(store).entries("t", 0) if e.kind == "commit"][0]
    assert (entry.start, entry.end, entry.records, entry.dead_lettered) == (0, 10, 7, 3)


def test_without_a_dead_letter_topic_bad_input_stops_with_the_offset(store):
    h = Harness(store, dlq=False)
    h.sink.assign("t", 0)
    batch = messages(5)
    batch[2]._value = b"\x01xxxxxx"
    with pytest.raises(TerminalError, match=r"undecodable record at t\[0\] offset 2: unknown magic byte"):
        h.sink.ingest("t", 0, batch)


def test_tombstones_are_kept_with_null_values(store):
    h = Harness(store)
    h.sink.assign("t", 0)
    batch = messages(5)
    batch[1]._value = None
    h.sink.ingest("t", 0, batch)
    h.sink.flush("t", 0, Rotation.END)
    table = Archive(store).read_topic("t").sort_by("_kafka_offset")
    assert table["_schema_id"].to_pylist() == [1, None, 1, 1, 1]
    assert table["event_id"].to_pylist()[1] is None
    assert table["_kafka_key"].to_pylist()[1] == batch[1]._key


def test_a_schema_change_rotates_into_a_new_commit(store):
    v2 = dict(demo.SCHEMA, fields=demo.SCHEMA["fields"] + [{"name": "extra", "type": ["null", "string"], "default": None}])
    h = Harness(store, registry=FakeRegistry({1: demo.SCHEMA, 2: v2}))
    h.sink.assign("t", 0)
    later = messages(10, first_offset=10, schema_id=2)
    for m, e in zip(later, demo.events(10, 1_764_000_000_000, 2 * 3600_000)):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, fastavro.parse_schema(v2), dict(e.value, extra="x"))
        m._value = b"\x00\x00\x00\x00\x02" + buf.getvalue()
    h.sink.ingest("t", 0, messages(10) + later)
    h.sink.flush("t", 0, Rotation.END)
    commits = [e for e in Archive(store).entries("t", 0) if e.kind == "commit"]
    assert [(e.start, e.end) for e in commits] == [(0, 10), (10, 20)]
    assert [f.schema_ids for e in commits for f in e.files][0] == [1]
    assert h.sink.stats.rotations["schema_change"] == 1


class FlakyStore:
    """Fails puts of data files while `down` is set."""

    def __init__(self, inner):
        self.inner, self.down, self.url = inner, False, inner.url

    def put(self, key, data, *, if_absent=False):
        if self.down and key.startswith("topic="):
            raise TransientError("S3 unreachable")
        self.inner.put(key, data, if_absent=if_absent)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_a_failed_upload_stays_pending_and_commits_on_retry(store):
    flaky = FlakyStore(store)
    h = Harness(flaky)
    h.sink.assign("t", 0)
    h.sink.ingest("t", 0, messages(100))
    flaky.down = True
    assert not h.sink.flush("t", 0, Rotation.END)
    h.sink.ingest("t", 0, messages(120)[100:])  # ignored while pending: re-fetched after resume
    assert h.sink.resume_offset("t", 0) == 100
    assert h.committed == {}
    flaky.down = False
    assert h.sink.retry("t", 0)
    assert archived(store) == [(0, o) for o in range(100)]


@pytest.mark.parametrize("granularity,expected", [("day", {"dt"}), ("minute", {"dt", "hour", "minute"})])
def test_time_granularity_and_no_key_partitioning(store, granularity, expected):
    h = Harness(store, TopicSettings(time_granularity=granularity, key_partitioning="none"))
    h.sink.assign("t", 0)
    h.sink.ingest("t", 0, messages(50))
    h.sink.flush("t", 0, Rotation.END)
    from archiver import layout
    for f in Archive(store).files("t"):
        assert set(layout.parse_data_key(f.key).partition_values()) == expected


def test_rotation_by_record_count(store):
    h = Harness(store, TopicSettings(max_records=40, key_partitioning="none", time_granularity="day"))
    h.sink.assign("t", 0)
    for i in range(0, 100, 10):
        h.sink.ingest("t", 0, messages(100)[i:i + 10])
    assert h.sink.stats.rotations == {"records": 2}
    assert h.committed == {("t", 0): 80}


def test_time_field_and_field_key_partitioning_route_by_value(store):
    settings = TopicSettings(time_granularity="day", time_field="event_time", key_partitioning="field",
                             key_field="country", key_field_values=("FR", "US"))
    h = Harness(store, settings)
    h.sink.assign("t", 0)
    batch = messages(200)
    for m in batch:
        m._ts = 0  # the record timestamp says 1970: only event_time can place these in 2025
    h.sink.ingest("t", 0, batch)
    h.sink.flush("t", 0, Rotation.END)
    from archiver import layout
    dirs = {layout.parse_data_key(f.key).directories for f in Archive(store).files("t")}
    assert {d.split("/")[0] for d in dirs} == {"dt=2025-11-24"}
    assert {d.split("/")[1] for d in dirs} == {"country=FR", "country=US", "country=_other"}
    table = Archive(store).read_topic("t")
    for f in Archive(store).files("t"):
        rows = Archive(store).read(f)
        country = layout.parse_data_key(f.key).partition_values()["country"]
        values = set(rows["country"].to_pylist())
        assert values == {country} if country != "_other" else not values & {"FR", "US"}
    assert table.num_rows == 200


def test_json_log_lines():
    import logging

    from archiver.logs import JsonFormatter

    record = logging.LogRecord("archiver.sink", logging.INFO, __file__, 1, "committed %s[%d]", ("t", 3), None)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "committed t[3]" and line["level"] == "INFO" and line["logger"] == "archiver.sink"


def test_a_value_parquet_cannot_store_stops_with_one_line(store):
    schema = {"type": "record", "name": "R", "fields": [{"name": "f", "type": {"type": "fixed", "name": "E", "size": 0}}]}
    h = Harness(store, registry=FakeRegistry({4: schema}))
    h.sink.assign("t", 0)
    h.sink.ingest("t", 0, [FakeMessage("t", 0, 0, b"k", b"\x00\x00\x00\x00\x04", 1)])
    with pytest.raises(TerminalError, match=r"cannot write Parquet for topic=t/.*FIXED_LEN_BYTE_ARRAY"):
        h.sink.flush("t", 0, Rotation.END)
    assert h.committed == {}


def test_avro_keys_become_a_key_struct_and_bad_keys_are_dead_lettered(store):
    from archiver.codec.keys import KeyDecoder

    key_schema = {"type": "record", "name": "SessionKey", "fields": [{"name": "session", "type": "string"}]}
    registry = FakeRegistry({1: demo.SCHEMA, 9: key_schema})
    h = Harness(store, TopicSettings(key_format="avro"), registry=registry)
    h.sink.key_decoder_for = lambda topic: KeyDecoder(registry)
    h.sink.assign("t", 0)
    batch = messages(6)
    for m in batch:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, fastavro.parse_schema(key_schema), {"session": m._key.decode()})
        m._key = b"\x00\x00\x00\x00\x09" + buf.getvalue()
    batch[2]._key = b"\x00\x00\x00\x00\x09\x7f"  # truncated key
    batch[4]._key = None
    h.sink.ingest("t", 0, batch)
    h.sink.flush("t", 0, Rotation.END)
    table = Archive(store).read_topic("t").sort_by("_kafka_offset")
    assert table["_kafka_offset"].to_pylist() == [0, 1, 3, 4, 5]
    keys = table["_key"].to_pylist()
    assert keys[3] is None and keys[0] == {"session": table["session_id"][0].as_py()}
    assert [o for o, _ in h.dead] == [2] and h.dead[0][1].startswith("key: ")


class OutageRegistry(FakeRegistry):
    """The registry of schema 1 is down while `down` is set."""

    down = False

    def schema_text(self, schema_id):
        from archiver.errors import RegistryUnavailable
        if self.down:
            raise RegistryUnavailable("schema registry unreachable")
        return super().schema_text(schema_id)


def test_a_registry_outage_pauses_the_partition_and_dead_letters_nothing(store):
    registry = OutageRegistry({1: demo.SCHEMA, 2: demo.SCHEMA})
    h = Harness(store, registry=registry)
    h.sink.assign("t", 0)
    h.sink.ingest("t", 0, messages(100))
    registry.down = True
    batch = messages(200, schema_id=2)[100:]  # a new writer schema: its lookup fails
    h.sink.ingest("t", 0, batch)
    assert h.dead == [] and h.sink.stats.dead_lettered == 0
    assert h.sink.outages()[("t", 0)].dependency == "registry"
    h.sink.ingest("t", 0, batch)  # fetched before the pause took effect: ignored
    assert h.sink.flush("t", 0, Rotation.END)
    assert h.committed == {("t", 0): 100}, "nothing committed past the outage"
    assert h.sink.resume_offset("t", 0) == 100 and not h.sink.outages()
    registry.down = False
    h.sink.ingest("t", 0, batch)
    assert h.sink.flush("t", 0, Rotation.END)
    assert archived(store) == [(0, o) for o in range(200)] and h.dead == []


def test_a_dead_letter_topic_that_does_not_take_records_rewinds_to_the_last_commit(store):
    from archiver.errors import DeadLetterUndelivered

    h = Harness(store)
    failing = {"on": False}

    def flush_dead_letters():
        if failing["on"]:
            raise DeadLetterUndelivered("dead-letter topic 'dlq': 1 message(s) not delivered")

    h.sink._flush_dead_letters = flush_dead_letters
    h.sink.assign("t", 0)
    h.sink.assign("t", 1)
    h.sink.ingest("t", 0, messages(50))
    assert h.sink.flush("t", 0, Rotation.END)
    batch = messages(100)[50:]
    batch[3] = FakeMessage("t", 0, 53, None, b"\x07garbage", 1_764_000_000_000)
    h.sink.ingest("t", 0, batch)
    h.sink.ingest("t", 1, messages(10, partition=1))  # no dead letters: not rewound
    failing["on"] = True
    assert not h.sink.flush("t", 0, Rotation.END)
    assert h.committed == {("t", 0): 50}
    assert h.sink.outages()[("t", 0)].dependency == "dlq"
    assert ("t", 1) not in h.sink.outages()
    assert h.sink.resume_offset("t", 0) == 50, "consumed again from the last commit"
    failing["on"] = False
    h.sink.ingest("t", 0, batch)
    assert h.sink.flush("t", 0, Rotation.END) and h.sink.flush("t", 1, Rotation.END)
    assert [o for o, _ in h.dead] == [53, 53], "the dead letter is sent again"
    assert archived(store) == sorted([(0, o) for o in range(100) if o != 53] + [(1, o) for o in range(10)])


def codecs(store) -> dict[int, set[str]]:
    """Per file's row count, the Parquet codecs of its columns."""
    import io

    import pyarrow.parquet as pq

    out = {}
    for f in Archive(store).files("t"):
        meta = pq.ParquetFile(io.BytesIO(store.get(f.key))).metadata.row_group(0)
        out[f.rows] = {meta.column(i).compression for i in range(meta.num_columns)}
    return out


def test_small_files_are_written_with_snappy_and_large_ones_with_the_configured_codec(store):
    h = Harness(store, TopicSettings(key_partitioning="none", time_granularity="day", small_file_rows=100))
    h.sink.assign("t", 0)
    h.sink.ingest("t", 0, messages(99))
    h.sink.flush("t", 0, Rotation.END)
    h.sink.ingest("t", 0, messages(199)[99:])
    h.sink.flush("t", 0, Rotation.END)
    assert codecs(store) == {99: {"SNAPPY"}, 100: {"ZSTD"}}
    assert archived(store) == [(0, o) for o in range(199)]


def test_small_file_rows_zero_keeps_the_configured_codec(store):
    h = Harness(store, TopicSettings(key_partitioning="none", time_granularity="day", small_file_rows=0))
    h.sink.assign("t", 0)
    h.sink.ingest("t", 0, messages(10))
    h.sink.flush("t", 0, Rotation.END)
    assert codecs(store) == {10: {"ZSTD"}}
