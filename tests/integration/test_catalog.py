"""`archiver ddl` and `archiver catalog sync` against real S3 archives and a real moto Glue server."""

from __future__ import annotations

import io
import re

import boto3
import fastavro
import pyarrow.parquet as pq

from archiver import demo
from archiver.archive import Archive
from archiver.source import kafka as source_kafka
from archiver.store import open_store
from tests.integration.conftest import archive_demo, archiver
from tests.unit.test_catalog import assert_matches, parse_hive

# The demo schema as Athena must see it, written out by hand.
DEMO_COLUMNS = [
    ("event_id", "string"), ("event_time", "timestamp"), ("event_type", "string"), ("session_id", "string"),
    ("user_id", "string"), ("url", "string"), ("referrer", "string"), ("duration_ms", "bigint"),
    ("device", "struct<kind:string,os:string,browser:string,screen_width:int>"), ("country", "string"),
    ("tags", "array<string>"), ("amount_cents", "bigint"),
    ("_kafka_partition", "int"), ("_kafka_offset", "bigint"), ("_kafka_timestamp", "timestamp"),
    ("_kafka_timestamp_type", "string"), ("_kafka_key", "binary"),
    ("_kafka_headers", "array<struct<key:string,value:binary>>"), ("_schema_id", "int"),
]
V2 = dict(demo.SCHEMA, fields=demo.SCHEMA["fields"] + [{"name": "experiment", "type": ["null", "string"],
                                                          "default": None}])




def ddl(env: dict, *args: str) -> str:
    result = archiver(env, "ddl", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def parse_ddl(text: str) -> tuple[list[tuple[str, str]], list[str], str, dict[str, str]]:
    """(columns, partition columns, location, table properties) of one CREATE EXTERNAL TABLE."""
    body = re.search(r"\(\n(.*?)\n\)\nPARTITIONED BY \(\n(.*?)\n\)\nSTORED AS PARQUET\nLOCATION '([^']*)'\n"
                     r"TBLPROPERTIES \(\n(.*?)\n\);", text, re.DOTALL)
    assert body, text
    columns = [re.fullmatch(r"  `([^`]+)` (.+?),?", line).groups() for line in body[1].splitlines()]
    partitions = [re.fullmatch(r"  `([^`]+)` string,?", line)[1] for line in body[2].splitlines()]
    props = dict(re.fullmatch(r"  '([^']*)'='([^']*)',?", line).groups() for line in body[4].splitlines())
    return columns, partitions, body[3], props


def glue_client(endpoint: str):
    return boto3.client("glue", endpoint_url=endpoint, region_name="us-east-1")


def test_ddl_columns_are_the_parquet_schema_of_every_archived_file(archived_demo):
    columns, partitions, location, props = parse_ddl(ddl(archived_demo.env, "--topic", archived_demo.topic,
                                                         "--database", "analytics"))
    assert columns == DEMO_COLUMNS
    archive = Archive(open_store(archived_demo.url))
    files = list(archive.files(archived_demo.topic))
    for f in files:
        schema = pq.read_schema(io.BytesIO(archive.store.get(f.key)))
        assert [(field.name) for field in schema] == [name for name, _ in columns], f.key
        for field, (_, hive) in zip(schema, columns):
            assert_matches(field.type, parse_hive(hive))

    # every committed file lies where the projection looks: LOCATION + the template, values in range
    assert location == f"{archived_demo.url}/topic={archived_demo.topic}/"
    assert partitions == ["dt", "hour", "key_bucket"]
    assert props["projection.enabled"] == "true" and props["parquet.compression"] == "ZSTD"
    assert props["projection.dt.range"] == "2025-11-24,NOW"  # the demo starts at 2025-11-24T16:00Z
    assert (props["projection.key_bucket.range"], props["projection.key_bucket.digits"]) == ("0,15", "2")
    pattern = re.sub(r"\\\$\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(props["storage.location.template"]))
    for f in files:
        m = re.fullmatch(pattern + r"[^/]+\.parquet", f"{archived_demo.url}/{f.key}")
        assert m, f.key
        assert 0 <= int(m["hour"]) <= 23 and len(m["hour"]) == 2
        assert 0 <= int(m["key_bucket"]) <= 15 and len(m["key_bucket"]) == 2
        assert m["dt"] >= "2025-11-24"


def test_ddl_of_a_field_partitioned_daily_topic_with_or_without_its_configuration(services, unique, tmp_path):
    config = tmp_path / "archiver.toml"
    config.write_text('[defaults]\ntime_granularity = "day"\nkey_partitioning = "field"\nkey_field = "country"\n'
                      'key_field_values = ["FR", "DE", "US"]\n')
    topic = archive_demo(services, unique, records=600, config=str(config))

    columns, partitions, location, props = parse_ddl(ddl(topic.env, "--topic", topic.topic, "--table", "events"))
    assert [name for name, _ in columns] == [name for name, _ in DEMO_COLUMNS]
    assert partitions == ["dt", "country_partition"]  # `country` is a data column already
    assert props["projection.country_partition.type"] == "enum"
    assert props["projection.country_partition.values"] == "DE,FR,US,_other,_null"
    assert props["storage.location.template"] == f"{location}dt=${{dt}}/country=${{country_partition}}/"
    assert "projection.hour.type" not in props

    # the layout comes from the archive: another configuration, or none, gives the same table
    without_config = {k: v for k, v in topic.env.items() if k != "ARCHIVER_CONFIG"}
    assert ddl(without_config, "--topic", topic.topic, "--table", "events") == \
        ddl(topic.env, "--topic", topic.topic, "--table", "events")


def test_catalog_sync_creates_the_table_leaves_it_alone_then_follows_a_schema_evolution(
        services, registry, kafka, unique, glue):
    topic = archive_demo(services, unique, records=600)
    env = topic.env | {"AWS_ENDPOINT_URL_GLUE": glue}
    table = unique.replace("-", "_")
    client = glue_client(glue)

    first = archiver(env, "catalog", "sync", "--database", "archive_db", "--topic", topic.topic)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[-1] == f"archive_db.{table}: created"
    columns, partitions, location, props = parse_ddl(ddl(env, "--topic", topic.topic))
    stored = client.get_table(DatabaseName="archive_db", Name=table)["Table"]
    sd = stored["StorageDescriptor"]
    assert [(c["Name"], c["Type"]) for c in sd["Columns"]] == columns == DEMO_COLUMNS
    assert [(k["Name"], k["Type"]) for k in stored["PartitionKeys"]] == [(p, "string") for p in partitions]
    assert sd["Location"] == location
    assert sd["SerdeInfo"]["SerializationLibrary"] == "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
    assert sd["InputFormat"] == "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
    assert stored["TableType"] == "EXTERNAL_TABLE"
    assert stored["Parameters"] == {"EXTERNAL": "TRUE", **props}

    again = archiver(env, "catalog", "sync", "--database", "archive_db", "--topic", topic.topic)
    assert again.stdout == f"archive_db.{table}: unchanged\n"
    assert len(client.get_table_versions(DatabaseName="archive_db", TableName=table)["TableVersions"]) == 1

    produce_v2(kafka, registry, topic.topic, 50)
    run = archiver(topic.env, "run", "--once", "--topics", topic.topic)
    assert run.returncode == 0, run.stderr[-3000:]
    updated = archiver(env, "catalog", "sync", "--database", "archive_db", "--topic", topic.topic)
    assert updated.stdout == f"archive_db.{table}: updated (+experiment)\n"
    names = [c["Name"] for c in client.get_table(DatabaseName="archive_db", Name=table)["Table"]
             ["StorageDescriptor"]["Columns"]]
    assert names[11:14] == ["amount_cents", "experiment", "_kafka_partition"]
    assert [n for n, _ in parse_ddl(ddl(env, "--topic", topic.topic))[0]] == names
    assert len(client.get_table_versions(DatabaseName="archive_db", TableName=table)["TableVersions"]) == 2


def produce_v2(kafka, registry, topic: str, count: int) -> None:
    """Records written with v2 of the demo schema (an added optional field), later than the v1 ones."""
    v2_id = registry.register(f"{topic}-value", V2)
    parsed = fastavro.parse_schema(V2)
    producer = source_kafka.producer(kafka)
    for e in demo.events(count, 1_764_000_000_000 + 4 * 3600_000, 60_000, seed=9):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed, dict(e.value, experiment="exp-b"))
        producer.produce(topic, b"\x00" + v2_id.to_bytes(4, "big") + buf.getvalue(), e.key, timestamp=e.timestamp_ms)
    source_kafka.flush(producer)


def test_unknown_topics_and_empty_archives_are_one_line_and_exit_2(services, archived_demo, unique, glue):
    result = archiver(archived_demo.env, "ddl", "--topic", "no-such-topic")
    assert result.returncode == 2
    assert result.stderr == f"archiver: error: topic 'no-such-topic' is not archived in {archived_demo.url}\n"
    empty = archived_demo.env | {"ARCHIVER_ARCHIVE_URL": f"s3://{services.bucket}/{unique}",
                                 "AWS_ENDPOINT_URL_GLUE": glue}
    result = archiver(empty, "catalog", "sync", "--database", "d")
    assert result.returncode == 2
    assert result.stderr == f"archiver: error: no archived topics in s3://{services.bucket}/{unique}\n"
    result = archiver(archived_demo.env, "ddl", "--topic", "bad/topic")
    assert result.returncode == 2 and result.stderr.startswith("archiver: error: topic name 'bad/topic' is not")
