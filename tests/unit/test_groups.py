"""Compaction across Kafka partitions on a file:// archive: lineage, the two-phase commit through a
decision object, and a crash at every step of it."""

from __future__ import annotations

import collections
import json
import math

import pytest

from archiver import audit, compact, groups, layout, query
from archiver.archive import Archive
from archiver.config import CatalogSettings
from archiver.errors import NotFound
from archiver.ledger import ABORTED, COMMITTED, Decisions, PartitionLedger
from archiver.store import open_store
from tests.unit.test_compact import T0, commit

PARTITIONS = 3
LATER = T0 / 1000 + 10 * 86_400  # every hour of the data long closed


@pytest.fixture
def store(tmp_path):
    return open_store(f"file://{tmp_path}/archive")


def several(store, partitions: int = PARTITIONS, commits: int = 3, per_commit: int = 40) -> dict[int, PartitionLedger]:
    """Each partition: `commits` commits, each with one small file in each of two closed hours."""
    ledgers = {}
    for p in range(partitions):
        ledger = ledgers[p] = PartitionLedger(store, "t", p)
        ledger.claim()
        for i in range(commits):
            commit(store, ledger, i * per_commit, (i + 1) * per_commit)
    return ledgers


def per_partition(archive: Archive) -> dict[int, list[tuple[int, int]]]:
    """Each partition's (offset, n) rows as its ledger's readers see them: its slices only."""
    out = {}
    for p in archive.partitions("t"):
        rows = []
        for f in archive.files("t", p):
            table = archive.read(f)
            assert set(table["_kafka_partition"].to_pylist()) <= {p}, f"{f.key} hands partition {p} other rows"
            rows += zip(table["_kafka_offset"].to_pylist(), table["n"].to_pylist())
        out[p] = sorted(rows)
    return out


def union_rows(archive: Archive) -> collections.Counter:
    """Every row as a whole-file reader of the union (query) sees it: each object once, filtered
    where a shared file's partitions were not all read."""
    import pyarrow.compute as pc

    files, only = query.distinct_files((p, f) for p in archive.partitions("t") for f in archive.files("t", p))
    seen = collections.Counter()
    for f in files:
        table = archive.read(f)
        if f.key in only:
            table = table.filter(pc.is_in(table["_kafka_partition"], archive_partitions(only[f.key])))
        seen.update(zip(table["_kafka_partition"].to_pylist(), table["_kafka_offset"].to_pylist()))
    return seen


def archive_partitions(partitions):
    import pyarrow as pa

    return pa.array(partitions, pa.int32())


def expected(partitions: int = PARTITIONS, records: int = 120) -> collections.Counter:
    return collections.Counter({(p, o): 1 for p in range(partitions) for o in range(records)})


def directories(archive: Archive) -> collections.Counter:
    return collections.Counter(compact.directories_of(f.key) for f in query.distinct_files(
        (p, f) for p in archive.partitions("t") for f in archive.files("t", p))[0])


class Crash(BaseException):
    """The process dies here (BaseException: nothing catches it on the way out)."""


def prepared_only(store) -> groups._Merge:
    """A merge across every partition that dies after preparing them all, before its decision."""
    views = {p: PartitionLedger(store, "t", p).view() for p in range(PARTITIONS)}
    merge = groups._Merge(store, "t", groups.plan(views, compact.CompactSettings(), LATER),
                          compact.CompactSettings(), lambda: LATER)

    def die(*args):
        raise Crash("killed before the decision")

    merge.decisions.decide = die
    with pytest.raises(Crash):
        merge.execute()
    return merge


def test_a_closed_directory_merges_into_one_file_whatever_the_partition_count(store):
    several(store)
    archive = Archive(store)
    before = per_partition(archive)
    assert directories(archive) == {d: 9 for d in directories(archive)}  # 3 partitions x 3 commits

    report = compact.compact(archive, settings=compact.CompactSettings(grace_s=0), now=lambda: LATER)

    (merged,) = report.groups
    assert (merged.outcome, merged.members, merged.files_in, merged.files_out) == (COMMITTED, [0, 1, 2], 18, 2)
    assert directories(archive) == {d: 1 for d in directories(archive)} and len(directories(archive)) == 2
    assert per_partition(archive) == before  # each partition reads its own rows, and only those
    assert union_rows(archive) == expected()
    assert audit.verify(archive).ok
    assert set(store.list("topic=t/")) == {f.key for p in range(3) for f in archive.files("t", p)}  # grace 0
    for p in range(3):
        (entry,) = archive.live_entries("t", p)
        assert (entry.group, entry.start, entry.end, entry.records) == (merged.group, 0, 120, 120)
        assert all(f.row_groups is not None and f.partitions == [0, 1, 2] for f in entry.files)


def test_merged_files_are_near_the_target_size_and_a_partition_may_span_several(store):
    several(store, commits=30, per_commit=40)  # 90 files of 20 records per directory
    archive = Archive(store)
    target = 12_000
    assert max(f.bytes for p in range(3) for f in archive.files("t", p)) < target // 2  # all small
    compact.compact(archive, settings=compact.CompactSettings(grace_s=0, target_bytes=target, row_group_bytes=1),
                    now=lambda: LATER)
    by_directory = collections.defaultdict(list)
    for f in query.distinct_files((p, f) for p in range(3) for f in archive.files("t", p))[0]:
        by_directory[compact.directories_of(f.key)].append(f.bytes)
    for sizes in by_directory.values():
        assert len(sizes) <= math.ceil(sum(sizes) / target), sizes  # no file closed before the target
        assert sorted(sizes)[1] >= target, sizes  # but the last
    spanning = [p for p in range(3) if len({f.key for f in archive.files("t", p)}) > len(by_directory)]
    assert spanning  # some partition's rows continue from one merged file into the next
    assert union_rows(archive) == expected(records=1200)
    assert all(len(sizes) >= 3 for sizes in by_directory.values())
    assert audit.verify(archive).ok


def test_an_undecided_group_is_invisible_and_blocks_checkpoints_and_other_compactions(store):
    several(store)
    archive = Archive(store)
    before = per_partition(archive)
    merge = prepared_only(store)

    assert per_partition(archive) == before and union_rows(archive) == expected()
    assert all(PartitionLedger(store, "t", p).view().undecided for p in range(3))
    assert compact.compact_partition(store, "t", 0, compact.CompactSettings(min_files=1), now=lambda: LATER
                                     ).files_in == 0  # partition 0's run is claimed by the group
    assert groups.plan({p: PartitionLedger(store, "t", p).view() for p in range(3)}, compact.CompactSettings(),
                       LATER) == []
    ledger = PartitionLedger(store, "t", 0)
    head = ledger.read_head().seq
    assert ledger.write_checkpoint(head) is not None and ledger.checkpoint().seq == head - 1

    Decisions(store, "t").decide(merge.group, COMMITTED, merge.partitions)  # the decision flips them all
    assert per_partition(archive) == before and union_rows(archive) == expected()
    assert directories(archive) == {d: 1 for d in directories(archive)}


def test_the_live_writer_steps_over_a_prepared_entry_and_the_merge_steps_over_the_writer(store):
    ledgers = several(store)
    archive = Archive(store)
    views = {p: PartitionLedger(store, "t", p).view() for p in range(3)}
    members = groups.plan(views, compact.CompactSettings(), LATER)
    commit(store, ledgers[1], 120, 160)  # partition 1 commits after the plan: the merge moves past it
    report_outcome, _ = groups._Merge(store, "t", members, compact.CompactSettings(), lambda: LATER).execute()
    commit(store, ledgers[2], 120, 160)  # partition 2's writer finds its seq taken by the group entry
    assert report_outcome == COMMITTED
    assert union_rows(archive) == expected() + collections.Counter({(p, o): 1 for p in (1, 2) for o in range(120, 160)})
    assert PartitionLedger(store, "t", 2).claim().start == 160
    assert audit.verify(archive).ok


def test_a_merge_that_loses_a_partition_to_another_compaction_aborts_and_leaves_nothing(store):
    several(store)
    archive = Archive(store)
    views = {p: PartitionLedger(store, "t", p).view() for p in range(3)}
    members = groups.plan(views, compact.CompactSettings(), LATER)
    compact.compact_partition(store, "t", 2, compact.CompactSettings(grace_s=3600), now=lambda: LATER)
    before = set(store.list("topic=t/"))
    merge = groups._Merge(store, "t", members, compact.CompactSettings(), lambda: LATER)

    outcome, _ = merge.execute()

    assert outcome == ABORTED and Decisions(store, "t").outcome(merge.group) == ABORTED
    assert set(store.list("topic=t/")) == before  # its uploads are gone
    assert not list(store.list(layout.group_intent_prefix("t")))
    assert union_rows(archive) == expected() and audit.verify(archive).ok
    # partitions 0 and 1 hold inert entries of the aborted group; the next run merges everything
    report = compact.compact(archive, settings=compact.CompactSettings(grace_s=0), now=lambda: LATER)
    assert report.groups[0].outcome == COMMITTED and directories(archive) == {d: 1 for d in directories(archive)}
    assert union_rows(archive) == expected() and audit.verify(archive).ok


def test_late_data_merges_with_the_shared_file_across_all_its_partitions_not_within_one(store):
    ledgers = several(store)
    archive = Archive(store)
    settings = compact.CompactSettings(grace_s=0)
    compact.compact(archive, settings=settings, now=lambda: LATER)
    commit(store, ledgers[0], 120, 160)  # late records for the same two hours, partition 0 only
    commit(store, ledgers[0], 160, 200)

    alone = compact.compact_partition(store, "t", 0, settings, now=lambda: LATER)
    assert alone.files_in == 4  # its own two new files per hour, not the shared file
    assert union_rows(archive) == expected() + collections.Counter({(0, o): 1 for o in range(120, 200)})
    assert directories(archive) == {d: 2 for d in directories(archive)}

    commit(store, ledgers[1], 120, 160)  # then partition 1 too: now a merge across partitions again
    report = compact.compact(archive, settings=settings, now=lambda: LATER)
    assert report.groups and report.groups[0].members == [0, 1, 2]
    assert directories(archive) == {d: 1 for d in directories(archive)}
    late = collections.Counter({(p, o): 1 for p, n in ((0, 200), (1, 160)) for o in range(120, n)})
    assert union_rows(archive) == expected() + late
    assert audit.verify(archive).ok
    assert set(store.list("topic=t/")) == {f.key for p in range(3) for f in archive.files("t", p)}


class Dying:
    """A store that dies at its `at`-th write (put or delete)."""

    def __init__(self, store, at: int):
        self.store, self.at, self.writes = store, at, 0

    def _write(self):
        self.writes += 1
        if self.writes == self.at:
            raise Crash(f"killed at write {self.at}")

    def put(self, key, data, if_absent=False):
        self._write()
        return self.store.put(key, data, if_absent=if_absent)

    def delete(self, key):
        self._write()
        return self.store.delete(key)

    def delete_many(self, keys):
        for key in keys:  # one request, but a crash may come between any two of its deletions
            self.delete(key)

    def __getattr__(self, name):
        return getattr(self.store, name)


def test_a_kill_at_every_step_of_a_merge_loses_and_duplicates_nothing_for_any_reader(tmp_path):
    settings = compact.CompactSettings(grace_s=0, stale_after_s=600)
    steps = 0
    for at in range(1, 100):
        store = open_store(f"file://{tmp_path}/archive-{at}")
        several(store)
        archive = Archive(store)
        before = per_partition(archive)
        dying = Dying(store, at)
        try:
            compact.compact(Archive(dying), settings=settings, now=lambda: LATER)
        except Crash:
            steps += 1
        else:
            break  # `at` is past the last write: every step has been killed once
        # whatever the step, every reader sees each record once
        assert per_partition(archive) == before, f"killed at write {at}"
        assert union_rows(archive) == expected(), f"killed at write {at}"
        assert audit.verify(archive).ok, f"killed at write {at}"
        # and the next run, once the crashed one is stale, finishes the job and cleans up
        compact.compact(archive, settings=settings, now=lambda: LATER + 601)
        compact.compact(archive, settings=settings, now=lambda: LATER + 1202)  # collect what it replaced
        assert per_partition(archive) == before and union_rows(archive) == expected(), f"killed at write {at}"
        assert directories(archive) == {d: 1 for d in directories(archive)}, f"killed at write {at}"
        live = {f.key for p in range(3) for f in archive.files("t", p)}
        assert set(store.list("topic=t/")) == live, f"killed at write {at}: stray files"
        assert not list(store.list(layout.group_intent_prefix("t"))), f"killed at write {at}"
    assert steps >= 10  # intent, uploads, three prepares, the decision, cleanup, collection


def test_publishing_adds_a_merge_in_one_commit_only_once_every_member_is_decided(store, tmp_path):
    from pyiceberg.catalog.sql import SqlCatalog

    from archiver.tables import Publisher

    several(store)
    archive = Archive(store)
    pub = Publisher(archive, SqlCatalog("archiver", uri=f"sqlite:///{tmp_path}/catalog.db"), CatalogSettings())
    pub.publish("t")

    def scanned() -> collections.Counter:
        rows = pub.load("t").scan().to_arrow()
        return collections.Counter(zip(rows["_kafka_partition"].to_pylist(), rows["_kafka_offset"].to_pylist()))

    merge = prepared_only(store)
    snapshots = len(pub.load("t").snapshots())
    pub.publish("t")
    assert len(pub.load("t").snapshots()) == snapshots and scanned() == expected()

    Decisions(store, "t").decide(merge.group, COMMITTED, merge.partitions)
    result = pub.publish("t")
    assert (result.added, result.removed) == (2, 18)  # one table commit swaps the whole merge
    assert scanned() == expected()
    paths = {f.file.file_path for f in pub.load("t").scan().plan_files()}
    assert len(paths) == 2 and all("-g" + merge.group in p for p in paths)


def test_a_stale_undecided_merge_is_aborted_by_the_next_run_and_its_uploads_removed(store):
    several(store)
    archive = Archive(store)
    merge = prepared_only(store)
    intent = json.loads(store.get(layout.group_intent_key("t", merge.group)))
    assert intent["files"] == [] and len(intent["directories"]) == 2  # uploads are found by their group id
    settings = compact.CompactSettings(grace_s=0, stale_after_s=600)
    young = compact.compact(archive, settings=settings, now=lambda: LATER + 10)
    assert not young.groups and Decisions(store, "t").outcome(merge.group) is None  # still running, maybe

    old = compact.compact(archive, settings=settings, now=lambda: LATER + 601)
    assert Decisions(store, "t").outcome(merge.group) == ABORTED
    assert old.groups[0].removed_stale == 2 and old.groups[0].outcome == COMMITTED  # then merged anew
    with pytest.raises(NotFound):
        store.get(merge.uploads.keys[0])
    assert union_rows(archive) == expected() and audit.verify(archive).ok
