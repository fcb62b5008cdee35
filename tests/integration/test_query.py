"""`archiver query` against the real S3 archive of the shared demo topic, checked with pyarrow."""

from __future__ import annotations

import collections
import csv
import io
import json
import subprocess
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from archiver import layout
from archiver.archive import Archive
from archiver.store import open_store
from tests.integration.conftest import ARCHIVER

HOUR = 3_600_000


def query(demo, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([ARCHIVER, "query", *args], capture_output=True, text=True, env=demo.env, timeout=300,
                            check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"archiver query failed ({result.returncode}): {result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def reference(archived_demo) -> pa.Table:
    """Every archived row, read file by file with pyarrow through the ledger."""
    archive = Archive(open_store(archived_demo.url))
    return pa.concat_tables([archive.read(f) for f in archive.files(archived_demo.topic)])


@pytest.fixture(scope="module")
def files(archived_demo):
    return list(Archive(open_store(archived_demo.url)).files(archived_demo.topic))


def test_counts_by_country_equal_pyarrow(archived_demo, reference):
    out = query(archived_demo, f'SELECT country, count(*) AS n FROM "{archived_demo.topic}" GROUP BY 1',
                "--format", "csv").stdout
    got = {row["country"]: int(row["n"]) for row in csv.DictReader(io.StringIO(out))}
    assert got == dict(collections.Counter(reference["country"].to_pylist()))
    assert sum(got.values()) == archived_demo.records


def test_nested_fields_through_the_sanitised_alias(archived_demo, reference):
    name = archived_demo.topic.replace("-", "_")
    out = query(archived_demo, f"SELECT device.os AS os, count(*) AS n FROM {name} GROUP BY ALL", "--format",
                "jsonl").stdout
    got = {row["os"]: row["n"] for row in map(json.loads, out.splitlines())}
    expected = collections.Counter(d["os"] for d in reference["device"].to_pylist())
    assert got == dict(expected)


def _one_key_hour(demo, reference) -> tuple[bytes, int]:
    stamps = pc.cast(reference["_kafka_timestamp"], pa.int64()).to_pylist()
    middle = reference.num_rows // 2
    return reference["_kafka_key"][middle].as_py(), stamps[middle] - stamps[middle] % HOUR


def test_key_shortcut_returns_exactly_the_keys_events_in_time_order(archived_demo, reference):
    key, hour = _one_key_hour(archived_demo, reference)
    start = datetime.fromtimestamp(hour / 1000, UTC).isoformat()
    out = query(archived_demo, "--topic", archived_demo.topic, "--key", key.decode(), "--from", start,
                "--to", datetime.fromtimestamp((hour + HOUR) / 1000, UTC).isoformat(), "--format", "jsonl").stdout
    got = [(r["_kafka_partition"], r["_kafka_offset"]) for r in map(json.loads, out.splitlines())]
    stamps = pc.cast(reference["_kafka_timestamp"], pa.int64())
    mask = pc.and_(pc.equal(reference["_kafka_key"], pa.scalar(key, pa.binary())),
                   pc.and_(pc.greater_equal(stamps, hour), pc.less(stamps, hour + HOUR)))
    expected = reference.filter(mask).sort_by([("_kafka_timestamp", "ascending"), ("_kafka_partition", "ascending"),
                                               ("_kafka_offset", "ascending")])
    assert got == list(zip(expected["_kafka_partition"].to_pylist(), expected["_kafka_offset"].to_pylist()))
    assert got, "the chosen key has events in that hour"


def test_explain_lists_exactly_the_files_of_the_selected_directories(archived_demo, reference, files):
    key, hour = _one_key_hour(archived_demo, reference)
    t = datetime.fromtimestamp(hour / 1000, UTC)
    out = query(archived_demo, "--topic", archived_demo.topic, "--key", key.decode(), "--from", t.isoformat(),
                "--to", datetime.fromtimestamp((hour + HOUR) / 1000, UTC).isoformat(), "--explain").stdout
    directory = f"dt={t:%Y-%m-%d}/hour={t:%H}/{layout.bucket_path(layout.key_bucket(key, 16), 16)}/"
    expected = {f.key for f in files if f"/{directory}" in f.key}
    listed = {line.split()[-1] for line in out.splitlines() if line.startswith("  ") and " bytes  topic=" in line}
    assert listed == expected and expected
    assert f"read {len(expected)} of {len(files)} files" in out
    assert "READ_PARQUET" in out  # the plan follows


def test_where_on_partition_columns_prunes_files(archived_demo, files):
    first = layout.parse_data_key(files[0].key).partition_values()
    sql = (f"SELECT count(*) FROM \"{archived_demo.topic}\" WHERE dt = DATE '{first['dt']}' "
           f"AND hour = {int(first['hour'])}")
    out = query(archived_demo, sql, "--explain").stdout
    expected = {f.key for f in files if f"/dt={first['dt']}/hour={first['hour']}/" in f.key}
    listed = {line.split()[-1] for line in out.splitlines() if " bytes  topic=" in line}
    assert listed == expected and len(expected) < len(files)


def test_output_formats_round_trip(archived_demo, reference, tmp_path):
    sql = (f'SELECT _kafka_partition, _kafka_offset, country, device, tags, _kafka_key, _kafka_timestamp '
           f'FROM "{archived_demo.topic}" ORDER BY _kafka_partition, _kafka_offset LIMIT 40')
    target = tmp_path / "out.parquet"
    query(archived_demo, sql, "--format", "parquet", "--output", str(target))
    table = pq.read_table(target)
    ordered = reference.sort_by([("_kafka_partition", "ascending"), ("_kafka_offset", "ascending")]).slice(0, 40)
    for column in ("_kafka_partition", "_kafka_offset", "country", "device", "tags", "_kafka_key"):
        assert table[column].to_pylist() == ordered[column].to_pylist(), column
    assert pc.cast(table["_kafka_timestamp"], pa.timestamp("ms", tz="UTC")).equals(ordered["_kafka_timestamp"])

    rows = [json.loads(line) for line in query(archived_demo, sql, "--format", "jsonl").stdout.splitlines()]
    assert [r["device"] for r in rows] == ordered["device"].to_pylist()
    assert [r["tags"] for r in rows] == ordered["tags"].to_pylist()
    assert [r["_kafka_key"].encode() for r in rows] == ordered["_kafka_key"].to_pylist()

    csv_file = tmp_path / "out.csv"
    query(archived_demo, sql, "--format", "csv", "--output", str(csv_file))
    parsed = list(csv.DictReader(io.StringIO(csv_file.read_text())))
    assert [(int(r["_kafka_partition"]), int(r["_kafka_offset"]), r["country"]) for r in parsed] == \
        list(zip(ordered["_kafka_partition"].to_pylist(), ordered["_kafka_offset"].to_pylist(),
                 ordered["country"].to_pylist()))

    text = query(archived_demo, sql).stdout.splitlines()
    assert text[0].split()[:3] == ["_kafka_partition", "_kafka_offset", "country"]
    assert text[-1] == "(40 rows)" and len(text) == 43


@pytest.mark.parametrize("args, message", [
    (["SELEC * FROM x"], "archiver: error: SQL: Parser Error: syntax error"),
    (['SELECT nope FROM "{topic}"'], 'archiver: error: SQL: Binder Error: Referenced column "nope" not found'),
    (["SELECT * FROM \"no-such-topic\""], "archiver: error: unknown topic 'no-such-topic'"),
    (["--topic", "no-such-topic", "--key", "k"], "archiver: error: unknown topic 'no-such-topic'"),
    (["SELECT 1", "--format", "parquet"], "archiver: error: --format parquet needs --output FILE"),
])
def test_bad_input_is_one_line_and_exit_2(archived_demo, args, message):
    result = query(archived_demo, *[a.format(topic=archived_demo.topic) for a in args], check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(message) and len(result.stderr.strip().splitlines()) == 1, result.stderr
