"""`archiver compact` on archives written by `archiver run`, in real S3: kill it, replay it, race it."""

from __future__ import annotations

import collections
import json
import random
import signal
import subprocess
import time

import pyarrow as pa

from archiver import audit, demo, layout
from archiver.archive import Archive
from archiver.source import kafka as source_kafka
from archiver.store import open_store
from tests.conftest import _free_ports
from tests.integration.test_replay import fingerprint, replay
from tests.integration.test_run import ARCHIVER, START_MS, run_archiver, source_offsets
from tests.integration.test_run_resilience import metrics

SPAN_MS = 2 * 3600_000


def compact(env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    default = [] if "--closed-after" in args else ["--closed-after", "0"]  # an option given twice is an error
    result = subprocess.run([ARCHIVER, "compact", *default, *args], capture_output=True, text=True,
                            env=env, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"archiver compact failed ({result.returncode}): {result.stderr[-3000:]}")
    return result


def archive_in_rounds(kafka, registry, env: dict, topic: str, rounds: int, records: int = 400,
                      partitions: int = 2) -> None:
    """Several `run --once` over the same time window: each leaves one more small file per directory."""
    for _ in range(rounds):
        demo.produce(kafka, registry, topic, records, partitions=partitions, start_ms=START_MS, span_ms=SPAN_MS)
        run_archiver(env, "--once", "--topics", topic)


def rows(archive: Archive, topic: str) -> pa.Table:
    table = archive.read_topic(topic).replace_schema_metadata(None)
    return table.sort_by([("_kafka_partition", "ascending"), ("_kafka_offset", "ascending")])


def assert_valid(archive: Archive, topic: str, expected: dict[int, set[int]]) -> None:
    """Every archived offset exactly once, the live entries chain without gaps or overlaps, and
    `verify` finds no problem (a killed compaction may leave orphans: invisible to readers)."""
    report = audit.verify(archive, [topic])
    assert report.problems == [], [str(p) for p in report.problems]
    table = archive.read_topic(topic)
    seen = collections.Counter(zip(table["_kafka_partition"].to_pylist(), table["_kafka_offset"].to_pylist()))
    assert [k for k, n in seen.items() if n > 1] == []
    assert set(seen) == {(p, o) for p, offs in expected.items() for o in offs}
    for p in expected:
        live = archive.live_entries(topic, p)
        assert all(a.end == b.start for a, b in zip(live, live[1:])), [(e.start, e.end) for e in live]


def data_objects(archive: Archive, topic: str) -> set[str]:
    return set(archive.store.list(f"topic={topic}/"))


def live_keys(archive: Archive, topic: str) -> set[str]:
    return {f.key for f in archive.files(topic)}


def test_compaction_merges_small_files_and_keeps_every_row(kafka, registry, archive_env, unique):
    topic = f"{unique}-t"
    # 3 partitions: librdkafka's partitioner and the key buckets both hash keys with CRC-32, so with
    # 2 partitions (a divisor of 16 buckets) each directory would hold one partition's files only
    archive_in_rounds(kafka, registry, archive_env, topic, rounds=3, partitions=3)
    archive = Archive(open_store(archive_env["ARCHIVER_ARCHIVE_URL"]))
    before, files_before = rows(archive, topic), live_keys(archive, topic)
    directories = {layout.parse_data_key(k).directories for k in files_before}

    summary = json.loads(compact(archive_env, "--topics", topic, "--grace", "0").stdout.splitlines()[-1])

    files_after = live_keys(archive, topic)
    assert summary["files_in"] == len(files_before) and summary["files_out"] == len(files_after)
    # one file per directory, whatever the Kafka partition count: merged across the partitions
    per_dir = collections.Counter(layout.parse_data_key(k).directories for k in files_after)
    assert set(per_dir.values()) == {1}
    assert {layout.parse_data_key(k).directories for k in files_after} == directories
    keys = [layout.parse_data_key(k) for k in files_after]
    assert all(k.group is not None or k.compaction is not None for k in keys)  # (one partition's directory)
    assert sum(k.compaction is None for k in keys) > len(keys) / 2  # merged across partitions: no -c<seq>
    shared = [f for p in (0, 1, 2) for f in archive.files(topic, p) if f.partitions]
    assert shared and all(len(f.partitions) > 1 and f.row_groups for f in shared)
    assert rows(archive, topic).equals(before)
    # grace 0: the replaced files are gone, nothing else is left behind
    assert data_objects(archive, topic) == files_after
    assert list(archive.store.list(f"_intents/topic={topic}/")) == []
    # each partition's slice of a merged file keeps offset order and the writer schema
    for f in archive.files(topic):
        table = archive.read(f)
        offsets = table["_kafka_offset"].to_pylist()
        assert offsets == sorted(offsets) and (offsets[0], offsets[-1]) == (f.first_offset, f.last_offset)
        assert b"archiver.writer_schemas" in table.schema.metadata
    # query reads the compacted files through the ledger: same answer as before
    counts = subprocess.run([ARCHIVER, "query", f'SELECT _kafka_partition AS p, count(*) AS n FROM "{topic}" '
                             "GROUP BY 1 ORDER BY 1", "--format", "jsonl"], env=archive_env, capture_output=True,
                            text=True, check=True).stdout
    expected = collections.Counter(before["_kafka_partition"].to_pylist())
    assert [json.loads(line) for line in counts.splitlines()] == [{"p": p, "n": n} for p, n in sorted(expected.items())]
    # nothing left to do: a second run changes nothing
    again = json.loads(compact(archive_env, "--topics", topic).stdout.splitlines()[-1])
    assert again["files_in"] == 0 and live_keys(archive, topic) == files_after


def test_open_time_partitions_and_the_grace_period_are_respected(kafka, registry, archive_env, unique):
    topic = f"{unique}-t"
    archive_in_rounds(kafka, registry, archive_env, topic, rounds=2)
    archive = Archive(open_store(archive_env["ARCHIVER_ARCHIVE_URL"]))
    files_before = live_keys(archive, topic)

    summary = json.loads(compact(archive_env, "--topics", topic, "--closed-after", "3650d").stdout.splitlines()[-1])
    assert summary["files_in"] == 0 and live_keys(archive, topic) == files_before  # not closed yet

    compact(archive_env, "--topics", topic)  # default grace: replaced files stay readable for 15 minutes
    assert files_before <= data_objects(archive, topic)
    assert live_keys(archive, topic).isdisjoint(files_before)


def test_compaction_killed_at_random_moments_leaves_a_valid_archive(kafka, registry, archive_env, unique):
    topic = f"{unique}-t"
    archive = Archive(open_store(archive_env["ARCHIVER_ARCHIVE_URL"]))
    rng = random.Random(5)
    duration, killed = None, 0
    for trial in range(6):  # each trial adds small files to the same closed hours, then compacts
        archive_in_rounds(kafka, registry, archive_env, topic, rounds=1, records=300, partitions=3)
        started = time.monotonic()
        proc = subprocess.Popen([ARCHIVER, "compact", "--closed-after", "0", "--grace", "0", "--topics", topic],
                                env=archive_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if duration is None:  # the first run completes and tells how long a run takes
            proc.wait()
            duration = time.monotonic() - started
        else:
            time.sleep(rng.uniform(0.15, 0.95) * duration)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                killed += 1
            proc.wait()
        assert_valid(archive, topic, source_offsets(kafka, topic))
    assert killed >= 3

    compact(archive_env, "--topics", topic, "--grace", "0", "--stale-after", "0")
    assert any(f.partitions for p in (0, 1, 2) for f in archive.files(topic, p))  # merged across partitions

    assert_valid(archive, topic, source_offsets(kafka, topic))
    assert data_objects(archive, topic) == live_keys(archive, topic)  # crashed uploads removed
    assert list(archive.store.list(f"_intents/topic={topic}/")) == []


def test_a_compacted_archive_replays_byte_for_byte(kafka, registry, archive_env, unique):
    topic, target = f"{unique}-src", f"{unique}-dst"
    archive_in_rounds(kafka, registry, archive_env, topic, rounds=3, partitions=3)
    compact(archive_env, "--topics", topic, "--grace", "0", "--sort-by", "key")
    archive = Archive(open_store(archive_env["ARCHIVER_ARCHIVE_URL"]))
    assert audit.verify(archive, [topic]).problems == []
    assert any(f.partitions for f in archive.files(topic, 0))  # merged across partitions

    source_kafka.ensure_topic(kafka, target, 3)
    replay(archive_env, "--topic", topic, "--to-topic", target)

    source = sorted(fingerprint(m) + (m.offset(),) for m in source_kafka.read_to_end(kafka, topic))
    replayed = sorted(fingerprint(m) + (m.offset(),) for m in source_kafka.read_to_end(kafka, target))
    assert len(replayed) == len(source) == 1200
    assert replayed == source  # same partition, offset order, key, value bytes, headers, timestamp


def test_the_daemon_compacts_on_a_schedule_while_it_archives(services, kafka, registry, archive_env, unique):
    topic = f"{unique}-t"
    archive_in_rounds(kafka, registry, archive_env, topic, rounds=2, records=300)
    (port,) = _free_ports(1)
    env = archive_env | {"ARCHIVER_COMPACT_INTERVAL_S": "1", "ARCHIVER_COMPACT_CLOSED_AFTER_S": "0",
                         "ARCHIVER_COMPACT_GRACE_S": "0", "ARCHIVER_TOPICS": topic,
                         "ARCHIVER_METRICS_ADDRESS": f"127.0.0.1:{port}"}
    daemon = subprocess.Popen([ARCHIVER, "-v", "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        for _ in range(6):  # new small files land in the same closed hours while compaction runs
            demo.produce(kafka, registry, topic, 200, partitions=2, start_ms=START_MS, span_ms=SPAN_MS)
            time.sleep(1.5)
        archive = Archive(open_store(archive_env["ARCHIVER_ARCHIVE_URL"]))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            kinds = {e.kind for p in (0, 1) for e in archive.entries(topic, p)}
            if "compaction" in kinds and sum(f.rows for f in archive.files(topic)) == 600 + 1200:
                break
            time.sleep(1)
        counters = metrics(port)
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=60)
    assert daemon.returncode == 0, err[-3000:]
    assert "compacted" in err
    assert counters["archiver_compaction_runs_total"] >= 1 and counters["archiver_compaction_failures_total"] == 0
    assert counters["archiver_compaction_files_in_total"] > counters["archiver_compaction_files_out_total"] > 0
    assert_valid(archive, topic, source_offsets(kafka, topic))
    assert any(e.kind == "compaction" for p in (0, 1) for e in archive.entries(topic, p))
