"""`archiver query` on a file:// archive built by hand: views, pruning, the --key shortcut, output."""

from __future__ import annotations

import csv
import io
import json
import logging
from datetime import UTC, datetime

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archiver import layout, layouts
from archiver import query as q
from archiver.archive import Archive
from archiver.errors import ConfigError
from archiver.layouts import TopicLayout
from archiver.ledger import Entry, FileEntry
from archiver.store.local import LocalStore

HOUR = 3_600_000
T0 = 1_764_000_000_000 - 1_764_000_000_000 % HOUR  # an hour boundary


def _rows(keys: list[bytes], stamp: int, partition: int, extra: dict | None = None) -> pa.Table:
    n = len(keys)
    columns = {"country": pa.array(["FR" if i % 2 else "DE" for i in range(n)]),
               "device": pa.array([{"os": "iOS" if i % 3 else "Linux"} for i in range(n)]),
               "_kafka_partition": pa.array([partition] * n, pa.int32()),
               "_kafka_offset": pa.array(range(n), pa.int64()),
               "_kafka_timestamp": pa.array([stamp + i for i in range(n)], pa.timestamp("ms", tz="UTC")),
               "_kafka_key": pa.array(keys, pa.binary())}
    return pa.table(columns | (extra or {}))


class FakeArchive:
    """Writes Parquet files and commit entries the way `archiver run` lays them out."""

    def __init__(self, root, topic: str = "web-events", buckets: int = 4):
        self.store = LocalStore(root)
        self.topic, self.buckets, self.seq = topic, buckets, {}

    def add(self, table: pa.Table, partition: int, stamp: int, bucket: int, schema_id: int = 1) -> FileEntry:
        dirs = layout.time_path(layout.time_bucket(stamp, layout.Granularity.HOUR), layout.Granularity.HOUR)
        first = sum(1 for _ in self.store.list(f"topic={self.topic}/")) * 1000
        key = layout.DataKey(self.topic, partition, first, 1, f"{dirs}/{layout.bucket_path(bucket, self.buckets)}")
        buf = io.BytesIO()
        pq.write_table(table, buf)
        self.store.put(key.format(), buf.getvalue())
        entry = FileEntry(key.format(), table.num_rows, len(buf.getvalue()), "", first, first + table.num_rows - 1,
                          stamp, stamp + table.num_rows, [schema_id])
        seq = self.seq[partition] = self.seq.get(partition, 0) + 1
        commit = Entry(seq, 1, "commit", first, first + table.num_rows, [entry], table.num_rows)
        self.store.put(layout.ledger_key(self.topic, partition, seq), commit.to_json())
        return entry

    def add_key(self, key: bytes, stamp: int, partition: int = 0, n: int = 3) -> FileEntry:
        return self.add(_rows([key] * n, stamp, partition), partition, stamp, layout.key_bucket(key, self.buckets))


@pytest.fixture
def fake(tmp_path) -> FakeArchive:
    return FakeArchive(tmp_path / "archive")


@pytest.fixture
def engine(fake):
    engine = q.Engine(Archive(fake.store))
    yield engine
    engine.close()


def test_partition_columns_come_from_the_directories_of_the_key_not_the_file_name():
    key = "topic=t/dt=2026-01-01/hour=03/key_bucket=07/compacted-a=b.parquet"
    assert q.directories(key) == {"dt": "2026-01-01", "hour": "03", "key_bucket": "07"}
    files = [FileEntry(key, 1, 1, "", 0, 0, None, None, [1]),
             FileEntry("topic=t/dt=2026-01-02/hour=04/x.parquet", 1, 1, "", 1, 1, None, None, [1])]
    assert q.partition_columns(files) == ("dt", "hour")


def test_aliases_are_plain_identifiers():
    assert q.alias("web-events.v2") == "web_events_v2"
    assert q.alias("1st") == "_1st"
    assert q.alias("orders") == "orders"


def test_views_answer_sql_over_every_committed_file(fake, engine):
    fake.add_key(b"a", T0)
    fake.add_key(b"b", T0 + HOUR, partition=1)
    sql = 'SELECT device.os, count(*) AS n FROM "web-events" GROUP BY ALL ORDER BY 1'
    engine.prepare(sql)
    assert engine.run(sql).to_pylist() == [{"os": "Linux", "n": 2}, {"os": "iOS", "n": 4}]
    alias_sql = "SELECT count(*) AS n, min(hour) AS h, max(key_bucket) AS b FROM web_events"
    engine.prepare(alias_sql)
    expected_hour = datetime.fromtimestamp(T0 / 1000, UTC).hour
    assert engine.run(alias_sql).to_pylist() == [{"n": 6, "h": expected_hour,
                                                  "b": max(layout.key_bucket(k, 4) for k in (b"a", b"b"))}]


def test_explain_lists_exactly_the_files_of_the_selected_partition(fake, engine):
    for hour in range(3):
        for key in (b"a", b"b", b"c", b"d"):
            fake.add_key(key, T0 + hour * HOUR, partition=hour % 2)
    wanted = {f.key for f in Archive(fake.store).files("web-events")
              if f"hour={datetime.fromtimestamp((T0 + HOUR) / 1000, UTC).hour:02d}" in f.key
              and f"key_bucket={layout.key_bucket(b'c', 4)}" in f.key}
    view = engine.topic_view("web-events")
    sql = q.topic_sql(view, TopicLayout(key_buckets=4), b"c", T0 + HOUR, T0 + 2 * HOUR)
    engine.prepare(sql)
    explanation = engine.explain(sql)
    assert {f.key for f, _ in explanation.files_read("web-events")} == wanted
    assert all(n > 0 for _, n in explanation.files_read("web-events"))
    assert f"read {len(wanted)} of 12 files" in explanation.render()
    assert engine.run(sql)["_kafka_key"].to_pylist() == [b"c"] * 3


def test_unknown_topics_and_bad_sql_are_config_errors(fake, engine):
    fake.add_key(b"a", T0)
    with pytest.raises(ConfigError, match=r"unknown topic 'nope'.*archived topics: web-events"):
        engine.prepare("SELECT * FROM nope")
    with pytest.raises(ConfigError, match="Parser Error"):
        engine.prepare("SELEC 1")
    engine.prepare('SELECT nope FROM "web-events"')
    with pytest.raises(ConfigError, match=r'^SQL: Binder Error: Referenced column "nope" not found'):
        engine.run('SELECT nope FROM "web-events"')
    with pytest.raises(ConfigError, match="one statement"):
        engine.prepare("SELECT 1; SELECT 2")


def test_a_new_writer_schema_adds_columns_without_hiding_old_files(fake, engine):
    fake.add_key(b"a", T0)
    fake.add(_rows([b"b"], T0, 0, {"amount": pa.array([5])}), 0, T0, layout.key_bucket(b"b", 4), schema_id=2)
    sql = 'SELECT _kafka_key, amount FROM "web-events" ORDER BY amount NULLS FIRST'
    engine.prepare(sql)
    assert engine.run(sql).to_pylist()[-2:] == [{"_kafka_key": b"a", "amount": None},
                                                {"_kafka_key": b"b", "amount": 5}]


def test_a_column_added_without_a_new_schema_id_is_read_by_name(fake, engine, caplog):
    fake.add_key(b"a", T0)  # key_format = bytes, then string: same writer schema, one more column
    fake.add(_rows([b"b"], T0 + HOUR, 0, {"_key": pa.array(["b"])}), 0, T0 + HOUR, layout.key_bucket(b"a", 4))
    fake.add_key(b"c", T0 + 2)
    sql = 'SELECT count(*) AS n, count(_key) AS k FROM "web-events"'
    engine.prepare(sql)
    with caplog.at_level(logging.WARNING):
        assert engine.run(sql).to_pylist() == [{"n": 7, "k": 1}]
    assert "reading every footer" in caplog.text


def test_a_value_column_named_like_a_directory_keeps_the_files_values(fake, engine):
    fake.add(_rows([b"a"], T0, 0, {"topic": pa.array(["x"]), "hour": pa.array([99])}), 0, T0, 0)
    engine.prepare('SELECT * FROM "web-events"')
    (row,) = engine.run('SELECT topic, hour, hour_partition FROM "web-events"').to_pylist()
    assert row == {"topic": "x", "hour": 99, "hour_partition": datetime.fromtimestamp(T0 / 1000, UTC).hour}


def test_a_field_partitioned_topic_shows_the_files_values_and_the_directory_as_field_partition(tmp_path):
    store = LocalStore(tmp_path / "archive")
    files = {"FR": ["FR", "FR"], "_other": ["GB", "US"], "_null": [None]}
    for i, (directory, countries) in enumerate(files.items()):
        table = _rows([b"k"] * len(countries), T0, 0).set_column(0, "country", pa.array(countries, pa.string()))
        key = layout.DataKey("orders", 0, 10 * i, 1, f"dt=2025-11-24/country={directory}").format()
        buf = io.BytesIO()
        pq.write_table(table, buf)
        store.put(key, buf.getvalue())
        entry = FileEntry(key, table.num_rows, len(buf.getvalue()), "", 10 * i, 10 * i + 9, T0, T0, [1])
        store.put(layout.ledger_key("orders", 0, i + 1), Entry(i + 1, 1, "commit", 10 * i, 10 * i + 10, [entry],
                                                               table.num_rows).to_json())
    engine = q.Engine(Archive(store))
    try:
        sql = 'SELECT country, country_partition FROM orders WHERE country_partition = \'_other\' ORDER BY 1'
        engine.prepare(sql)
        assert engine.run(sql).to_pylist() == [{"country": "GB", "country_partition": "_other"},
                                               {"country": "US", "country_partition": "_other"}]
        explanation = engine.explain(sql)
        assert [f.key.split("/")[2] for f, _ in explanation.files_read("orders")] == ["country=_other"]
        assert "country" in engine.run('SELECT * FROM orders').column_names
    finally:
        engine.close()


def test_key_shortcut_quotes_any_key_bytes(fake, engine):
    key = "it's \\x00 ünïcode".encode()
    fake.add_key(key, T0)
    fake.add_key(b"other", T0)
    view = engine.topic_view("web-events")
    sql = q.topic_sql(view, TopicLayout(key_buckets=4), key)
    assert f'"key_bucket" = {layout.key_bucket(key, 4)}' in sql
    engine.prepare(sql)
    assert set(engine.run(sql)["_kafka_key"].to_pylist()) == {key}


def test_key_shortcut_warns_when_the_archive_has_buckets_the_settings_do_not_make(fake, engine, caplog):
    fake.add_key(b"a", T0)
    with caplog.at_level(logging.WARNING):
        q.topic_sql(engine.topic_view("web-events"), TopicLayout(key_buckets=400), b"a")
    assert "key_buckets = 400" in caplog.text


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 72 * 60), st.integers(1, 30 * 60), st.sampled_from(["day", "hour", "minute"]))
def test_time_bounds_select_exactly_the_directories_overlapping_the_range(start_min, length_min, granularity):
    gran = layout.Granularity(granularity)
    start, end = T0 + start_min * 60_000 + 17, T0 + (start_min + length_min) * 60_000
    buckets = range(layout.time_bucket(T0 - 86_400_000, gran), T0 + 5 * 86_400_000, gran.millis)
    rows = [dict(p.split("=") for p in layout.time_path(b, gran).split("/")) | {"start": b} for b in buckets]
    con = duckdb.connect()
    con.register("dirs", pa.Table.from_pylist(rows))
    columns = tuple(k for k in ("dt", "hour", "minute") if k in rows[0])
    casts = ", ".join(f"{c}::{q.PARTITION_TYPES[c]} AS {c}" for c in columns)
    where = " AND ".join(q._time_conditions(columns, start, end))
    selected = {r[0] for r in con.execute(f"SELECT start FROM (SELECT start, {casts} FROM dirs) WHERE {where}").fetchall()}
    assert selected == {b for b in buckets if b < end and b + gran.millis > start}


def test_statement_options():
    with pytest.raises(ConfigError, match="--key builds the query"):
        q.statement(None, "SELECT 1", key="k")
    with pytest.raises(ConfigError, match="give a SQL statement, or --topic"):
        q.statement(None, None)
    with pytest.raises(ConfigError, match="--from: 'yesterday' is not an ISO-8601 time"):
        q.statement(None, None, topic="t", start="yesterday")
    with pytest.raises(ConfigError, match="is not before --to"):
        q.statement(None, None, topic="t", start="-1h", end="-2h")
    assert q.statement(None, "SELECT 1") == "SELECT 1"


def test_key_shortcut_takes_the_bucket_count_from_the_archives_record(fake, engine, caplog):
    fake.add_key(b"c", T0)
    with caplog.at_level(logging.WARNING):
        sql = q.statement(engine, None, topic="web-events", key="c")
    assert "key_bucket" not in sql  # no record: the bucket count is unknown, every bucket is read
    assert "no layout record" in caplog.text
    assert set(engine.run(sql)["_kafka_key"].to_pylist()) == {b"c"}
    layouts.record(fake.store, "web-events", TopicLayout(key_buckets=4))
    sql = q.statement(engine, None, topic="web-events", key="c")
    assert f'"key_bucket" = {layout.key_bucket(b"c", 4)}' in sql
    assert set(engine.run(sql)["_kafka_key"].to_pylist()) == {b"c"}

def _result() -> pa.Table:
    return pa.table({"country": ["FR", None], "n": [3, 1],
                     "device": pa.array([{"os": "iOS"}, None]),
                     "at": pa.array([T0, T0 + 1], pa.timestamp("ms", tz="UTC")),
                     "key": pa.array([b"s-1", b"\x00'"], pa.binary())})


def test_outputs_round_trip(tmp_path):
    table = _result()
    out = io.StringIO()
    q.write_csv(table, out)
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0] == ["country", "n", "device", "at", "key"]
    assert rows[1] == ["FR", "3", "{'os': iOS}", "2025-11-24 16:00:00+00", "s-1"]
    assert rows[2] == ["", "1", "", "2025-11-24 16:00:00.001+00", "\\x00\\x27"]  # DuckDB's blob text
    out = io.StringIO()
    q.write_jsonl(table, out)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[0] == {"country": "FR", "n": 3, "device": {"os": "iOS"}, "at": "2025-11-24 16:00:00+00", "key": "s-1"}
    assert lines[1]["country"] is None and lines[1]["device"] is None
    q.write_parquet(table, str(tmp_path / "out.parquet"))
    assert pq.read_table(tmp_path / "out.parquet").equals(table)
    text = q.render_table(table)
    assert text.splitlines()[0].split() == ["country", "n", "device", "at", "key"]
    assert text.endswith("(2 rows)\n") and "NULL" in text
