"""`verify` and `status` logic on a local archive built by hand, and the CLI's exit codes."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from archiver import audit, layout
from archiver import status as status_mod
from archiver.archive import Archive
from archiver.cli import cli
from archiver.config import KafkaSettings, RunSettings
from archiver.errors import ConfigError
from archiver.ledger import Entry, FileEntry
from archiver.status import KafkaOffsets, partition_status
from archiver.store import open_store

T = "events"


def parquet(partition: int, offsets: list[int], partitions: list[int] | None = None) -> bytes:
    table = pa.table({"value": [f"v{o}" for o in offsets],
                      "_kafka_partition": pa.array(partitions or [partition] * len(offsets), pa.int32()),
                      "_kafka_offset": pa.array(offsets, pa.int64())})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


class Builder:
    """Writes Parquet files and ledger entries the way the sink does, so tests can bend one thing."""

    def __init__(self, store):
        self.store = store
        self.seq: dict[int, int] = {}

    def file(self, partition: int, offsets: list[int], name: str, data: bytes | None = None) -> FileEntry:
        data = data if data is not None else parquet(partition, offsets)
        key = f"topic={T}/dt=2025-11-24/hour=16/key_bucket=0{name}/{T}+{partition}+{min(offsets):020d}+0000000001.parquet"
        self.store.put(key, data)
        return FileEntry(key, len(offsets), len(data), hashlib.sha256(data).hexdigest(), min(offsets), max(offsets),
                         None, None, [1])

    def entry(self, partition: int, start: int, end: int, files: list[FileEntry], kind: str = "commit",
              replaces: tuple[int, ...] = (), records: int | None = None, dead_lettered: int = 0) -> Entry:
        seq = self.seq.get(partition, 0) + 1
        self.seq[partition] = seq
        entry = Entry(seq, 1, kind, start, end, files, records=sum(f.rows for f in files) if records is None else
                      records, dead_lettered=dead_lettered, replaces=list(replaces), committed_at=1_764_000_000.0)
        self.store.put(layout.ledger_key(T, partition, seq), entry.to_json(), if_absent=True)
        return entry


@pytest.fixture
def store(tmp_path):
    return open_store(f"file://{tmp_path}")


@pytest.fixture
def built(store) -> Builder:
    """Partition 0: offsets 0..99 in two commits, each with two interleaved files; partition 1: 0..9."""
    b = Builder(store)
    b.entry(0, None, None, [], kind="claim")
    b.entry(0, 0, 50, [b.file(0, list(range(0, 50, 2)), "0"), b.file(0, list(range(1, 50, 2)), "1")])
    b.entry(0, 50, 100, [b.file(0, list(range(50, 100, 2)), "0"), b.file(0, list(range(51, 100, 2)), "1")])
    b.entry(1, 0, 10, [b.file(1, list(range(10)), "0")])
    return b


def kinds(report: audit.Report) -> list[tuple[int, str]]:
    return sorted((p.partition, p.kind) for p in report.problems)


def test_a_clean_archive_verifies_with_counts(store, built):
    for quick in (False, True):
        report = audit.verify(Archive(store), quick=quick)
        assert report.ok and report.problems == [] and report.orphans == []
        assert (report.topics, report.partitions, report.entries, report.files, report.rows) == (1, 2, 3, 5, 110)
    assert "0 problem(s), 0 orphan(s)" in report.summary()


def test_a_hole_between_entries_is_a_gap_naming_the_offsets(store, built):
    built.entry(0, 120, 130, [built.file(0, list(range(120, 130)), "2")])
    report = audit.verify(Archive(store))
    assert kinds(report) == [(0, "gap")]
    assert str(report.problems[0]).startswith(f"{T}[0] offsets 100..119: gap: covered by no live entry")


def test_overlapping_entries_and_a_repeated_file_are_duplicates(store, built):
    copy = built.file(0, list(range(40, 50)), "7")
    built.entry(0, 40, 100, [copy], records=10)
    report = audit.verify(Archive(store))
    assert kinds(report) == [(0, "duplicate"), (0, "overlap"), (0, "overlap")]
    overlaps = [str(p) for p in report.problems if p.kind == "overlap"]
    assert overlaps == [f"{T}[0] offsets 40..49: duplicate: entries seq 2 [0, 50) and seq 4 [40, 100) overlap",
                        f"{T}[0] offsets 50..99: duplicate: entries seq 4 [40, 100) and seq 3 [50, 100) overlap"]
    duplicate = next(p for p in report.problems if p.kind == "duplicate")
    assert duplicate.where == f"file {copy.key}" and "offsets 40..49 (10) already in another row" in duplicate.what


def test_offsets_repeated_across_files_of_one_entry_are_duplicates(store, built):
    built.entry(1, 10, 20, [built.file(1, [10, 11, 12], "0"), built.file(1, [12, 13], "1")])
    report = audit.verify(Archive(store))
    assert kinds(report) == [(1, "duplicate")]
    assert "offset 12 (1) already in another row" in report.problems[0].what


def test_a_corrupted_file_fails_its_checksum_and_reading(store, built):
    f = built.file(1, list(range(20, 30)), "3")
    built.entry(1, 10, 30, [f])
    data = bytearray(store.get(f.key))
    data[len(data) // 2:len(data) // 2 + 8] = b"\xff" * 8
    store.put(f.key, bytes(data))
    report = audit.verify(Archive(store))
    assert {k for _, k in kinds(report)} >= {"sha256"}
    assert all(p.where == f"file {f.key}" for p in report.problems)
    store.put(f.key, b"not parquet")
    assert kinds(audit.verify(Archive(store))) == [(1, "sha256"), (1, "size"), (1, "unreadable")]


def test_a_missing_file_is_found_with_and_without_data(store, built):
    f = built.file(1, list(range(10, 20)), "3")
    built.entry(1, 10, 20, [f])
    store.delete(f.key)
    for quick in (False, True):
        report = audit.verify(Archive(store), quick=quick)
        assert [str(p) for p in report.problems] == [f"{T}[1] file {f.key}: missing (offsets 10..19, 10 rows)"]


def test_rows_that_contradict_their_ledger_are_reported(store, built):
    bad = parquet(1, [13, 12, 40, 13], partitions=[1, 1, 3, 1])
    f = built.file(1, [12, 13, 14, 15], "4", data=bad)  # the ledger says 12..15, four rows
    built.entry(1, 10, 20, [f])
    problems = {p.kind: p.what for p in audit.verify(Archive(store)).problems}
    assert set(problems) == {"partition", "order", "duplicate", "range"}
    assert problems["partition"] == "1 row(s) have _kafka_partition 3, not 1"
    assert problems["order"] == "_kafka_offset not ascending at row 1 (13 then 12)"
    assert problems["range"] == "offset 40 (1) outside its ledger range 12..15"


def test_counts_and_file_ranges_are_checked_against_the_entry(store, built):
    built.entry(1, 10, 15, [built.file(1, list(range(10, 20)), "5")], records=3, dead_lettered=1)
    problems = [p.what for p in audit.verify(Archive(store)).problems]
    assert "counts 3 records but its files hold 10 rows" in problems
    assert "10 rows + 1 dead-lettered exceed its 5 offsets" in problems
    assert any("offsets 10..19 lie outside its entry seq 2 [10, 15)" in p for p in problems)


def test_orphans_exclude_replaced_and_in_flight_files(store, built):
    stray = f"topic={T}/dt=2025-11-24/hour=16/key_bucket=09/{T}+0+00000000000000000999+0000000009.parquet"
    store.put(stray, b"zombie upload")
    in_flight = f"topic={T}/dt=2025-11-24/hour=16/key_bucket=09/{T}+1+00000000000000000010+0000000002.parquet"
    store.put(in_flight, b"uploading")
    store.put(layout.intent_key(T, 1, 2, 2), json.dumps({"files": [in_flight]}).encode())
    merged = built.file(0, list(range(100)), "8")
    built.entry(0, 0, 100, [merged], kind="compaction", replaces=(2, 3))
    report = audit.verify(Archive(store))
    assert report.ok
    assert [str(o) for o in report.orphans] == [f"{T} orphan object {stray}: referenced by no ledger entry"]
    assert report.files == 2  # the compacted file and partition 1's; replaced files are not live


def test_an_unknown_topic_is_bad_input(store, built):
    with pytest.raises(ConfigError, match="'nope' is not in the archive"):
        audit.verify(Archive(store), ["nope"])


def test_quick_compares_the_listed_sizes_with_the_ledger(store, built):
    f = next(audit.read_ledger(Archive(store), T, 1)[1][0].files.__iter__())
    store.put(f.key, store.get(f.key) + b"x")
    report = audit.verify(Archive(store), quick=True)
    assert [p.kind for p in report.problems] == ["size"]


def test_seen_offsets_find_repeats_across_chunks():
    seen = audit.SeenOffsets()
    first = np.array([0, 7, 8, (1 << 23) - 1, 1 << 23, 5 << 23], dtype=np.int64)
    assert len(seen.add(first)) == 0
    again = seen.add(np.array([1, 8, 1 << 23, (5 << 23) + 1], dtype=np.int64))
    assert again.tolist() == [8, 1 << 23]


def test_offsets_are_described_as_runs():
    assert audit.describe_offsets(np.array([1, 2, 3, 7])) == "offsets 1..3, 7 (4)"
    many = np.arange(0, 40, 2)
    assert audit.describe_offsets(many).endswith("and 15 more runs (20)")


# --- the CLI ------------------------------------------------------------------------------------


def test_verify_exits_1_on_a_problem_and_orphans_only_with_strict(tmp_path, store, built):
    runner = CliRunner()
    url = f"file://{tmp_path}"
    ok = runner.invoke(cli, ["verify", "--archive-url", url])
    assert ok.exit_code == 0 and "0 problem(s)" in ok.output
    store.put(f"topic={T}/stray.parquet", b"x")
    warned = runner.invoke(cli, ["verify", "--archive-url", url])
    assert warned.exit_code == 0 and f"warning: {T} orphan object topic={T}/stray.parquet" in warned.output
    assert runner.invoke(cli, ["verify", "--archive-url", url, "--strict"]).exit_code == 1
    built.entry(1, 20, 30, [])
    failed = runner.invoke(cli, ["verify", "--archive-url", url, "--quick"])
    assert failed.exit_code == 1
    assert f"problem: {T}[1] offsets 10..19: gap" in failed.output


def test_verify_bad_input_is_one_line_with_exit_2(tmp_path, built):
    result = CliRunner().invoke(cli, ["verify", "--archive-url", f"file://{tmp_path}", "--topics", "nope"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [(f"archiver: error: topic 'nope' is not in the archive at "
                                                  f"file://{tmp_path}/")]


# --- status ---------------------------------------------------------------------------------------


def commit(seq: int, start: int, end: int, records: int = 0, at: float = 0.0) -> Entry:
    return Entry(seq, 1, "commit", start, end, [], records=records, committed_at=at)


def last_commit_at(entries: list[Entry]) -> float | None:
    return max((e.committed_at for e in entries if e.kind == "commit"), default=None)


def test_status_of_a_partition_archived_to_kafkas_end_is_healthy():
    entries = [commit(2, 0, 60, 60, at=100.0), commit(3, 60, 100, 40, at=200.0)]
    s = partition_status(T, 0, entries, last_commit_at(entries), KafkaOffsets(0, 100, 100))
    assert (s.ranges, s.records, s.frontier, s.lag, s.lost, s.alarms) == ([(0, 100)], 100, 100, 0, None, [])
    assert s.last_commit_at == 200.0


def test_status_reports_lag_without_alarm():
    entries = [commit(2, 0, 60)]
    s = partition_status(T, 0, entries, last_commit_at(entries), KafkaOffsets(0, 75, 60))
    assert (s.lag, s.alarms) == (15, [])


def test_retention_past_the_frontier_is_an_alarm_naming_the_lost_offsets():
    entries = [commit(2, 0, 60)]
    s = partition_status(T, 0, entries, last_commit_at(entries), KafkaOffsets(70, 90, 60))
    assert s.lost == (60, 69) and s.lag == 20
    assert s.alarms == [("records lost: offsets 60..69 (10) were deleted from Kafka (log-start offset 70) "
                        "before they were archived")]


def test_a_never_archived_partition_owes_the_whole_log_unless_the_group_committed():
    trimmed = partition_status(T, 1, [], None, KafkaOffsets(5, 9, None))
    assert trimmed.notes == ["never archived"] and trimmed.lost == (0, 4) and trimmed.lag == 4
    resumed = partition_status(T, 1, [], None, KafkaOffsets(5, 9, 6))
    assert (resumed.lost, resumed.lag, resumed.alarms) == (None, 3, [])
    empty = partition_status(T, 1, [], None, KafkaOffsets(0, 0, None))
    assert empty.alarms == []


def test_an_archive_ahead_of_kafka_or_with_a_hole_is_an_alarm():
    entries = [commit(2, 0, 60), commit(4, 70, 90)]
    s = partition_status(T, 0, entries, last_commit_at(entries), KafkaOffsets(0, 50, None))
    assert s.ranges == [(0, 60), (70, 90)]
    assert s.alarms[0] == "offsets 60..69 are in no ledger entry (run archiver verify)"
    assert s.alarms[1].startswith("archive frontier 90 is beyond Kafka's end offset 50")


def test_status_without_kafka_data_has_no_alarm():
    s = partition_status(T, 0, [commit(2, 0, 10)], None, None)
    assert (s.lag, s.alarms) == (None, [])


def settings(**kw) -> RunSettings:
    return RunSettings(kafka=KafkaSettings("k:9092"), archive_url="file:///a", **kw)


def test_status_topics_default_to_archived_and_configured_ones():
    kafka = {"a": 1, "web-1": 2, "web-2": 1, "__consumer_offsets": 50, "other": 1}
    assert status_mod.select_topics(None, settings(topics=("a", "gone")), ["old"], kafka) == ["a", "old"]
    assert status_mod.select_topics(None, settings(topic_pattern="web-.*"), [], kafka) == ["web-1", "web-2"]
    assert status_mod.select_topics(["old", "other"], settings(), ["old"], kafka) == ["old", "other"]
    with pytest.raises(ConfigError, match="'nope' is neither in the archive"):
        status_mod.select_topics(["nope"], settings(), ["old"], kafka)


def test_status_settings_need_neither_topics_nor_a_registry():
    env = {"ARCHIVER_KAFKA_BOOTSTRAP_SERVERS": "k:9092", "ARCHIVER_ARCHIVE_URL": "file:///a"}
    loaded = status_mod.load_settings(None, {"group_id": "g"}, env)
    assert (loaded.topics, loaded.group_id, loaded.archive_url) == ((), "g", "file:///a")
    assert status_mod.load_settings(None, {}, env | {"ARCHIVER_TOPICS": "x,y"}).topics == ("x", "y")
    with pytest.raises(ConfigError, match="archive.url is not set"):
        status_mod.load_settings(None, {}, {"ARCHIVER_KAFKA_BOOTSTRAP_SERVERS": "k:9092"})


def test_status_table_shows_ranges_alarms_and_a_summary():
    entries = [commit(2, 0, 60, 60, at=1_764_000_000.0)]
    report = status_mod.StatusReport("archiver", [
        partition_status(T, 0, entries, last_commit_at(entries), KafkaOffsets(70, 90, 60)),
        partition_status(T, 1, [], None, KafkaOffsets(0, 0, None)),
    ])
    table = status_mod.render_table(report).splitlines()
    assert table[1].split() == [T, "0", "0..59", "60", "0", "0", "2025-11-24T16:00:00Z", "60", "70", "90", "20",
                                "ALARM"]
    assert table[2].split()[-2:] == ["never", "archived"]
    assert table[3].startswith(f"ALARM {T}[0] records lost: offsets 60..69 (10)")
    assert table[4] == "2 partition(s) of 1 topic(s), group 'archiver': 1 never archived, lag 20, 1 alarm(s)"
    doc = report.to_dict()
    assert doc["healthy"] is False and doc["never_archived"] == [{"topic": T, "partition": 1}]
    assert doc["partitions"][0]["lost"] == {"first": 60, "last": 69, "count": 10}
