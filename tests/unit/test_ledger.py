import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archiver import layout
from archiver.errors import NotFound
from archiver.ledger import Checkpoint, Entry, FencedError, FileEntry, PartitionLedger, live_of
from archiver.store import open_store
from tests.store_checks import Counting


@pytest.fixture
def store(tmp_path):
    return open_store(f"file://{tmp_path}")


def commit_entry(ledger: PartitionLedger, start: int, end: int, keys=()) -> Entry:
    files = [FileEntry(k, 1, 1, "0" * 64, start, end - 1, None, None, [1]) for k in keys]
    return Entry(ledger.head.seq + 1, ledger.epoch, "commit", start, end, files, records=len(files))


def test_first_claim_starts_an_unknown_position(store):
    ledger = PartitionLedger(store, "t", 0)
    claim = ledger.claim()
    assert (claim.seq, claim.epoch, claim.kind, claim.start) == (1, 1, "claim", None)
    assert ledger.next_offset() is None


def test_a_new_owner_resumes_at_the_end_of_the_last_commit(store):
    first = PartitionLedger(store, "t", 0)
    first.claim()
    first.commit(commit_entry(first, 0, 100))
    second = PartitionLedger(store, "t", 0)
    claim = second.claim()
    assert (claim.seq, claim.epoch, claim.start) == (3, 2, 100)
    assert second.next_offset() == 100


def test_a_zombie_cannot_commit_after_a_new_claim(store):
    zombie = PartitionLedger(store, "t", 0)
    zombie.claim()
    zombie.commit(commit_entry(zombie, 0, 10))
    owner = PartitionLedger(store, "t", 0)
    owner.claim()
    with pytest.raises(FencedError, match="lost the partition"):
        zombie.commit(commit_entry(zombie, 10, 20))
    owner.commit(commit_entry(owner, 10, 20))
    commits = [e for e in owner.entries() if e.kind == "commit"]
    assert [(e.start, e.end, e.epoch) for e in commits] == [(0, 10, 1), (10, 20, 2)]


def test_retrying_a_commit_whose_response_was_lost_succeeds(store):
    ledger = PartitionLedger(store, "t", 0)
    ledger.claim()
    entry = commit_entry(ledger, 0, 5)
    store.put(layout.ledger_key("t", 0, entry.seq), entry.to_json(), if_absent=True)  # the lost attempt
    ledger.commit(entry)
    assert ledger.head == entry


def test_claim_deletes_uploads_of_an_uncommitted_flush_and_keeps_committed_ones(store):
    crashed = PartitionLedger(store, "t", 0)
    crashed.claim()
    crashed.write_intent(["topic=t/dt=x/kept.parquet"])
    store.put("topic=t/dt=x/kept.parquet", b"data")
    crashed.commit(commit_entry(crashed, 0, 5, ["topic=t/dt=x/kept.parquet"]))
    crashed.write_intent(["topic=t/dt=x/orphan.parquet"])
    store.put("topic=t/dt=x/orphan.parquet", b"data")  # then kill -9 before the ledger put

    PartitionLedger(store, "t", 0).claim()

    assert store.get("topic=t/dt=x/kept.parquet") == b"data"
    with pytest.raises(NotFound):
        store.get("topic=t/dt=x/orphan.parquet")
    assert list(store.list("_intents/")) == []


def compaction_entry(head: Entry, replaces: list[Entry], keys=()) -> Entry:
    """What a compactor writes: the next seq with the owner's epoch, replacing `replaces`."""
    start, end = replaces[0].start, replaces[-1].end
    files = [FileEntry(k, 1, 1, "0" * 64, start, end - 1, None, None, [1]) for k in keys]
    return Entry(head.seq + 1, head.epoch, "compaction", start, end, files, replaces=[e.seq for e in replaces],
                 frontier=head.next_offset)


def test_a_writer_steps_over_a_compaction_that_took_its_seq(store):
    ledger = PartitionLedger(store, "t", 0)
    ledger.claim()
    first = ledger.commit(commit_entry(ledger, 0, 10, ["a"]))
    entry = commit_entry(ledger, 10, 20, ["b"])  # built for seq 3 ...
    ledger.write_intent(["b"])
    store.put(layout.ledger_key("t", 0, 3), compaction_entry(first, [first], ["c"]).to_json(), if_absent=True)

    committed = ledger.commit(entry)  # ... while a compaction took seq 3

    assert (committed.seq, committed.start, committed.end) == (4, 10, 20)
    kinds = [(e.seq, e.kind) for e in ledger.entries()]
    assert kinds == [(1, "claim"), (2, "commit"), (3, "compaction"), (4, "commit")]
    assert list(store.list("_intents/")) == []


def test_a_zombie_is_still_fenced_behind_a_compaction(store):
    zombie = PartitionLedger(store, "t", 0)
    zombie.claim()
    first = zombie.commit(commit_entry(zombie, 0, 10))
    store.put(layout.ledger_key("t", 0, 3), compaction_entry(first, [first]).to_json(), if_absent=True)
    PartitionLedger(store, "t", 0).claim()  # seq 4, epoch 2
    with pytest.raises(FencedError, match="lost the partition"):
        zombie.commit(commit_entry(zombie, 10, 20))


def test_a_claim_after_a_compaction_resumes_at_the_frontier_not_the_compacted_range(store):
    ledger = PartitionLedger(store, "t", 0)
    ledger.claim()
    first = ledger.commit(commit_entry(ledger, 0, 10))
    second = ledger.commit(commit_entry(ledger, 10, 20))
    store.put(layout.ledger_key("t", 0, 4), compaction_entry(second, [first]).to_json(), if_absent=True)
    claim = PartitionLedger(store, "t", 0).claim()
    assert (claim.seq, claim.epoch, claim.start) == (5, 2, 20)


def test_claim_keeps_files_a_writer_committed_after_stepping_over_a_compaction(store):
    crashed = PartitionLedger(store, "t", 0)
    crashed.claim()
    first = crashed.commit(commit_entry(crashed, 0, 10))
    entry = commit_entry(crashed, 10, 20, ["topic=t/dt=x/late.parquet"])
    crashed.write_intent(["topic=t/dt=x/late.parquet"])
    store.put("topic=t/dt=x/late.parquet", b"data")
    store.put(layout.ledger_key("t", 0, 3), compaction_entry(first, [first]).to_json(), if_absent=True)
    store.put(layout.ledger_key("t", 0, 4), dataclasses.replace(entry, seq=4).to_json(), if_absent=True)
    # killed before the intent of seq 3 was deleted

    PartitionLedger(store, "t", 0).claim()

    assert store.get("topic=t/dt=x/late.parquet") == b"data"
    assert list(store.list("_intents/")) == []


def test_claim_leaves_compaction_intents_to_compactors(store):
    ledger = PartitionLedger(store, "t", 0)
    ledger.claim()
    key = layout.intent_key("t", 0, 2, 1, "compaction")
    store.put(key, b'{"files": ["topic=t/dt=x/merged.parquet"], "started_at": 0}')
    store.put("topic=t/dt=x/merged.parquet", b"data")  # a compaction uploading right now
    PartitionLedger(store, "t", 0).claim()
    assert store.get("topic=t/dt=x/merged.parquet") == b"data"
    assert list(store.list("_intents/")) == [key]


# --- checkpoints ------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(["commit", "commit", "commit", "claim", "compact", "checkpoint"]), max_size=40))
def test_a_view_through_checkpoints_is_the_whole_ledger(tmp_path_factory, steps):
    store = open_store(f"file://{tmp_path_factory.mktemp('ledger')}")
    ledger = PartitionLedger(store, "t", 0)
    ledger.claim()
    offset, at = 0, 0.0
    for step in steps:
        at += 1.0
        if step == "commit":
            entry = dataclasses.replace(commit_entry(ledger, offset, offset + 10, [f"f{offset}"]), committed_at=at)
            ledger.commit(entry)
            offset += 10
        elif step == "claim":
            ledger = PartitionLedger(store, "t", 0)
            ledger.claim()
        elif step == "compact":
            live = live_of(ledger.entries())
            if len(live) >= 2:
                entry = compaction_entry(ledger.head, live[:2], [f"c{at}"])
                store.put(layout.ledger_key("t", 0, entry.seq), entry.to_json(), if_absent=True)
                ledger.read_head()
                ledger.head = entry
        else:
            ledger.write_checkpoint(ledger.head.seq)
        everything = list(ledger.entries())
        view = ledger.view()
        assert view.live == live_of(everything)
        commits = [e.committed_at for e in everything if e.kind == "commit"]
        assert view.last_commit_at == (commits[-1] if commits else None)
        assert view.head == everything[-1]
        assert PartitionLedger(store, "t", 0).read_head() == everything[-1]


def test_readers_read_only_the_entries_after_the_last_checkpoint(store):
    ledger = PartitionLedger(store, "t", 0)
    ledger.claim()
    for i in range(250):
        ledger.commit(commit_entry(ledger, i, i + 1, [f"f{i}"]))
        if ledger.checkpoint_due():
            ledger.write_checkpoint(ledger.head.seq)
            ledger.checkpointed = ledger.head.seq
    assert PartitionLedger(store, "t", 0).checkpoint_seqs() == [100, 200]  # older ones pruned
    counting = Counting(store)
    view = PartitionLedger(counting, "t", 0).view()
    assert [e.start for e in view.live] == list(range(250))
    assert (view.read, counting.gets) == (51, 52)  # the checkpoint, then seqs 201..251
    head = PartitionLedger(counting, "t", 0).read_head()
    assert head.seq == 251 and counting.gets == 53


def test_no_checkpoint_is_written_over_a_hole(store):
    ledger = PartitionLedger(store, "t", 0)
    ledger.claim()
    for i in range(3):
        ledger.commit(commit_entry(ledger, i, i + 1))
    store.delete(layout.ledger_key("t", 0, 2))
    assert ledger.write_checkpoint(4) is None
    assert ledger.checkpoint_seqs() == []


def test_a_checkpoint_round_trips_and_is_a_function_of_the_entries(store):
    ledger = PartitionLedger(store, "t", 0)
    ledger.claim()
    for i in range(5):
        ledger.commit(dataclasses.replace(commit_entry(ledger, i, i + 1, ["k"]), committed_at=float(i)))
    written = ledger.write_checkpoint(6)
    assert Checkpoint.from_json(written.to_json()) == written
    assert written == Checkpoint.of(6, None, list(ledger.entries()))
    assert written.last_commit_at == 4.0 and [e.seq for e in written.live] == [2, 3, 4, 5, 6]
