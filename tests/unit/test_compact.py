"""Compaction against a file:// archive whose ledger and Parquet files are built here."""

from __future__ import annotations

import hashlib
import json
import time

import pyarrow as pa
import pytest

from archiver import compact, layout
from archiver.archive import Archive
from archiver.codec import wire
from archiver.errors import ConfigError
from archiver.ledger import Entry, FileEntry, PartitionLedger
from archiver.store import open_store
from archiver.writer import parquet
from tests.store_checks import Counting

HOUR_MS = 3_600_000
T0 = 1_764_000_000_000 - 1_764_000_000_000 % HOUR_MS  # an hour boundary in 2025: long closed
SCHEMA = json.dumps({"type": "record", "name": "R", "fields": [{"name": "n", "type": "long"}]})


@pytest.fixture
def store(tmp_path):
    return open_store(f"file://{tmp_path}")


def commit(store, ledger: PartitionLedger, start: int, end: int, hours: int = 2, first_hour: int = 0) -> Entry:
    """Commit offsets [start, end) spread over `hours` hours: one small file per hour directory."""
    files = []
    for h in range(first_hour, first_hour + hours):
        offsets = [o for o in range(start, end) if o % hours == h - first_hour]
        values = pa.table({"n": pa.array(offsets, pa.int64())})
        meta = parquet.metadata_table(ledger.partition, offsets, [(1, T0 + h * HOUR_MS + o) for o in offsets],
                                      [str(o % 7).encode() for o in offsets], [None] * len(offsets), 1)
        table = pa.Table.from_arrays(values.columns + meta.columns, values.column_names + meta.column_names)
        data = parquet.encode(table, {1: SCHEMA})
        dirs = layout.time_path(T0 + h * HOUR_MS, layout.Granularity.HOUR) + "/key_bucket=00"
        key = layout.DataKey(ledger.topic, ledger.partition, offsets[0], ledger.epoch, dirs).format()
        store.put(key, data)
        files.append(FileEntry(key, len(offsets), len(data), hashlib.sha256(data).hexdigest(), offsets[0],
                               offsets[-1], T0 + h * HOUR_MS, T0 + h * HOUR_MS + end, [1]))
    entry = Entry(ledger.head.seq + 1, ledger.epoch, "commit", start, end, files, records=end - start)
    return ledger.commit(entry)


def archived(store, commits: int = 4, per_commit: int = 50) -> PartitionLedger:
    ledger = PartitionLedger(store, "t", 0)
    ledger.claim()
    for i in range(commits):
        commit(store, ledger, i * per_commit, (i + 1) * per_commit)
    return ledger


def rows(archive: Archive) -> list[tuple[int, int]]:
    table = archive.read_topic("t")
    return sorted(zip(table["_kafka_offset"].to_pylist(), table["n"].to_pylist()))


def test_small_files_of_closed_hours_become_one_file_per_directory(store):
    archived(store)
    archive = Archive(store)
    before = rows(archive)

    report = compact.compact(archive, settings=compact.CompactSettings(grace_s=0))

    files = list(archive.files("t"))
    assert len(files) == 2 and report.totals()["files_in"] == 8 and report.totals()["files_out"] == 2
    assert rows(archive) == before
    (entry,) = archive.live_entries("t", 0)
    assert (entry.kind, entry.start, entry.end, entry.records, entry.replaces) == ("compaction", 0, 200, 200,
                                                                                    [2, 3, 4, 5])
    assert set(store.list("topic=t/")) == {f.key for f in files}  # grace 0: replaced files deleted


def test_the_writer_keeps_committing_after_a_compaction_and_a_new_owner_resumes_at_the_frontier(store):
    ledger = archived(store)
    compact.compact(Archive(store), settings=compact.CompactSettings(grace_s=0))
    commit(store, ledger, 200, 250)  # the live writer's next seq was taken: it steps over it
    assert PartitionLedger(store, "t", 0).claim().start == 250
    live = Archive(store).live_entries("t", 0)
    assert [(e.kind, e.start, e.end) for e in live] == [("compaction", 0, 200), ("commit", 200, 250)]


def test_open_hours_are_left_alone_and_compaction_entries_do_not_accumulate(store):
    ledger = PartitionLedger(store, "t", 0)
    ledger.claim()
    for i, hour in enumerate([0, 0, 1, 1]):  # two commits in the first hour, two in the second
        commit(store, ledger, i * 50, (i + 1) * 50, hours=1, first_hour=hour)
    archive = Archive(store)
    settings = compact.CompactSettings(grace_s=0, closed_after_s=0)
    second_hour_end = (T0 + 2 * HOUR_MS) / 1000

    compact.compact(archive, settings=settings, now=lambda: second_hour_end - 1)  # the second hour is open
    live = archive.live_entries("t", 0)
    assert [(e.kind, e.start, e.end, e.replaces) for e in live] == [
        ("compaction", 0, 100, [2, 3]), ("commit", 100, 150, []), ("commit", 150, 200, [])]

    compact.compact(archive, settings=settings, now=lambda: second_hour_end)  # now it is closed too
    live = archive.live_entries("t", 0)
    assert [(e.kind, e.start, e.end, e.replaces) for e in live] == [
        ("compaction", 0, 100, [2, 3]), ("compaction", 100, 200, [4, 5])]  # the first one is not rewritten
    assert len(rows(archive)) == 200 and len(list(archive.files("t"))) == 2


def test_when_every_commit_holds_an_open_hour_the_closed_one_is_merged_and_the_open_one_carried(store):
    archived(store)  # every commit holds a file of each of two hours
    archive = Archive(store)
    second_hour_end = (T0 + 2 * HOUR_MS) / 1000
    settings = compact.CompactSettings(grace_s=0, closed_after_s=0)
    compact.compact(archive, settings=settings, now=lambda: second_hour_end - 1)
    files = list(archive.files("t"))
    merged = [f for f in files if layout.parse_data_key(f.key).compaction is not None]
    assert len(merged) == 1 and len(files) == 5  # 4 small files of the open hour carried over
    assert len(rows(archive)) == 200


def test_the_grace_period_keeps_replaced_files_until_it_passes(store):
    archived(store)
    archive = Archive(store)
    now = [T0 / 1000 + 10 * 86_400]
    settings = compact.CompactSettings(grace_s=600)
    old = set(store.list("topic=t/"))
    compact.compact(archive, settings=settings, now=lambda: now[0])
    assert old <= set(store.list("topic=t/"))
    now[0] += 601
    report = compact.compact(archive, settings=settings, now=lambda: now[0])
    assert report.totals()["deleted_files"] == 8
    assert set(store.list("topic=t/")).isdisjoint(old)


def test_garbage_collection_reads_only_the_ledger_after_its_marker(store):
    ledger = archived(store)
    archive = Archive(store)
    now = T0 / 1000 + 10 * 86_400
    settings = compact.CompactSettings(grace_s=600)
    compact.compact(archive, settings=settings, now=lambda: now)  # seq 6 replaces seqs 2..5
    for i in range(4, 30):  # 26 more commits, all of hours long closed
        ledger.read_head()
        commit(store, ledger, i * 50, (i + 1) * 50, hours=1, first_hour=5)
    counting = Counting(store)
    report = compact.compact(Archive(counting), settings=compact.CompactSettings(grace_s=600, min_files=99),
                             now=lambda: now + 601)
    assert report.totals()["deleted_files"] == 8  # the files seqs 2..5 held
    gets = counting.gets
    assert json.loads(store.get("_gc/topic=t/partition=0.json")) == {"through": 32}

    ledger.write_checkpoint(32)  # as the live writer does every 100 seqs
    counting.gets = 0  # the next run plans from the checkpoint and collects from the marker
    compact.compact(Archive(counting), settings=compact.CompactSettings(grace_s=600, min_files=99),
                    now=lambda: now + 602)
    assert gets > 32 and counting.gets == 3  # the checkpoint, the head entry and the GC marker


def test_a_marker_of_the_older_format_makes_one_full_pass(store):
    archived(store)
    archive = Archive(store)
    compact.compact(archive, settings=compact.CompactSettings(grace_s=3600), now=lambda: T0 / 1000 + 86_400)
    store.put("_gc/topic=t/partition=0.json", json.dumps({"collected": []}).encode())
    report = compact.compact(archive, settings=compact.CompactSettings(grace_s=3600, min_files=99),
                             now=lambda: T0 / 1000 + 86_400 + 3600)
    assert report.totals()["deleted_files"] == 8
    assert json.loads(store.get("_gc/topic=t/partition=0.json")) == {"through": 6}


def test_a_crashed_compaction_is_cleaned_up_once_stale(store):
    archived(store)
    orphan = "topic=t/dt=2025-11-24/hour=16/key_bucket=00/t+0+00000000000000000000+0000000001-c00000000000000000009.parquet"
    store.put(orphan, b"partial")
    intent = layout.intent_key("t", 0, 9, 1, "compaction")
    store.put(intent, json.dumps({"files": [orphan], "started_at": 100.0}).encode())
    settings = compact.CompactSettings(stale_after_s=3600, min_files=99)  # nothing to merge
    compact.compact(Archive(store), settings=settings, now=lambda: 100.0 + 60)
    assert store.get(orphan) == b"partial"  # maybe still running
    compact.compact(Archive(store), settings=settings, now=lambda: 100.0 + 3600)
    assert list(store.list("_intents/")) == [] and orphan not in set(store.list("topic="))


def test_sort_by_key_orders_rows_by_key_then_offset(store):
    archived(store)
    archive = Archive(store)
    compact.compact(archive, settings=compact.CompactSettings(grace_s=0, sort_by="key"))
    for f in archive.files("t"):
        table = archive.read(f)
        pairs = list(zip(table["_kafka_key"].to_pylist(), table["_kafka_offset"].to_pylist()))
        assert pairs == sorted(pairs)


def test_an_unknown_topic_is_one_clear_error(store):
    archived(store)
    with pytest.raises(ConfigError, match="topic 'nope' is not in the archive"):
        compact.compact(Archive(store), ["nope"])


@pytest.mark.parametrize("dirs, end", [
    ("dt=2025-11-24/hour=16/key_bucket=03", 1_764_003_600),
    ("dt=2025-11-24/key_bucket=03", 1_764_028_800),
    ("dt=2025-11-24/hour=16/minute=05/key_bucket=03", 1_764_000_360),
    ("country=FR", None),
])
def test_time_partition_end(dirs, end):
    assert compact.time_partition_end(dirs) == end


@pytest.mark.parametrize("decode_ahead", [0, 1 << 20], ids=["streamed", "decoded-ahead"])
@pytest.mark.parametrize("sort_by", [None, "offset", "key"])
def test_replay_merges_entries_in_offset_order_in_small_windows(store, monkeypatch, sort_by, decode_ahead):
    from archiver import replay

    monkeypatch.setattr(replay, "DECODE_AHEAD_BYTES", decode_ahead)  # files read a batch at a time, or whole
    archived(store, commits=3, per_commit=40)
    archive = Archive(store)
    if sort_by:
        compact.compact(archive, settings=compact.CompactSettings(grace_s=0, sort_by=sort_by,
                                                                   row_group_bytes=2_000))
    monkeypatch.setattr(replay, "WINDOW_OFFSETS", 7)  # many windows, files straddling them
    monkeypatch.setattr(replay, "BATCH_ROWS", 3)
    selection = replay.Selection("t")
    reader = replay.Reader(archive, selection)
    records = list(reader.stream(replay.plan(archive, selection).partitions, {0: 9}))
    assert reader.bytes_read == sum(f.bytes for f in archive.files("t"))  # every file downloaded once
    assert [r.offset for r in records] == list(range(10, 120))
    assert all(r.key == str(r.offset % 7).encode() for r in records)
    assert all(r.value == wire.frame(1, wire.avro_long(r.offset)) for r in records)  # value n == offset


def test_files_of_two_writer_schemas_are_not_mixed(store):
    ledger = archived(store, commits=2, per_commit=20)
    v2 = json.dumps({"type": "record", "name": "R", "fields": [{"name": "n", "type": "long"},
                                                                {"name": "m", "type": ["null", "long"], "default": None}]})
    offsets = list(range(40, 60))
    values = pa.table({"n": pa.array(offsets, pa.int64()), "m": pa.array(offsets, pa.int64())})
    meta = parquet.metadata_table(0, offsets, [(1, T0 + o) for o in offsets], [b"k"] * 20, [None] * 20, 2)
    data = parquet.encode(pa.Table.from_arrays(values.columns + meta.columns, values.column_names + meta.column_names),
                          {2: v2})
    dirs = layout.time_path(T0, layout.Granularity.HOUR) + "/key_bucket=00"
    key = layout.DataKey("t", 0, 40, ledger.epoch, dirs).format()
    store.put(key, data)
    ledger.commit(Entry(ledger.head.seq + 1, ledger.epoch, "commit", 40, 60, [
        FileEntry(key, 20, len(data), hashlib.sha256(data).hexdigest(), 40, 59, T0, T0 + 59, [2])], records=20))
    archive = Archive(store)

    compact.compact(archive, settings=compact.CompactSettings(grace_s=0))

    first_hour = [f for f in archive.files("t") if dirs in f.key]
    assert sorted(f.schema_ids for f in first_hour) == [[1], [2]]
    for f in first_hour:
        table = archive.read(f)
        assert set(parquet.writer_schemas_of(table.schema.metadata)) == set(f.schema_ids)
        assert ("m" in table.column_names) == (f.schema_ids == [2])


def test_dry_run_changes_nothing(store):
    archived(store)
    before = sorted(store.list(""))
    report = compact.compact(Archive(store), settings=compact.CompactSettings(grace_s=0), dry_run=True)
    assert report.totals()["files_in"] == 8 and report.totals()["files_out"] == 0
    assert sorted(store.list("")) == before


def test_verify_accepts_files_compacted_in_key_order(store):
    from archiver import audit

    archived(store)
    archive = Archive(store)
    compact.compact(archive, settings=compact.CompactSettings(grace_s=0, sort_by="key", row_group_bytes=2_000))
    assert any(pq_row_groups(archive, f) > 1 for f in archive.files("t"))
    report = audit.verify(archive, ["t"])
    assert report.problems == [] and report.orphans == []


def pq_row_groups(archive: Archive, f: FileEntry) -> int:
    import io

    import pyarrow.parquet as pq

    return pq.ParquetFile(io.BytesIO(archive.store.get(f.key))).num_row_groups


def test_a_compaction_that_keeps_its_intent_fresh_is_not_taken_for_a_crashed_one(store):
    archived(store)
    running = "topic=t/dt=2025-11-24/hour=16/key_bucket=00/t+0+00000000000000000000+0000000001-c00000000000000000009.parquet"
    store.put(running, b"uploading")
    store.put(layout.intent_key("t", 0, 9, 1, "compaction"),
              json.dumps({"files": [running], "started_at": 100.0, "updated_at": 5000.0}).encode())
    settings = compact.CompactSettings(stale_after_s=3600, min_files=99)
    compact.compact(Archive(store), settings=settings, now=lambda: 5000.0 + 60)  # started long ago, updated now
    assert store.get(running) == b"uploading"


def test_a_compaction_that_lost_to_one_planned_at_the_same_seq_deletes_only_its_own_files(store):
    ledger = archived(store)
    archive = Archive(store)
    before = rows(archive)
    view = ledger.view()
    settings = compact.CompactSettings(grace_s=3600)
    run, merge = compact.plan_run(view.live, settings, T0 / 1000 + 10 * 86_400)
    first = compact._Compaction(store, ledger, view.head, run, merge, settings, time.time)
    second = compact._Compaction(store, ledger, view.head, run, merge, settings, time.time)  # e.g. CLI and daemon

    assert first.execute()[0] is not None
    assert second.execute() == (None, [])  # its run was replaced: it discards its uploads

    assert rows(archive) == before  # the winner's files, same seq and offsets, are intact
    for f in archive.files("t"):
        assert store.get(f.key)


class AnswerLost:
    """A store whose first put of a ledger entry succeeds but answers 412, as a put retried after
    its answer was lost does (the retry finds the object its first attempt wrote)."""

    def __init__(self, store, kind: str):
        self._store, self._kind, self.lost = store, kind, 0

    def __getattr__(self, name):
        return getattr(self._store, name)

    def put(self, key, data, *, if_absent=False):
        self._store.put(key, data, if_absent=if_absent)
        if if_absent and "/_ledger/" in f"/{key}" and json.loads(data).get("kind") == self._kind and not self.lost:
            self.lost += 1
            from archiver.errors import PreconditionFailed
            raise PreconditionFailed(f"{key} exists")


@pytest.mark.parametrize("kind", ["compaction", "commit"])
def test_a_commit_whose_answer_was_lost_is_committed_not_discarded(store, kind):
    ledger = archived(store)
    archive = Archive(store)
    before = rows(archive)
    flaky = AnswerLost(store, kind)
    if kind == "commit":
        writer = PartitionLedger(flaky, "t", 0)
        writer.head, writer.epoch = ledger.head, ledger.epoch
        committed = commit(flaky, writer, 200, 250)
        assert committed.seq == ledger.head.seq + 1 and writer.head == committed
        before = sorted(before + [(o, o) for o in range(200, 250)])
    else:
        compact.compact(Archive(flaky), settings=compact.CompactSettings(grace_s=3600))
        assert [e.kind for e in archive.live_entries("t", 0)] == ["compaction"]
    assert flaky.lost == 1
    assert rows(archive) == before  # every file the committed entry names is there
    for f in archive.files("t"):
        assert store.get(f.key)
