"""`archiver run` end to end: real Kafka, real registry, real S3."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
import pytest

from archiver import demo, layout
from archiver.archive import Archive
from archiver.codec.registry import Registry
from archiver.config import KafkaSettings, RegistrySettings
from archiver.source import kafka as source_kafka
from archiver.store import open_store

ARCHIVER = str(Path(sys.executable).parent / "archiver")
START_MS = 1_764_000_000_000  # 2025-11-24T16:00:00Z


def run_archiver(env: dict, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run([ARCHIVER, "-v", "run", *args], capture_output=True, text=True, env=env, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"archiver run failed ({result.returncode}): {result.stderr[-3000:]}")
    return result


@pytest.fixture
def kafka(services) -> KafkaSettings:
    return KafkaSettings.from_env(services.env)


@pytest.fixture
def registry(services):
    with Registry(RegistrySettings.from_env(services.env)) as registry:
        yield registry


@pytest.fixture
def archive_env(services, unique) -> dict:
    """Environment for `archiver run` archiving into a fresh prefix of the real bucket."""
    return os.environ | services.env | {"ARCHIVER_ARCHIVE_URL": f"s3://{services.bucket}/{unique}",
                                        "ARCHIVER_GROUP_ID": f"archiver-{unique}"}


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
