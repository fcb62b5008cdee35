"""`archiver run` end to end: real Kafka, real registry, real S3."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc

from archiver import demo, layout
from archiver.archive import Archive
from archiver.config import KafkaSettings
from archiver.source import kafka as source_kafka
from archiver.store import open_store

ARCHIVER = str(Path(sys.executable).parent / "archiver")
START_MS = 1_764_000_000_000  # 2025-11-24T16:00:00Z


def run_archiver(env: dict, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run([ARCHIVER, "-v", "run", *args], capture_output=True, text=True, env=env, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"archiver run failed ({result.returncode}): {result.stderr[-3000:]}")
    return result


def source_offsets(kafka: KafkaSettings, topic: str) -> dict[int, set[int]]:
    offsets = collections.defaultdict(set)
    for m in source_kafka.read_to_end(kafka, topic):
        offsets[m.partition()].add(m.offset())
    return offsets


def assert_exactly_once(archive: Archive, topic: str, expected: dict[int, set[int]]) -> None:
    table = archive.read_topic(topic)
    seen = collections.Counter(zip(table["_kafka_partition"].to_pylist(), table["_kafka_offset"].to_pylist()))
    duplicates = [k for k, n in seen.items() if n > 1]
    assert not duplicates, f"duplicated offsets: {duplicates[:10]}"
    want = {(p, o) for p, offs in expected.items() for o in offs}
    missing = sorted(want - set(seen))
    assert not missing, f"{len(missing)} offsets missing, e.g. {missing[:10]}"
    assert set(seen) == want
    for p in expected:  # ledger ranges chain without gaps
        commits = [e for e in archive.entries(topic, p) if e.kind == "commit"]
        for before, after in zip(commits, commits[1:]):
            assert after.start == before.end


def test_run_once_archives_every_record_of_several_topics(services, kafka, registry, archive_env, unique):
    topics = [f"{unique}-a", f"{unique}-b"]
    for i, topic in enumerate(topics):
        demo.produce(kafka, registry, topic, 3000 + i * 500, partitions=3, start_ms=START_MS, span_ms=3 * 3600_000)

    result = run_archiver(archive_env, "--once", "--topics", ",".join(topics))
    assert "archived 6500 records (0 dead-lettered)" in result.stdout

    archive = Archive(open_store(archive_env["ARCHIVER_ARCHIVE_URL"]))
    assert archive.topics() == sorted(topics)
    for i, topic in enumerate(topics):
        assert_exactly_once(archive, topic, source_offsets(kafka, topic))
        table = archive.read_topic(topic)
        originals = {str(e.value["event_id"]): e for e in demo.events(3000 + i * 500, START_MS, 3 * 3600_000)}
        for row in table.slice(0, 200).to_pylist():
            event = originals[row["event_id"]]
            assert row["_kafka_key"] == event.key
            assert [(h["key"], h["value"]) for h in row["_kafka_headers"]] == event.headers
            assert int(row["_kafka_timestamp"].timestamp() * 1000) == event.timestamp_ms
            assert row["_kafka_timestamp_type"] == "CreateTime"
            assert row["device"] == event.value["device"] and row["tags"] == event.value["tags"]
        for f in archive.files(topic):  # layout: the file's directories match its rows
            key = layout.parse_data_key(f.key)
            dirs = key.partition_values()
            assert set(dirs) == {"dt", "hour", "key_bucket"}
            rows = archive.read(f)
            stamps = pc.cast(rows["_kafka_timestamp"], "int64").to_pylist()
            assert {layout.time_path(layout.time_bucket(t, layout.Granularity.HOUR), layout.Granularity.HOUR)
                    for t in stamps} == {f"dt={dirs['dt']}/hour={dirs['hour']}"}
            assert {layout.key_bucket(k, 16) for k in rows["_kafka_key"].to_pylist()} == {int(dirs["key_bucket"])}
            assert rows["_kafka_offset"].to_pylist() == sorted(rows["_kafka_offset"].to_pylist())

    again = run_archiver(archive_env, "--once", "--topics", ",".join(topics))
    assert "archived 0 records" in again.stdout  # resumes at the ledger's end: nothing twice


def test_run_once_into_a_new_archive_where_the_group_already_committed_the_end_exits(services, kafka, registry,
                                                                                     archive_env, unique):
    """An empty ledger starts from the group's committed offsets; when those are already the end
    there is nothing to consume, and --once must see that instead of waiting for a record."""
    demo.produce(kafka, registry, unique, 40, partitions=2, start_ms=START_MS, span_ms=60_000)
    assert "archived 40 records" in run_archiver(archive_env, "--once", "--topics", unique).stdout
    elsewhere = archive_env | {"ARCHIVER_ARCHIVE_URL": archive_env["ARCHIVER_ARCHIVE_URL"] + "-elsewhere"}
    result = run_archiver(elsewhere, "--once", "--topics", unique, timeout=60)
    assert "archived 0 records" in result.stdout
    assert "starting at the earliest offset" not in result.stderr  # from the group's offsets, at the end


def write_config(tmp_path, **defaults) -> str:
    lines = ["[defaults]"] + [f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {v}" for k, v in defaults.items()]
    path = tmp_path / "archiver.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_kill_9_at_random_moments_loses_and_duplicates_nothing(services, kafka, registry, archive_env, unique,
                                                              tmp_path):
    import random
    import signal
    import time

    rng = random.Random(os.environ.get("ARCHIVER_CRASH_SEED", "42"))
    trials = int(os.environ.get("ARCHIVER_CRASH_TRIALS", "8"))
    config = write_config(tmp_path, max_records=700, interval_s=0.5)
    env = archive_env | {"ARCHIVER_CONFIG": config, "ARCHIVER_GROUP_INSTANCE_ID": "crash-test"}
    for trial in range(trials):
        demo.produce(kafka, registry, unique, 4000, partitions=3, start_ms=START_MS + trial * 4000,
                     span_ms=4000)
        proc = subprocess.Popen([ARCHIVER, "run", "--topics", unique], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, 4.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    run_archiver(env, "--once", "--topics", unique)

    archive = Archive(open_store(archive_env["ARCHIVER_ARCHIVE_URL"]))
    assert_exactly_once(archive, unique, source_offsets(kafka, unique))
    committed = {f.key for f in archive.files(unique)}
    stored = set(archive.store.list(f"topic={unique}/"))
    assert stored == committed, f"uncommitted objects left behind: {sorted(stored - committed)[:5]}"
    epochs = {e.epoch for p in archive.partitions(unique) for e in archive.entries(unique, p)}
    assert len(epochs) > trials // 2  # most restarts claimed (fenced the previous owner) before the kill


def test_poison_pills_go_to_the_dead_letter_topic_with_their_bytes(services, kafka, registry, archive_env, unique):
    demo.produce(kafka, registry, unique, 20, partitions=1, start_ms=START_MS, span_ms=1000)
    producer = source_kafka.producer(kafka)
    poison = [b"\x01not-avro", b"\x00\x00\x0f\x42\x40" + b"\x02", b"\x00" + (1).to_bytes(4, "big") + b"\x02"]
    schema_id = registry.register(f"{unique}-value", demo.SCHEMA)
    poison[2] = b"\x00" + schema_id.to_bytes(4, "big") + b"\x48"  # truncated datum
    for i, value in enumerate(poison):
        producer.produce(unique, value, f"bad-{i}".encode(), headers=[("origin", b"test")], timestamp=START_MS)
    source_kafka.flush(producer)
    demo.produce(kafka, registry, unique, 20, partitions=1, start_ms=START_MS + 2000, span_ms=1000)
    dlq = f"{unique}-dlq"
    source_kafka.ensure_topic(kafka, dlq, 1)

    result = run_archiver(archive_env | {"ARCHIVER_DLQ_TOPIC": dlq}, "--once", "--topics", unique)
    assert "archived 40 records (3 dead-lettered) from 43 consumed" in result.stdout

    dead = list(source_kafka.read_to_end(kafka, dlq))
    assert [m.value() for m in dead] == poison
    assert [m.key() for m in dead] == [b"bad-0", b"bad-1", b"bad-2"]
    headers = [dict(m.headers()) for m in dead]
    assert all(h["origin"] == b"test" and h["archiver.topic"] == unique.encode() for h in headers)
    assert [int(h["archiver.offset"]) for h in headers] == [20, 21, 22]
    assert b"magic byte" in headers[0]["archiver.error"]
    assert b"unknown schema id 1000000" in headers[1]["archiver.error"]
    assert b"truncated" in headers[2]["archiver.error"]
    archive = Archive(open_store(archive_env["ARCHIVER_ARCHIVE_URL"]))
    assert_exactly_once(archive, unique, {0: set(range(43)) - {20, 21, 22}})
    (entry,) = [e for e in archive.entries(unique, 0) if e.kind == "commit"]
    assert (entry.start, entry.end, entry.dead_lettered) == (0, 43, 3)


def test_a_dead_letter_the_broker_refuses_is_an_outage_and_nothing_is_committed_past_it(
        services, kafka, registry, archive_env, unique):
    from tests.integration.test_replay import allow_large_messages

    demo.produce(kafka, registry, unique, 5, partitions=1, start_ms=START_MS, span_ms=1000)
    producer = source_kafka.producer(kafka)
    producer.produce(unique, b"\x07garbage", b"k", timestamp=START_MS)
    source_kafka.flush(producer)
    dlq = f"{unique}-dlq"
    source_kafka.ensure_topic(kafka, dlq, 1, config={"max.message.bytes": "100"})  # smaller than the dead letter
    env = archive_env | {"ARCHIVER_DLQ_TOPIC": dlq, "ARCHIVER_OUTAGE_TIMEOUT_S": "5"}

    result = run_archiver(env, "--once", "--topics", unique, check=False)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("archiver: error: gave up after waiting 5s for the dead-letter topic"), last
    assert f"not delivered, the first to {dlq}[0] (dead letter of {unique}[0] offset 5): " in last
    archive = Archive(open_store(archive_env["ARCHIVER_ARCHIVE_URL"]))
    assert all(e.end <= 5 for e in archive.entries(unique, 0) if e.kind == "commit")

    allow_large_messages(kafka, dlq)
    result = run_archiver(env, "--once", "--topics", unique)
    assert "archived 5 records (1 dead-lettered) from 6 consumed" in result.stdout
    assert [m.value() for m in source_kafka.read_to_end(kafka, dlq)] == [b"\x07garbage"]
    assert_exactly_once(archive, unique, {0: set(range(5))})


def test_on_decode_error_fail_stops_with_one_line_and_commits_nothing_past_it(services, kafka, registry,
                                                                            archive_env, unique):
    demo.produce(kafka, registry, unique, 5, partitions=1, start_ms=START_MS, span_ms=1000)
    producer = source_kafka.producer(kafka)
    producer.produce(unique, b"\x07garbage", b"k", timestamp=START_MS)
    source_kafka.flush(producer)
    result = run_archiver(archive_env | {"ARCHIVER_ON_DECODE_ERROR": "fail"}, "--once", "--topics", unique,
                          check=False)
    assert result.returncode == 1
    assert f"archiver: error: undecodable record at {unique}[0] offset 5: unknown magic byte 0x07" in result.stderr
    archive = Archive(open_store(archive_env["ARCHIVER_ARCHIVE_URL"]))
    archived = archive.read_topic(unique)
    assert set(archived["_kafka_offset"].to_pylist() if archived.num_rows else []) <= set(range(5))
    assert all(e.end <= 5 for e in archive.entries(unique, 0) if e.kind == "commit")


def test_schema_evolution_v1_then_v2_with_an_added_field(services, kafka, registry, archive_env, unique):
    demo.produce(kafka, registry, unique, 100, partitions=2, start_ms=START_MS, span_ms=1000)
    v2 = dict(demo.SCHEMA, fields=demo.SCHEMA["fields"] + [
        {"name": "experiment", "type": ["null", "string"], "default": None}])
    v2_id = registry.register(f"{unique}-value", v2)
    import io

    import fastavro

    parsed = fastavro.parse_schema(v2)
    producer = source_kafka.producer(kafka)
    for e in demo.events(100, START_MS + 2000, 1000, seed=8):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed, dict(e.value, experiment="exp-b"))
        producer.produce(unique, b"\x00" + v2_id.to_bytes(4, "big") + buf.getvalue(), e.key, timestamp=e.timestamp_ms)
    source_kafka.flush(producer)

    run_archiver(archive_env, "--once", "--topics", unique)

    archive = Archive(open_store(archive_env["ARCHIVER_ARCHIVE_URL"]))
    assert_exactly_once(archive, unique, source_offsets(kafka, unique))
    table = archive.read_topic(unique)
    by_schema = collections.Counter(zip(table["_schema_id"].to_pylist(), table["experiment"].to_pylist()))
    v1_id = registry.register(f"{unique}-value", demo.SCHEMA)
    assert by_schema == {(v1_id, None): 100, (v2_id, "exp-b"): 100}
    assert all(len(f.schema_ids) == 1 for f in archive.files(unique))  # a schema change rotates files


def test_local_schema_mode_archives_raw_avro_without_a_registry(services, kafka, archive_env, unique, tmp_path):
    import io
    import json

    import fastavro

    schema_file = tmp_path / "page_event.avsc"
    schema_file.write_text(json.dumps(demo.SCHEMA))
    source_kafka.ensure_topic(kafka, unique, 2)
    producer = source_kafka.producer(kafka)
    events = list(demo.events(300, START_MS, 60_000))
    for e in events:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, demo.PARSED, e.value)
        producer.produce(unique, buf.getvalue(), e.key, headers=e.headers, timestamp=e.timestamp_ms)
    source_kafka.flush(producer)
    config = tmp_path / "raw.toml"
    config.write_text(f'[topics."{unique}"]\nvalue_format = "raw"\nvalue_schema_file = "{schema_file}"\n'
                      'key_format = "string"\n')
    env = {k: v for k, v in archive_env.items() if k != "ARCHIVER_SCHEMA_REGISTRY_URL"}
    result = run_archiver(env | {"ARCHIVER_CONFIG": str(config)}, "--once", "--topics", unique, check=False)
    assert result.returncode == 2 and "schema_registry.url is not set" in result.stderr  # defaults still confluent
    config.write_text(f'[defaults]\nvalue_format = "raw"\nvalue_schema_file = "{schema_file}"\nkey_format = "string"\n')

    run_archiver(env | {"ARCHIVER_CONFIG": str(config)}, "--once", "--topics", unique)

    archive = Archive(open_store(archive_env["ARCHIVER_ARCHIVE_URL"]))
    assert_exactly_once(archive, unique, source_offsets(kafka, unique))
    table = archive.read_topic(unique)
    assert sorted(table["event_id"].to_pylist()) == sorted(str(e.value["event_id"]) for e in events)
    assert set(table["_schema_id"].to_pylist()) == {-1}
    assert table["_key"].to_pylist() == [k.decode() for k in table["_kafka_key"].to_pylist()]


def test_topic_pattern_subscribes_to_matching_topics(services, kafka, registry, archive_env, unique):
    for suffix in ("x", "y"):
        demo.produce(kafka, registry, f"{unique}-{suffix}", 50, partitions=1, start_ms=START_MS, span_ms=1000)
    demo.produce(kafka, registry, f"other-{unique}", 50, partitions=1, start_ms=START_MS, span_ms=1000)
    result = run_archiver(archive_env | {"ARCHIVER_TOPIC_PATTERN": f"^{unique}-.*"}, "--once", check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    archive = Archive(open_store(archive_env["ARCHIVER_ARCHIVE_URL"]))
    assert archive.topics() == [f"{unique}-x", f"{unique}-y"]


def test_avro_keys_through_the_registry(services, kafka, registry, archive_env, unique, tmp_path):
    import io

    import fastavro

    key_schema = {"type": "record", "name": "SessionKey", "namespace": "com.example",
                  "fields": [{"name": "session", "type": "string"}]}
    key_id = registry.register(f"{unique}-key", key_schema)
    value_id = registry.register(f"{unique}-value", demo.SCHEMA)
    source_kafka.ensure_topic(kafka, unique, 2)
    producer = source_kafka.producer(kafka)
    for e in demo.events(200, START_MS, 60_000):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, fastavro.parse_schema(key_schema), {"session": e.key.decode()})
        producer.produce(unique, demo.encode(e.value, value_id), b"\x00" + key_id.to_bytes(4, "big") + buf.getvalue(),
                         timestamp=e.timestamp_ms)
    source_kafka.flush(producer)

    run_archiver(archive_env | {"ARCHIVER_CONFIG": write_config(tmp_path, key_format="avro")}, "--once",
                 "--topics", unique)

    table = Archive(open_store(archive_env["ARCHIVER_ARCHIVE_URL"])).read_topic(unique)
    assert table.num_rows == 200
    assert table["_key"].to_pylist() == [{"session": s} for s in table["session_id"].to_pylist()]
