"""Iceberg tables over real archives: published from the ledger, read back by DuckDB's iceberg
extension and by pyiceberg, each record exactly once (after compaction, races, crashes and a
schema change)."""

from __future__ import annotations

import json
import os
import subprocess
import threading

import pytest

from archiver import demo
from archiver.archive import Archive
from archiver.codec.registry import Registry
from archiver.config import KafkaSettings, RegistrySettings
from archiver.store import open_store
from tests.integration.conftest import ARCHIVER, archive_demo, archiver
from tests.integration.iceberg_readers import (
    duckdb_counts,
    duckdb_files_read,
    publisher,
    spark_counts,
    spark_table,
    summary_positions,
    table,
)
from tests.integration.test_catalog import glue_client, produce_v2

pytestmark = pytest.mark.integration

HOUR = 3600_000
START = 1_764_000_000_000  # 2025-11-24T16:00:00Z, on an hour




def heads(env: dict, topic: str) -> dict[int, int]:
    archive = Archive(open_store(env["ARCHIVER_ARCHIVE_URL"]))
    from archiver.ledger import PartitionLedger

    return {p: PartitionLedger(archive.store, topic, p).read_head().seq for p in archive.partitions(topic)}


def more(services, topic, records: int) -> None:
    """Produce `records` more demo events into an archived topic and archive them (a second commit)."""
    with Registry(RegistrySettings.from_env(topic.env)) as registry:
        demo.produce(KafkaSettings.from_env(topic.env), registry, topic.topic, records, partitions=topic.partitions,
                     start_ms=topic.start_ms, span_ms=topic.span_ms)
    result = archiver(topic.env, "run", "--once", "--topics", topic.topic)
    assert result.returncode == 0, result.stderr[-3000:]


def test_run_publishes_its_commits_and_readers_see_each_record_once_through_compaction(services, unique, spark):
    topic = archive_demo(services, unique, records=3000, start_ms=START, span_ms=3 * HOUR)
    tbl = table(topic.env, topic.topic)
    assert tbl is not None, "run --once publishes what it committed"
    assert summary_positions(tbl) == heads(topic.env, topic.topic)
    assert duckdb_counts(topic.env, tbl.metadata_location) == (3000, 3000)
    assert spark_counts(spark, topic.topic)[:2] == (3000, 3000)

    more(services, topic, 2000)  # a second commit per partition and directory: something to compact
    tbl = table(topic.env, topic.topic)
    assert duckdb_counts(topic.env, tbl.metadata_location) == (5000, 5000)
    assert spark_counts(spark, topic.topic)[:2] == (5000, 5000)
    files_before = len(tbl.inspect.files())

    result = archiver(topic.env, "compact", "--closed-after", "0s", "--grace", "0s")
    assert result.returncode == 0, result.stderr[-3000:]
    totals = json.loads(result.stdout.splitlines()[-1])
    assert totals["files_in"] > 0 and totals["deleted_files"] == totals["files_in"]

    tbl = table(topic.env, topic.topic)
    snapshot = tbl.current_snapshot()
    assert snapshot.summary.operation.value == "overwrite"  # merged files in, replaced ones out: one commit
    assert len(tbl.snapshots()) == 1, "a grace of 0 s expires every snapshot but the current one"
    assert len(tbl.inspect.files()) == files_before - totals["files_in"] + totals["files_out"]
    paths = tbl.inspect.files()["file_path"].to_pylist()
    assert len({p.rsplit("/", 1)[0] for p in paths}) == len(paths)  # merged across partitions: one file a directory
    assert summary_positions(tbl) == heads(topic.env, topic.topic)
    assert duckdb_counts(topic.env, tbl.metadata_location) == (5000, 5000)  # and every file it names exists
    assert spark_counts(spark, topic.topic)[:2] == (5000, 5000)
    assert tbl.scan().to_arrow().num_rows == 5000


def test_compaction_keeps_replaced_files_while_a_retained_snapshot_names_them(services, unique):
    topic = archive_demo(services, unique, records=1500, start_ms=START, span_ms=HOUR)
    more(services, topic, 1500)
    old = table(topic.env, topic.topic)
    result = archiver(topic.env, "compact", "--closed-after", "0s", "--grace", "1h")
    assert result.returncode == 0, result.stderr[-3000:]
    totals = json.loads(result.stdout.splitlines()[-1])
    assert totals["files_in"] > 0 and totals["deleted_files"] == 0
    tbl = table(topic.env, topic.topic)
    assert len(tbl.snapshots()) == 3
    # time travel to the snapshot before compaction still reads every record once
    assert duckdb_counts(topic.env, old.metadata_location) == (3000, 3000)
    assert duckdb_counts(topic.env, tbl.metadata_location) == (3000, 3000)


def test_time_filters_prune_files_and_status_reports_the_table(services, unique, spark):
    topic = archive_demo(services, unique, records=3000, start_ms=START, span_ms=3 * HOUR)
    tbl = table(topic.env, topic.topic)
    files = len(tbl.inspect.files())
    one_hour = (f"_kafka_timestamp >= make_timestamptz({START + HOUR}::BIGINT * 1000) AND "
                f"_kafka_timestamp < make_timestamptz({START + 2 * HOUR}::BIGINT * 1000)")
    read = duckdb_files_read(topic.env, tbl.metadata_location, one_hour)
    assert 0 < read <= files / 2, (read, files)
    rows, _ = duckdb_counts(topic.env, tbl.metadata_location, one_hour)
    assert 0 < rows < 3000
    spark_hour = (f"_kafka_timestamp >= timestamp_millis({START + HOUR}) AND "
                  f"_kafka_timestamp < timestamp_millis({START + 2 * HOUR})")
    n, distinct, metrics = spark_counts(spark, topic.topic, spark_hour)
    assert n == distinct == rows
    assert metrics["resultDataFiles"] == read and metrics["skippedDataFiles"] == files - read, metrics
    assert [p.transform.__class__.__name__ for p in tbl.spec().fields] == ["HourTransform"]

    status = archiver(topic.env, "catalog", "status", "--topic", topic.topic, "--format", "json")
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    assert doc["table"] == f"archiver.{topic.topic.replace('-', '_')}" and doc["catalog"] == "sql"
    assert doc["metadata_location"] == tbl.metadata_location
    assert doc["snapshot_id"] == tbl.current_snapshot().snapshot_id
    assert (doc["data_files"], doc["records"], doc["lag_records"]) == (files, 3000, 0)
    assert {p["partition"]: (p["published_seq"], p["ledger_seq"]) for p in doc["partitions"]} == \
        {p: (s, s) for p, s in heads(topic.env, topic.topic).items()}


def test_status_shows_lag_until_publish_and_publishing_again_changes_nothing(services, unique):
    topic = archive_demo(services, unique, records=900, start_ms=START, span_ms=HOUR)
    no_publish = topic.env | {"ARCHIVER_PUBLISH_INTERVAL_S": "0"}
    with Registry(RegistrySettings.from_env(topic.env)) as registry:
        demo.produce(KafkaSettings.from_env(topic.env), registry, topic.topic, 600, partitions=topic.partitions,
                     start_ms=START, span_ms=HOUR)
    result = archiver(no_publish, "run", "--once", "--topics", topic.topic)
    assert result.returncode == 0, result.stderr[-3000:]
    doc = json.loads(archiver(topic.env, "catalog", "status", "--topic", topic.topic, "--format", "json").stdout)
    assert (doc["records"], doc["lag_records"]) == (900, 600)

    first = archiver(topic.env, "catalog", "publish", "--topic", topic.topic)
    assert first.returncode == 0 and "snapshot" in first.stdout, first.stderr
    again = archiver(topic.env, "catalog", "publish", "--topic", topic.topic)
    assert again.stdout.strip().endswith("is up to date")
    tbl = table(topic.env, topic.topic)
    assert duckdb_counts(topic.env, tbl.metadata_location) == (1500, 1500)


def test_racing_publishers_and_crashes_around_the_table_commit(services, unique, monkeypatch):
    topic = archive_demo(services, unique, records=600, start_ms=START, span_ms=HOUR)
    no_publish = topic.env | {"ARCHIVER_PUBLISH_INTERVAL_S": "0"}
    for _ in range(2):
        with Registry(RegistrySettings.from_env(topic.env)) as registry:
            demo.produce(KafkaSettings.from_env(topic.env), registry, topic.topic, 300,
                         partitions=topic.partitions, start_ms=START, span_ms=HOUR)
        assert archiver(no_publish, "run", "--once", "--topics", topic.topic).returncode == 0

    # a publisher that dies before its commit leaves the table as it was
    crashing = publisher(topic.env)
    before = crashing.load(topic.topic).current_snapshot().snapshot_id

    def die(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("archiver.tables._data_file", die)
    with pytest.raises(KeyboardInterrupt):
        crashing.publish(topic.topic)
    monkeypatch.undo()
    assert table(topic.env, topic.topic).current_snapshot().snapshot_id == before

    # one that dies right after its commit landed: the next publisher finds the table up to date
    from pyiceberg.table import Transaction

    commit = Transaction.commit_transaction

    def commit_then_die(self):
        commit(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(Transaction, "commit_transaction", commit_then_die)
    with pytest.raises(KeyboardInterrupt):
        publisher(topic.env).publish(topic.topic)
    monkeypatch.undo()
    landed = table(topic.env, topic.topic)
    assert landed.current_snapshot().snapshot_id != before
    assert duckdb_counts(topic.env, landed.metadata_location) == (1200, 1200)
    assert publisher(topic.env).publish(topic.topic).snapshot_id is None
    with Registry(RegistrySettings.from_env(topic.env)) as registry:
        demo.produce(KafkaSettings.from_env(topic.env), registry, topic.topic, 300, partitions=topic.partitions,
                     start_ms=START, span_ms=HOUR)
    assert archiver(no_publish, "run", "--once", "--topics", topic.topic).returncode == 0

    # four publishers race: one commit wins, the others are refused and find nothing left to do
    results, errors = [], []

    def publish():
        try:
            results.append(publisher(topic.env).publish(topic.topic))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=publish) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sum(r.snapshot_id is not None for r in results) == 1, [r.line() for r in results]
    tbl = table(topic.env, topic.topic)
    assert duckdb_counts(topic.env, tbl.metadata_location) == (1500, 1500)
    assert summary_positions(tbl) == heads(topic.env, topic.topic)


def test_a_new_writer_schema_widens_the_table_and_old_rows_read_null(services, kafka, registry, unique, spark):
    topic = archive_demo(services, unique, records=600)
    produce_v2(kafka, registry, topic.topic, 50)
    result = archiver(topic.env, "run", "--once", "--topics", topic.topic)
    assert result.returncode == 0, result.stderr[-3000:]
    tbl = table(topic.env, topic.topic)
    assert "experiment" in tbl.schema().column_names
    from tests.integration.iceberg_readers import duckdb_connection

    con = duckdb_connection(topic.env)
    rows = con.execute(f"SELECT experiment, count(*) FROM iceberg_scan('{tbl.metadata_location}') "
                       "GROUP BY 1 ORDER BY 1 NULLS FIRST").fetchall()
    assert rows == [(None, 600), ("exp-b", 50)]
    by_spark = spark.sql(f"SELECT experiment, count(*) FROM {spark_table(topic.topic)} GROUP BY 1 "
                         "ORDER BY 1 NULLS FIRST").collect()
    assert [tuple(r) for r in by_spark] == rows
    assert spark_counts(spark, topic.topic)[:2] == (650, 650)


def test_a_key_filter_prunes_the_files_of_a_field_partitioned_topic(services, unique, spark, tmp_path):
    config = tmp_path / "archiver.toml"
    config.write_text('[defaults]\nkey_partitioning = "field"\nkey_field = "country"\n'
                      'key_field_values = ["FR", "DE", "US"]\n')
    topic = archive_demo(services, unique, records=2000, start_ms=START, span_ms=2 * HOUR, config=str(config))
    tbl = table(topic.env, topic.topic)
    files = len(tbl.inspect.files())
    n, distinct, metrics = spark_counts(spark, topic.topic, "country = 'FR'")
    expected = duckdb_counts(topic.env, tbl.metadata_location, "country = 'FR'")
    assert (n, distinct) == expected and n > 0
    assert metrics["skippedDataFiles"] >= files / 2, metrics  # FR files only (and _other's, whose bounds span FR)
    ledger = archiver(topic.env, "query", f"SELECT count(*) AS n FROM \"{topic.topic}\" WHERE country = 'FR'",
                      "--format", "csv")
    assert ledger.returncode == 0, ledger.stderr
    assert ledger.stdout.splitlines()[-1] == str(n)


def test_readers_never_see_a_duplicate_while_a_publishing_daemon_is_killed(services, kafka, registry, unique,
                                                                          spark, tmp_path):
    import random
    import signal
    import time

    from tests.integration.test_run import write_config

    rng = random.Random(7)
    config = write_config(tmp_path, max_records=500, interval_s=0.5)
    env = os.environ | services.env | {"ARCHIVER_ARCHIVE_URL": f"s3://{services.bucket}/{unique}",
                                       "ARCHIVER_GROUP_ID": f"archiver-{unique}", "ARCHIVER_CONFIG": config,
                                       "ARCHIVER_PUBLISH_INTERVAL_S": "1", "ARCHIVER_GROUP_INSTANCE_ID": "kill-test",
                                       # and merging the closed hour across partitions, killed midway too
                                       "ARCHIVER_COMPACT_INTERVAL_S": "1", "ARCHIVER_COMPACT_CLOSED_AFTER_S": "0",
                                       "ARCHIVER_COMPACT_GRACE_S": "0"}
    produced = 0
    seen_counts = []
    for trial in range(5):
        demo.produce(kafka, registry, unique, 1500, partitions=3, start_ms=START + trial * 1500, span_ms=1500)
        produced += 1500
        proc = subprocess.Popen([ARCHIVER, "run", "--topics", unique], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # killed at a random moment; once nothing was published yet by the last trial, later (a
        # loaded machine may need more than a few seconds to start, claim, commit and publish)
        published = bool(seen_counts) and max(seen_counts) > 0
        time.sleep(rng.uniform(2.0, 5.0) + (0.0 if published or trial < 3 else 6.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        tbl = table(env, unique)
        if tbl is not None:  # whatever was published so far: each record at most once
            rows, distinct = duckdb_counts(env, tbl.metadata_location)
            assert rows == distinct <= produced
            n, d, _ = spark_counts(spark, unique)
            assert (n, d) == (rows, distinct)
            seen_counts.append(rows)
    done = archiver(env, "run", "--once", "--topics", unique)
    assert done.returncode == 0, done.stderr[-3000:]
    merged = archiver(env, "compact", "--topics", unique, "--closed-after", "0s", "--grace", "0s",
                      "--stale-after", "0s")  # finish what a killed daemon left
    assert merged.returncode == 0, merged.stderr[-3000:]
    archive = Archive(open_store(env["ARCHIVER_ARCHIVE_URL"]))
    assert any(f.partitions for p in range(3) for f in archive.files(unique, p)), "merged across partitions"
    tbl = table(env, unique)
    assert duckdb_counts(env, tbl.metadata_location) == (produced, produced)
    assert spark_counts(spark, unique)[:2] == (produced, produced)
    status = json.loads(archiver(env, "catalog", "status", "--topic", unique, "--format", "json").stdout)
    assert [p["lag_entries"] for p in status["partitions"]] == [0, 0, 0]  # at most claims left after the position
    assert seen_counts and max(seen_counts) > 0, "the killed daemons published something"


def test_glue_catalog_holds_the_table_athena_reads(services, unique, glue):
    topic = archive_demo(services, unique, records=900, start_ms=START, span_ms=HOUR)
    env = {k: v for k, v in topic.env.items() if k != "ARCHIVER_CATALOG_URI"} | {
        "ARCHIVER_CATALOG_TYPE": "glue", "ARCHIVER_CATALOG_GLUE__ENDPOINT": glue,
        "ARCHIVER_CATALOG_GLUE__REGION": "us-east-1", "ARCHIVER_CATALOG_NAMESPACE": "analytics"}
    result = archiver(env, "catalog", "publish", "--topic", topic.topic)
    assert result.returncode == 0, result.stderr[-3000:]
    name = topic.topic.replace("-", "_")
    assert result.stdout.startswith(f"{topic.topic}: analytics.{name} snapshot ")

    stored = glue_client(glue).get_table(DatabaseName="analytics", Name=name)["Table"]
    assert stored["Parameters"]["table_type"] == "ICEBERG"
    metadata = stored["Parameters"]["metadata_location"]
    assert metadata.startswith(f"{topic.url}/_iceberg/{name}/metadata/")
    assert duckdb_counts(env, metadata) == (900, 900)
    status = json.loads(archiver(env, "catalog", "status", "--topic", topic.topic, "--format", "json").stdout)
    assert (status["catalog"], status["metadata_location"], status["records"]) == ("glue", metadata, 900)


def test_a_rest_catalog_server_holds_the_table(services, unique, rest_catalog):
    topic = archive_demo(services, unique, records=600, start_ms=START, span_ms=HOUR)
    env = topic.env | {"ARCHIVER_CATALOG_TYPE": "rest", "ARCHIVER_CATALOG_URI": rest_catalog,
                       "ARCHIVER_CATALOG_NAMESPACE": "lake"}
    result = archiver(env, "catalog", "publish", "--topic", topic.topic)
    assert result.returncode == 0, result.stderr[-3000:]
    status = json.loads(archiver(env, "catalog", "status", "--topic", topic.topic, "--format", "json").stdout)
    assert (status["catalog"], status["table"], status["records"]) == ("rest", f"lake.{unique.replace('-', '_')}", 600)
    assert duckdb_counts(env, status["metadata_location"]) == (600, 600)
    again = archiver(env, "catalog", "publish", "--topic", topic.topic)
    assert again.stdout.strip().endswith("is up to date")
