"""Replay planning by key bucket, the dry-run estimate, and checkpoints that know their replay."""

from __future__ import annotations

import hashlib
import json

import pytest

from archiver import layout, republish
from archiver import replay as replay_mod
from archiver.archive import Archive
from archiver.errors import ConfigError
from archiver.ledger import Entry, FileEntry
from archiver.replay import Selection
from archiver.store import open_store
from tests.unit.test_audit import parquet

T = "events"


@pytest.fixture
def store(tmp_path):
    return open_store(f"file://{tmp_path}")


def bucketed(store, buckets: list[str], partitions: int = 2) -> None:
    """One commit per partition with one 10-row file in each `key_bucket=<b>` directory."""
    for p in range(partitions):
        files = []
        for n, bucket in enumerate(buckets):
            offsets = list(range(n * 10, n * 10 + 10))
            data = parquet(p, offsets)
            key = layout.DataKey(T, p, offsets[0], 1, f"dt=2025-11-24/hour=16/key_bucket={bucket}").format()
            store.put(key, data)
            files.append(FileEntry(key, 10, len(data), hashlib.sha256(data).hexdigest(), offsets[0], offsets[-1],
                                   None, None, [1]))
        entry = Entry(1, 1, "commit", 0, len(buckets) * 10, files, records=len(buckets) * 10)
        store.put(layout.ledger_key(T, p, 1), entry.to_json(), if_absent=True)


def key_in_bucket(bucket: int, count: int) -> bytes:
    return next(k for k in (f"k{n}".encode() for n in range(10_000)) if layout.key_bucket(k, count) == bucket)


def test_a_key_selection_plans_only_the_files_of_the_keys_bucket(store):
    bucketed(store, [f"{b:02d}" for b in range(16)])
    selection = Selection(T, keys=frozenset({key_in_bucket(3, 16), key_in_bucket(11, 16)}))
    plan = replay_mod.plan(Archive(store), selection, 16)
    assert sorted({f.key.split("/")[3] for p in plan.partitions for f in p.files}) == ["key_bucket=03",
                                                                                     "key_bucket=11"]
    assert plan.files == 4 and plan.key_buckets == [3, 11]
    estimate = plan.describe()["estimate"]
    assert estimate["records_upper_bound"] == 40 and estimate["exact"] is False
    assert estimate["key_buckets_read"] == [3, 11] and estimate["filtered_when_read"] == ["key"]


def test_directories_that_do_not_fit_the_configured_count_are_not_pruned(store):
    bucketed(store, ["0", "1", "2"])  # one digit: not the directories of 16 buckets
    selection = Selection(T, keys=frozenset({b"k"}))
    assert replay_mod.plan(Archive(store), selection, 16).files == 6
    assert replay_mod.plan(Archive(store), selection, None).files == 6  # not hash-partitioned in the settings
    assert replay_mod.bucket_count([], 16) is None


def test_where_is_labelled_an_estimate_and_a_plain_plan_is_not(store):
    bucketed(store, ["00", "01"])
    where = replay_mod.plan(Archive(store), Selection(T, where="value = 'v1'"), 16).describe()
    assert where["estimate"]["filtered_when_read"] == ["where"] and where["estimate"]["key_buckets_read"] is None
    assert "estimate" not in replay_mod.plan(Archive(store), Selection(T), 16).describe()


def test_the_bucket_count_comes_from_the_topics_layout_record(store):
    from archiver import layouts
    from archiver.config import TopicSettings

    assert replay_mod.recorded_key_buckets(Archive(store), T) is None  # no record: every file is read
    layouts.record(store, T, layouts.TopicLayout.of(TopicSettings(key_buckets=8)))
    assert replay_mod.recorded_key_buckets(Archive(store), T) == 8
    layouts.record(store, "f", layouts.TopicLayout.of(TopicSettings(key_partitioning="none")))
    assert replay_mod.recorded_key_buckets(Archive(store), "f") is None


# --- checkpoints know their replay ---------------------------------------------------------------


def spec(selection: Selection, start: str | None = None) -> dict:
    return republish.selection_spec(selection, start)


def test_a_checkpoint_records_its_replay_and_refuses_another_target_or_selection(store):
    selection = Selection(T, partitions=frozenset({0}), keys=frozenset({b"a"}), where="x > 1")
    first = republish.StoreCheckpoint(store, "nightly")
    assert republish.resume(first, "dst", selection, spec(selection)) == ({}, selection)
    first.save({0: 41})
    assert json.loads(store.get("_replay/nightly.json"))["target"] == "dst"

    again = republish.StoreCheckpoint(store, "nightly")
    assert republish.resume(again, "dst", selection, spec(selection)) == ({0: 41}, selection)
    with pytest.raises(ConfigError, match="^checkpoint 'nightly' belongs to a replay into 'dst', not 'other'; "):
        republish.resume(republish.StoreCheckpoint(store, "nightly"), "other", selection, spec(selection))
    changed = Selection(T, partitions=frozenset({0, 1}), keys=frozenset({b"a"}), where="x > 2")
    with pytest.raises(ConfigError) as refused:
        republish.resume(republish.StoreCheckpoint(store, "nightly"), "dst", changed, spec(changed))
    assert str(refused.value) == ("checkpoint 'nightly' belongs to a replay of another selection: --partitions ([0] "
                                  "then, [0, 1] now); --where (\"x > 1\" then, \"x > 2\" now) differ; use another "
                                  "--checkpoint name")
    other_keys = Selection(T, partitions=frozenset({0}), keys=frozenset({b"b"}), where="x > 1")
    with pytest.raises(ConfigError, match="--key/--keys-file"):
        republish.resume(republish.StoreCheckpoint(store, "nightly"), "dst", other_keys, spec(other_keys))


def test_a_rerun_with_the_same_relative_time_resumes_the_first_runs_window(store):
    first_run = Selection(T, start_ms=1_000, end_ms=5_000)
    checkpoint = republish.StoreCheckpoint(store, "window")
    republish.resume(checkpoint, "dst", first_run, republish.selection_spec(first_run, "-2h", "now"))
    checkpoint.save({0: 7})
    later = Selection(T, start_ms=9_000, end_ms=13_000)  # `--from -2h --to now`, resolved later
    progress, resumed = republish.resume(republish.StoreCheckpoint(store, "window"), "dst", later,
                                         republish.selection_spec(later, "-2h", "now"))
    assert progress == {0: 7} and (resumed.start_ms, resumed.end_ms) == (1_000, 5_000)
    with pytest.raises(ConfigError, match="--from .-2h then, -3h now."):
        republish.resume(republish.StoreCheckpoint(store, "window"), "dst", later,
                         republish.selection_spec(later, "-3h", "now"))


def test_a_checkpoint_saved_before_it_recorded_its_replay_keeps_working(store):
    store.put("_replay/old.json", json.dumps({"last_offsets": {"0": 99}, "saved_at": 1.0}).encode())
    checkpoint = republish.StoreCheckpoint(store, "old")
    selection = Selection(T)
    assert republish.resume(checkpoint, "anything", selection, spec(selection)) == ({0: 99}, selection)
    checkpoint.save({0: 120})
    assert json.loads(store.get("_replay/old.json"))["target"] == "anything"  # recorded from now on


@pytest.mark.parametrize("rows", [150, 3])  # natively, and by the reference below its batch size
def test_values_of_several_writer_schemas_and_tombstones_come_back_framed_in_row_order(rows):
    """Replay encodes each writer schema's rows apart and puts them back in table order."""
    import random

    import numpy as np
    import pyarrow as pa
    import pyarrow.compute  # noqa: F401 - pa.compute

    from archiver.codec import arrow, wire
    from tests.unit.test_codec_arrow import avro, record

    old, new = record(("a", "long"), name="V"), record(("a", "long"), ("b", ["null", "string"]), name="V")
    schemas = {7: json.dumps(old), 9: json.dumps(new)}
    rng = random.Random(rows)
    ids = [rng.choice([7, 9, None]) for _ in range(rows)] + [7, 9, None]
    values = [{"a": i, "b": None if i % 3 else f"s{i}"} for i in range(len(ids))]
    want = [None if sid is None else wire.frame(sid, avro(old if sid == 7 else new, v)) for sid, v in zip(ids, values)]
    table = arrow.decode_batch([avro(new, v) for v in values], new, header_size=0).table
    table = table.append_column("_schema_id", pa.array(ids, pa.int32()))
    got = replay_mod._encode_values(table, schemas)
    assert got.type == pa.binary()
    assert got.to_pylist() == want
    order = list(range(len(ids)))
    rng.shuffle(order)
    assert replay_mod._encode_values(table, schemas, np.array(order)).to_pylist() == [want[i] for i in order]
    one = table.filter(pa.compute.equal(table["_schema_id"], 9))  # one writer schema: framed in order natively
    order = np.random.default_rng(rows).permutation(one.num_rows)
    want = [v for v, sid in zip(want, ids) if sid == 9]
    assert replay_mod._encode_values(one, schemas, order).to_pylist() == [want[i] for i in order]
