"""`archiver status` and `archiver verify` against archives written by the real `archiver run`."""

from __future__ import annotations

import json
import subprocess

from confluent_kafka import Consumer, TopicPartition

from archiver import audit, demo, layout
from archiver.archive import Archive
from archiver.config import KafkaSettings
from archiver.ledger import Entry, FileEntry
from archiver.source import kafka as source_kafka
from archiver.store import open_store
from tests.integration.conftest import ARCHIVER, archive_demo, archiver


def status_json(env: dict, topic: str) -> tuple[int, dict]:
    result = archiver(env, "status", "--topics", topic, "--format", "json")
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def watermarks(kafka: KafkaSettings, topic: str, partitions: int) -> list[tuple[int, int]]:
    consumer = Consumer(kafka.client_config() | {"group.id": "status-test"})
    try:
        return [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in range(partitions)]
    finally:
        consumer.close()


def delete_records_before(kafka: KafkaSettings, topic: str, partition: int, offset: int) -> None:
    """Move the log-start offset forward, as retention would, deterministically."""
    client = source_kafka.admin(kafka)
    futures = client.delete_records([TopicPartition(topic, partition, offset)], request_timeout=30)
    for future in futures.values():
        assert future.result(30).low_watermark == offset


def test_status_of_a_freshly_archived_topic_is_healthy(archived_demo, kafka):
    code, doc = status_json(archived_demo.env, archived_demo.topic)
    assert code == 0 and doc["healthy"] and doc["alarms"] == [] and doc["never_archived"] == []
    ends = watermarks(kafka, archived_demo.topic, archived_demo.partitions)
    assert [p["partition"] for p in doc["partitions"]] == list(range(archived_demo.partitions))
    for p, (low, high) in zip(doc["partitions"], ends):
        assert p["ranges"] == [{"start": 0, "end": high}]
        assert (p["log_start"], p["end_offset"], p["frontier"], p["lag"], p["lost"]) == (low, high, high, 0, None)
        assert p["group_offset"] == high  # run --once commits the group offset after the ledger
        assert p["files"] > 0 and p["bytes"] > 0 and p["last_commit_at"].endswith("Z")
    assert sum(p["records"] for p in doc["partitions"]) == archived_demo.records
    table = archiver(archived_demo.env, "status", "--topics", archived_demo.topic)
    assert table.returncode == 0 and "0 alarm(s) (healthy)" in table.stdout.splitlines()[-1]


def test_status_reports_lag_then_alarms_when_retention_deletes_unarchived_records(services, kafka, registry,
                                                                                   unique):
    archived = archive_demo(services, unique, records=900)
    frontiers = [high for _, high in watermarks(kafka, unique, 3)]
    demo.produce(kafka, registry, unique, 300, partitions=3, start_ms=archived.start_ms)
    code, doc = status_json(archived.env, unique)
    ends = [high for _, high in watermarks(kafka, unique, 3)]
    assert code == 0 and doc["healthy"]
    assert [p["lag"] for p in doc["partitions"]] == [e - f for e, f in zip(ends, frontiers)]
    assert sum(p["lag"] for p in doc["partitions"]) == 300

    delete_records_before(kafka, unique, 0, frontiers[0] + 7)  # 7 records never archived
    code, doc = status_json(archived.env, unique)
    first, last = frontiers[0], frontiers[0] + 6
    assert code == 1 and not doc["healthy"]
    assert doc["partitions"][0]["lost"] == {"first": first, "last": last, "count": 7}
    assert doc["partitions"][0]["lag"] == ends[0] - frontiers[0] - 7
    assert doc["alarms"] == [(f"{unique}[0] records lost: offsets {first}..{last} (7) were deleted from Kafka "
                             f"(log-start offset {last + 1}) before they were archived")]
    assert [p["alarms"] for p in doc["partitions"][1:]] == [[], []]
    table = archiver(archived.env, "status", "--topics", unique)
    assert table.returncode == 1 and f"ALARM {unique}[0] records lost: offsets {first}..{last} (7)" in table.stdout


def test_status_alarms_for_a_trimmed_partition_never_archived(services, kafka, registry, archive_env, unique):
    demo.produce(kafka, registry, f"{unique}-other", 5, partitions=1)  # the archive exists: another topic is in it
    assert archiver(archive_env, "run", "--once", "--topics", f"{unique}-other").returncode == 0
    demo.produce(kafka, registry, unique, 40, partitions=1)
    delete_records_before(kafka, unique, 0, 4)
    code, doc = status_json(archive_env, unique)
    assert code == 1 and doc["never_archived"] == [{"topic": unique, "partition": 0}]
    assert doc["partitions"][0]["lost"] == {"first": 0, "last": 3, "count": 4}
    assert doc["partitions"][0]["lag"] == 36


def test_status_of_a_prefix_with_no_archive_is_bad_input_not_a_healthy_archive(archived_demo):
    mistyped = archived_demo.env | {"ARCHIVER_ARCHIVE_URL": archived_demo.url + "-typo"}
    for args in (["status"], ["status", "--topics", archived_demo.topic], ["verify"], ["compact"]):
        result = archiver(mistyped, *args)
        assert result.returncode == 2, (args, result.stdout)
        assert result.stderr == (f"archiver: error: no archive at {archived_demo.url}-typo/: nothing under "
                                 "_ledger/ or topic=*/ (a mistyped bucket or prefix?)\n")


def test_status_into_a_closed_pipe_ends_quietly_with_exit_0(archived_demo):
    import os

    read, write = os.pipe()
    proc = subprocess.Popen([ARCHIVER, "status", "--topics", archived_demo.topic], stdout=write,
                            stderr=subprocess.PIPE, env=archived_demo.env)
    os.close(write)
    os.close(read)  # `archiver status | head -0`: the reader left before the table was written
    _, stderr = proc.communicate(timeout=120)
    assert (proc.returncode, stderr) == (0, b"")


def test_status_of_an_unknown_topic_is_bad_input(archived_demo):
    result = archiver(archived_demo.env, "status", "--topics", "no-such-topic-anywhere")
    assert result.returncode == 2
    assert result.stderr.startswith("archiver: error: topic 'no-such-topic-anywhere' is neither in the archive")


def archive_three_times(services, kafka, registry, name: str):
    """A private demo archive whose partitions each hold three commits."""
    archived = archive_demo(services, name, records=900)
    for _ in range(2):
        demo.produce(kafka, registry, name, 150, partitions=3, start_ms=archived.start_ms)
        result = archiver(archived.env, "run", "--once", "--topics", name)
        assert result.returncode == 0, result.stderr[-3000:]
    return archived


def commits(archive: Archive, topic: str, partition: int) -> list[Entry]:
    return [e for e in archive.entries(topic, partition) if e.kind == "commit"]


def test_verify_passes_on_a_clean_archive_and_pins_each_injected_fault(services, kafka, registry, unique):
    archived = archive_three_times(services, kafka, registry, unique)
    store = open_store(archived.url)
    archive = Archive(store)
    clean = archiver(archived.env, "verify")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert clean.stdout.strip().endswith("0 problem(s), 0 orphan(s)")

    # partition 0: a ledger entry vanishes -> a gap; its files become orphans
    before, lost, after = commits(archive, unique, 0)
    store.delete(layout.ledger_key(unique, 0, lost.seq))
    # partition 1: an extra entry repeats the first commit's range with a copy of one of its files
    first = commits(archive, unique, 1)[0]
    original = first.files[0]
    copy_key = original.key.replace(".parquet", "-copy.parquet")
    store.put(copy_key, store.get(original.key))
    head = archive.entries(unique, 1)[-1]
    repeat = Entry(head.seq + 1, head.epoch, "commit", first.start, first.end,
                   [FileEntry(**{**original.__dict__, "key": copy_key})], records=original.rows)
    store.put(layout.ledger_key(unique, 1, repeat.seq), repeat.to_json(), if_absent=True)
    # partition 2: one file overwritten with other bytes, another deleted
    corrupted, deleted = commits(archive, unique, 2)[0].files[:2]
    data = bytearray(store.get(corrupted.key))
    data[100:110] = bytes(10)
    store.put(corrupted.key, bytes(data))
    store.delete(deleted.key)

    report = audit.verify(archive, [unique])
    found = {(p.partition, p.kind, p.where) for p in report.problems}
    assert (0, "gap", f"offsets {lost.start}..{lost.end - 1}") in found
    assert (1, "overlap", f"offsets {first.start}..{first.end - 1}") in found
    assert (1, "duplicate", f"file {copy_key}") in found
    assert (2, "sha256", f"file {corrupted.key}") in found
    assert (2, "missing", f"file {deleted.key}") in found
    assert {p.kind for p in report.problems} <= {"gap", "overlap", "duplicate", "sha256", "unreadable", "missing"}
    assert sorted(o.key for o in report.orphans) == sorted(f.key for f in lost.files)

    result = archiver(archived.env, "verify", "--topics", unique)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert f"problem: {unique}[0] offsets {lost.start}..{lost.end - 1}: gap: covered by no live entry " \
           f"(seq {before.seq} ends at {lost.start}, seq {after.seq} starts at {lost.end})" in lines
    assert any(line.startswith(f"problem: {unique}[2] file {deleted.key}: missing (offsets") for line in lines)
    assert any(line.startswith(f"problem: {unique}[2] file {corrupted.key}: sha256 ") for line in lines)
    assert any(line.startswith(f"problem: {unique}[1] file {copy_key}: duplicate: ") for line in lines)
    assert sum(line.startswith(f"warning: {unique} orphan object ") for line in lines) == len(lost.files)
    assert lines[-1].endswith(f"{len(report.problems)} problem(s), {len(lost.files)} orphan(s)")

    quick = archiver(archived.env, "verify", "--quick")
    assert quick.returncode == 1
    assert f"problem: {unique}[2] file {deleted.key}" in quick.stdout and corrupted.key not in quick.stdout


def test_records_retention_deleted_before_a_run_are_recorded_and_reported(services, kafka, registry, archive_env,
                                                                          unique):
    demo.produce(kafka, registry, unique, 50, partitions=1)
    run = [ARCHIVER, "run", "--once", "--topics", unique]
    assert subprocess.run(run, env=archive_env, capture_output=True).returncode == 0
    demo.produce(kafka, registry, unique, 50, partitions=1)
    delete_records_before(kafka, unique, 0, 80)  # offsets 50..79 go before the next run reads them

    result = subprocess.run([*run, "--format", "json"], env=archive_env, capture_output=True, text=True)

    assert result.returncode == 1, result.stderr[-2000:]  # a batch run that lost records is not a success
    assert "offsets 50..79 (30 records) were deleted by Kafka (retention) before they were archived" in result.stderr
    assert "archiver: error: 30 records were deleted by Kafka (retention) before they could be archived" \
        in result.stderr
    summary = json.loads(result.stdout)
    assert (summary["records_out"], summary["lost"]) == (20, 30)
    archive = Archive(open_store(archive_env["ARCHIVER_ARCHIVE_URL"]))
    (last,) = [e for e in archive.entries(unique, 0) if e.kind == "commit"][-1:]
    assert (last.start, last.end, last.records, last.lost) == (50, 100, 20, [[50, 80]])
    verify = archiver(archive_env, "verify", "--topics", unique)
    assert verify.returncode == 1
    assert f"{unique}[0] offsets 50..79: lost: 30 record(s) deleted by Kafka (retention)" in verify.stdout
    code, doc = status_json(archive_env, unique)
    assert code == 1 and any("records lost: offsets 50..79 (30)" in a for a in doc["alarms"])


def test_a_long_ledger_is_read_through_its_checkpoint(services, kafka, registry, archive_env, unique, tmp_path):
    from archiver.ledger import CHECKPOINT_EVERY, PartitionLedger
    from tests.integration.test_run import START_MS, run_archiver, write_config

    # blocks of 4 records, the writer schema changing from block to block: each change rotates,
    # so one `run --once` commits well over CHECKPOINT_EVERY times
    v2 = dict(demo.SCHEMA, fields=demo.SCHEMA["fields"] + [
        {"name": "experiment", "type": ["null", "string"], "default": None}])
    ids = [registry.register(f"{unique}-value", demo.SCHEMA), registry.register(f"{unique}-value", v2)]
    source_kafka.ensure_topic(kafka, unique, 1)
    producer = source_kafka.producer(kafka)
    for i, e in enumerate(demo.events(1000, START_MS, 1000)):
        v2_block = i // 4 % 2
        value = demo.encode(e.value, ids[v2_block]) + b"\x00" * v2_block  # v2 appends a null "experiment"
        producer.produce(unique, value, e.key, timestamp=e.timestamp_ms)
    source_kafka.flush(producer)
    env = archive_env | {"ARCHIVER_CONFIG": write_config(tmp_path, key_buckets=1)}
    run_archiver(env, "--once", "--topics", unique)

    store = open_store(env["ARCHIVER_ARCHIVE_URL"])
    ledger = PartitionLedger(store, unique, 0)
    everything = Archive(store).entries(unique, 0)
    assert len(everything) > CHECKPOINT_EVERY
    newest = len(everything) // CHECKPOINT_EVERY * CHECKPOINT_EVERY
    assert ledger.checkpoint_seqs()[-1] == newest, [(e.seq, e.kind, e.writer) for e in everything[95:110]]
    view = ledger.view()
    assert view.read == len(everything) - newest  # the entries after the checkpoint, not all of them
    assert view.live == [e for e in everything if e.kind == "commit"]
    code, doc = status_json(env, unique)
    assert code == 0 and doc["partitions"][0]["records"] == 1000
    plan = json.loads(archiver(env, "replay", "--topic", unique, "--to-topic", unique, "--dry-run").stdout)
    assert plan["records_at_most"] == 1000
    assert archiver(env, "verify", "--topics", unique).returncode == 0

    key = layout.checkpoint_key(unique, 0, newest)  # a checkpoint that lies is found out
    doc = json.loads(store.get(key))
    doc["live"] = doc["live"][1:]
    store.put(key, json.dumps(doc).encode())
    result = archiver(env, "verify", "--topics", unique)
    assert result.returncode == 1
    assert f"{unique}[0] checkpoint seq {newest}: disagrees with the ledger entries" in result.stdout
