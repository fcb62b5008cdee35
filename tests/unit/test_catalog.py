"""Athena/Glue tables: Arrow → Hive types, partition projection, layout checks, Glue diffs."""

from __future__ import annotations

import io
import logging
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings

from archiver import catalog, demo, layout, layouts
from archiver.archive import Archive
from archiver.catalog import PartitionColumn, TableSpec, hive_type
from archiver.cli import cli
from archiver.codec.arrow import arrow_schema, nullable_schema
from archiver.config import TopicSettings
from archiver.errors import ConfigError, TerminalError
from archiver.layouts import TopicLayout
from archiver.store import open_store
from archiver.writer.buffer import Rotation
from tests.unit.test_codec_arrow import record, schemas
from tests.unit.test_sink import FakeRegistry, Harness, messages

# --- a Hive type parser, as strict as Hive's DDL grammar about struct field names ---------------

# Hive keywords reserved in DDL among the names Avro unions and common fields produce.
HIVE_RESERVED = {"array", "map", "boolean", "int", "float", "double", "date", "timestamp", "binary", "bigint",
                 "decimal", "smallint", "null", "true", "false", "user", "time", "table", "select", "from"}
TOKEN = re.compile(r"\s*(`(?:[^`]|``)+`|[A-Za-z_][A-Za-z0-9_.]*|\d+|[<>,:()])")


def parse_hive(text: str, ddl: bool = True):
    """('struct', [(name, t)]) | ('array', t) | ('map', k, v) | ('decimal', p, s) | leaf name."""
    tokens = TOKEN.findall(text)
    assert "".join(tokens) == text.replace(" ", ""), f"unparsable type {text!r}"
    pos = 0

    def take(expected=None):
        nonlocal pos
        token = tokens[pos]
        assert expected is None or token == expected, f"expected {expected!r} at {token!r} in {text}"
        pos += 1
        return token

    def name():
        token = take()
        if token.startswith("`"):
            assert ddl, "Glue type strings take no quotes"
            return token[1:-1].replace("``", "`")
        assert not (ddl and token.lower() in HIVE_RESERVED), f"reserved word {token!r} unquoted in {text}"
        return token

    def type_():
        head = take()
        if head == "struct":
            take("<")
            fields = []
            while tokens[pos] != ">":
                if fields:
                    take(",")
                n = name()
                take(":")
                fields.append((n, type_()))
            take(">")
            return ("struct", fields)
        if head in ("array", "map"):
            take("<")
            inner = [type_()]
            if head == "map":
                take(",")
                inner.append(type_())
            take(">")
            return (head, *inner)
        if head == "decimal":
            take("(")
            p = int(take())
            take(",")
            s = int(take())
            take(")")
            return ("decimal", p, s)
        assert head in {"boolean", "tinyint", "smallint", "int", "bigint", "float", "double", "string", "binary",
                        "timestamp", "date"}, f"not a Hive type: {head}"
        return head

    parsed = type_()
    assert pos == len(tokens), f"trailing tokens in {text}"
    return parsed


# The expected Hive type of each Arrow leaf the sink writes: what Athena reads the Parquet column as.
LEAVES = [(pa.types.is_boolean, "boolean"), (pa.types.is_int32, "int"), (pa.types.is_int64, "bigint"),
          (pa.types.is_float32, "float"), (pa.types.is_float64, "double"), (pa.types.is_string, "string"),
          (pa.types.is_binary, "binary"), (pa.types.is_fixed_size_binary, "binary"),
          (pa.types.is_timestamp, "timestamp"), (pa.types.is_date32, "date"), (pa.types.is_time32, "int"),
          (pa.types.is_time64, "bigint"), (pa.types.is_null, "int")]


def assert_matches(t: pa.DataType, parsed) -> None:
    """The parsed Hive type has the Arrow type's shape: struct names and order, nesting, leaves."""
    if pa.types.is_struct(t):
        assert parsed[0] == "struct"
        assert [n for n, _ in parsed[1]] == [t.field(i).name for i in range(t.num_fields)]
        for i, (_, child) in enumerate(parsed[1]):
            assert_matches(t.field(i).type, child)
    elif pa.types.is_map(t):
        assert parsed[0] == "map" and parsed[1] == "string"
        assert_matches(t.item_type, parsed[2])
    elif pa.types.is_list(t):
        assert parsed[0] == "array"
        assert_matches(t.value_type, parsed[1])
    elif pa.types.is_decimal(t):
        assert parsed == ("decimal", t.precision, t.scale)
    else:
        assert parsed == next(name for test, name in LEAVES if test(t)), f"{t} -> {parsed}"


def written_schema(schema: pa.Schema) -> pa.Schema:
    """The Arrow schema a reader gets back from a Parquet file the sink wrote with `schema`."""
    sink = io.BytesIO()
    pq.write_table(nullable_schema(schema).empty_table(), sink)
    return pq.read_schema(io.BytesIO(sink.getvalue())).remove_metadata()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schemas())
def test_random_avro_schemas_give_hive_types_of_the_same_shape_as_the_parquet_columns(drawn):
    schema, _ = drawn
    try:
        written = written_schema(arrow_schema(schema))
    except (ConfigError, pa.ArrowException, OSError):  # the sink cannot archive these either (fixed(0))
        assume(False)
    for f in written:
        too_wide = any(pa.types.is_decimal(t) and t.precision > 38 for t in _leaves(f.type))
        if too_wide:
            with pytest.raises(TerminalError, match="more than the 38 digits"):
                hive_type(f.type)
            continue
        assert_matches(f.type, parse_hive(hive_type(f.type), ddl=True))
        assert_matches(f.type, parse_hive(hive_type(f.type, ddl=False), ddl=False))


def _leaves(t: pa.DataType):
    yield t
    if pa.types.is_struct(t):
        for i in range(t.num_fields):
            yield from _leaves(t.field(i).type)
    elif pa.types.is_map(t):
        yield from _leaves(t.item_type)
    elif pa.types.is_list(t):
        yield from _leaves(t.value_type)


@pytest.mark.parametrize("avro_type,hive", [
    ("boolean", "boolean"), ("int", "int"), ("long", "bigint"), ("float", "float"), ("double", "double"),
    ("bytes", "binary"), ("string", "string"), (["null", "long"], "bigint"),
    ({"type": "fixed", "name": "F", "size": 4}, "binary"),
    ({"type": "enum", "name": "E", "symbols": ["A"]}, "string"),
    ({"type": "long", "logicalType": "timestamp-millis"}, "timestamp"),
    ({"type": "long", "logicalType": "timestamp-micros"}, "timestamp"),
    ({"type": "long", "logicalType": "local-timestamp-millis"}, "timestamp"),
    ({"type": "int", "logicalType": "date"}, "date"),
    ({"type": "int", "logicalType": "time-millis"}, "int"),
    ({"type": "long", "logicalType": "time-micros"}, "bigint"),
    ({"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}, "decimal(12,2)"),
    ({"type": "string", "logicalType": "uuid"}, "string"),
    ({"type": "array", "items": "string"}, "array<string>"),
    ({"type": "map", "values": "int"}, "map<string,int>"),
    (record(("date", "int"), ("user", "string"), ("n", "long"), name="Inner"),
     "struct<`date`:int,`user`:string,n:bigint>"),
    (["null", "int", "string", {"type": "array", "items": "long"}], "struct<`int`:int,string:string,`array`:array<bigint>>"),
])
def test_avro_types_as_archived_map_to_these_athena_types(avro_type, hive):
    written = written_schema(arrow_schema(record(("f", avro_type))))
    assert hive_type(written.field("f").type) == hive
    assert hive_type(written.field("f").type, ddl=False) == hive.replace("`", "")


def test_decimals_beyond_athenas_38_digits_are_refused_with_the_reason():
    with pytest.raises(TerminalError, match=r"decimal\(50,2\) has more than the 38 digits"):
        hive_type(pa.decimal256(50, 2))


# --- partition projection -----------------------------------------------------------------------


def projection(columns: list[PartitionColumn]) -> dict[str, dict[str, str]]:
    return {c.name: dict(c.projection) for c in columns}


def test_default_layout_projects_dt_hour_and_two_digit_key_buckets():
    columns = catalog.partition_columns(TopicLayout(), "2025-11-24", ["event_id"])
    assert [(c.name, c.directory) for c in columns] == [("dt", "dt"), ("hour", "hour"), ("key_bucket", "key_bucket")]
    p = projection(columns)
    assert p["dt"] == {"type": "date", "format": "yyyy-MM-dd", "range": "2025-11-24,NOW", "interval": "1",
                       "interval.unit": "DAYS"}
    assert p["hour"] == {"type": "integer", "range": "0,23", "digits": "2"}
    assert p["key_bucket"] == {"type": "integer", "range": "0,15", "digits": "2"}


@pytest.mark.parametrize("buckets", [1, 2, 10, 11, 100, 101, 4096])
def test_key_bucket_digits_are_the_layouts_zero_padding(buckets):
    from archiver import layout

    (column,) = catalog.partition_columns(TopicLayout(time_granularity="day", key_buckets=buckets), "2025-01-01",
                                          [])[1:]
    for bucket in (0, buckets - 1):
        value = layout.bucket_path(bucket, buckets).split("=")[1]
        assert column.covers(value)
        assert len(value) == int(dict(column.projection)["digits"])
    assert not column.covers(str(buckets).zfill(len(str(buckets - 1))))


def test_minute_granularity_and_no_key_partitioning():
    columns = catalog.partition_columns(TopicLayout(time_granularity="minute", key_partitioning="none"),
                                        "2025-01-01", [])
    assert [c.name for c in columns] == ["dt", "hour", "minute"]
    assert projection(columns)["minute"] == {"type": "integer", "range": "0,59", "digits": "2"}


def test_a_field_partition_is_an_enum_renamed_when_the_field_is_also_a_column():
    settings = TopicLayout(key_partitioning="field", key_field="country", key_field_values=("US", "FR", "a b"),
                             time_granularity="day")
    (_, column) = catalog.partition_columns(settings, "2025-01-01", ["event_id", "country"])
    assert (column.name, column.directory) == ("country_partition", "country")
    # "a b" can never be a directory (the layout writes it to _other): it is not projected
    assert dict(column.projection) == {"type": "enum", "values": "FR,US,_other,_null"}


def test_a_value_column_named_like_a_time_directory_renames_the_partition_column():
    columns = catalog.partition_columns(TopicLayout(), "2025-01-01", ["DT", "hour_partition"])
    assert [c.name for c in columns] == ["dt_partition", "hour", "key_bucket"]
    spec = TableSpec("t", "t", None, "s3://b/topic=t/", (("DT", pa.string()),), tuple(columns))
    assert spec.properties()["storage.location.template"] == \
        "s3://b/topic=t/dt=${dt_partition}/hour=${hour}/key_bucket=${key_bucket}/"
    with pytest.raises(TerminalError, match="partition column 'hour_partition' clashes with a data column"):
        catalog.partition_columns(TopicLayout(), "2025-01-01", ["hour", "hour_partition"])


# --- tables of a real (local) archive -----------------------------------------------------------

V2 = dict(demo.SCHEMA, fields=demo.SCHEMA["fields"] + [{"name": "experiment", "type": ["null", "string"],
                                                          "default": None}])


@pytest.fixture
def store(tmp_path):
    return open_store(f"file://{tmp_path}")


def archive_with(store, settings: TopicSettings, *batches) -> Archive:
    """Archive batches of messages of topic t, partition 0, with the real sink."""
    h = Harness(store, settings, registry=FakeRegistry({1: demo.SCHEMA, 2: V2}))
    h.sink.assign("t", 0)
    for batch in batches:
        h.sink.ingest("t", 0, batch)
        h.sink.flush("t", 0, Rotation.END)
    return Archive(store)


def v2_messages(count: int, first_offset: int):
    import fastavro

    out = messages(count, first_offset=first_offset, schema_id=2)
    for m, e in zip(out, demo.events(count, 1_764_000_000_000, 2 * 3600_000)):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, fastavro.parse_schema(V2), dict(e.value, experiment="x"))
        m._value = b"\x00\x00\x00\x00\x02" + buf.getvalue()
    return out


def test_columns_are_the_newest_schemas_file_schema_in_order(store):
    archive = archive_with(store, TopicSettings(), messages(30), v2_messages(30, 30))
    spec = catalog.table_spec(archive, "t", "s3://b/p/topic=t/")
    v2_file = next(f for f in archive.files("t") if f.schema_ids == [2])
    schema = pq.read_schema(io.BytesIO(store.get(v2_file.key)))  # as stored: what Athena reads
    assert [n for n, _ in spec.columns] == schema.names
    assert [n for n, _ in spec.columns][11:14] == ["amount_cents", "experiment", "_kafka_partition"]
    assert [t for _, t in spec.columns] == schema.types
    assert dict(spec.partitions[0].projection)["range"] == "2025-11-24,NOW"


def test_tombstone_only_files_are_not_used_for_columns(store):
    tombstones = messages(5, first_offset=30, schema_id=2)
    for m in tombstones:
        m._value = None
    archive = archive_with(store, TopicSettings(), messages(30), tombstones)
    spec = catalog.table_spec(archive, "t", "s3://b/p/topic=t/")
    assert spec.columns[0][0] == "event_id"


def test_the_table_follows_the_layout_the_archive_records_not_a_configuration(store):
    archive = archive_with(store, TopicSettings(time_granularity="day", key_buckets=8), messages(30))
    layouts.record(store, "t", TopicLayout(time_granularity="day", key_buckets=8))
    spec = catalog.table_spec(archive, "t", "s3://b/topic=t/")
    assert [p.name for p in spec.partitions] == ["dt", "key_bucket"]
    assert dict(spec.partitions[1].projection)["range"] == "0,7"


def test_an_archive_without_a_record_is_described_by_its_directories(store, caplog):
    archive = archive_with(store, TopicSettings(time_granularity="day", key_partitioning="field", key_field="country",
                                                key_field_values=("FR", "DE")), messages(60))
    with caplog.at_level(logging.WARNING):
        spec = catalog.table_spec(archive, "t", "s3://b/topic=t/")
    assert "no layout record" in caplog.text
    assert [p.name for p in spec.partitions] == ["dt", "country_partition"]
    present = {layout.parse_data_key(f.key).partition_values()["country"] for f in archive.files("t")}
    assert set(dict(spec.partitions[1].projection)["values"].split(",")) == present | {"_other", "_null"}


def test_files_outside_the_recorded_layout_are_refused(store):
    archive = archive_with(store, TopicSettings(time_granularity="day"), messages(30))
    layouts.record(store, "t", TopicLayout())
    with pytest.raises(ConfigError, match=r"archived under dt/key_bucket directories but its layout gives "
                                          r"dt/hour/key_bucket \(see README: changing a topic's layout\)"):
        catalog.table_spec(archive, "t", "s3://b/topic=t/")
    store.delete(layout.layout_key("t"))
    layouts.record(store, "t", TopicLayout(time_granularity="day", key_buckets=10))
    with pytest.raises(ConfigError, match=r"key_bucket=\d\d, outside what its layout allows \(0,9 with 1 digits"):
        catalog.table_spec(archive, "t", "s3://b/topic=t/")


def test_ddl_statement_of_a_small_table():
    columns = catalog.partition_columns(TopicLayout(time_granularity="day", key_buckets=4), "2025-11-24", ["a"])
    spec = TableSpec("web.events", "web_events", "db", "s3://bucket/it's/topic=web.events/",
                     (("a", pa.int64()), ("select", pa.struct([pa.field("from", pa.string())]))), tuple(columns))
    assert spec.ddl() == """CREATE EXTERNAL TABLE `db`.`web_events` (
  `a` bigint,
  `select` struct<`from`:string>
)
PARTITIONED BY (
  `dt` string,
  `key_bucket` string
)
STORED AS PARQUET
LOCATION 's3://bucket/it\\'s/topic=web.events/'
TBLPROPERTIES (
  'classification'='parquet',
  'parquet.compression'='ZSTD',
  'projection.enabled'='true',
  'projection.dt.type'='date',
  'projection.dt.format'='yyyy-MM-dd',
  'projection.dt.range'='2025-11-24,NOW',
  'projection.dt.interval'='1',
  'projection.dt.interval.unit'='DAYS',
  'projection.key_bucket.type'='integer',
  'projection.key_bucket.range'='0,3',
  'projection.key_bucket.digits'='1',
  'storage.location.template'='s3://bucket/it\\'s/topic=web.events/dt=${dt}/key_bucket=${key_bucket}/'
)"""
    glue = spec.glue_input()
    assert glue["StorageDescriptor"]["Columns"][1] == {"Name": "select", "Type": "struct<from:string>"}
    assert glue["Parameters"] == {"EXTERNAL": "TRUE", **spec.properties()}


@pytest.mark.parametrize("topic,table", [("web-events", "web_events"), ("Orders.v1", "orders_v1")])
def test_default_table_names(topic, table):
    assert catalog.table_name(topic) == table


@pytest.mark.parametrize("args,message", [
    (["ddl", "--archive-url", "file:///tmp/x"], "archive url 'file:///tmp/x': Athena and Glue read S3, expected s3://bucket/prefix"),
    (["ddl", "--archive-url", "s3://b/p", "--topic", "a", "--topic", "b", "--table", "x"],
     "--table names one table: give exactly one --topic with it"),
    (["ddl", "--archive-url", "s3://b/p", "--database", "my-db"], "database 'my-db': Athena names hold only"),
    (["ddl", "--archive-url", "s3://b/p", "--topic", "a", "--table", "a b"], "table 'a b': Athena names hold only"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, monkeypatch):
    monkeypatch.delenv("ARCHIVER_CONFIG", raising=False)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"archiver: error: {message}")


# --- Glue: what counts as a change ----------------------------------------------------------------


def small_spec(columns=None) -> TableSpec:
    return TableSpec("t", "t", "db", "s3://b/topic=t/", tuple(columns or [("a", pa.int64())]),
                     tuple(catalog.partition_columns(TopicLayout(time_granularity="day"), "2025-01-01", ["a"])))


def as_glue_returns_it(table_input: dict) -> dict:
    """What GetTable answers for a table created from `table_input`: extra fields, Athena's own
    parameters, a column comment someone added."""
    table = table_input | {"DatabaseName": "db", "CreateTime": "now", "VersionId": "3", "CatalogId": "1",
                           "Parameters": table_input["Parameters"] | {"transient_lastDdlTime": "1", "owner": "me"}}
    columns = [dict(c) for c in table["StorageDescriptor"]["Columns"]]
    columns[0]["Comment"] = "set by hand"
    table["StorageDescriptor"] = table["StorageDescriptor"] | {"Columns": columns}
    return table


def test_an_identical_table_is_unchanged_whatever_glue_adds():
    wanted = small_spec().glue_input()
    result = catalog._difference("db", "t", as_glue_returns_it(wanted), wanted)
    assert result.action == "unchanged" and result.line() == "db.t: unchanged"


def test_an_added_column_updates_and_keeps_what_others_set():
    current = as_glue_returns_it(small_spec().glue_input())
    wanted = small_spec((("a", pa.int64()), ("b", pa.string()))).glue_input()
    result = catalog._difference("db", "t", current, wanted)
    assert (result.action, result.added, result.other) == ("updated", ("b",), False)
    assert result.line() == "db.t: updated (+b)"
    merged = catalog._merged(current, wanted)
    assert merged["Parameters"]["owner"] == "me"
    assert merged["StorageDescriptor"]["Columns"] == [{"Name": "a", "Type": "bigint", "Comment": "set by hand"},
                                                      {"Name": "b", "Type": "string"}]
    assert set(merged) == set(wanted)  # no read-only GetTable fields (CreateTime, VersionId...) sent back


def test_a_changed_projection_or_stale_projection_key_updates():
    wanted = small_spec().glue_input()
    current = as_glue_returns_it(wanted)
    current["Parameters"]["projection.minute.type"] = "integer"  # left from an older layout
    result = catalog._difference("db", "t", current, wanted)
    assert result.action == "updated" and result.other
    assert "projection.minute.type" not in catalog._merged(current, wanted)["Parameters"]


def test_sync_creates_the_database_and_table_once_then_leaves_them():
    client = FakeGlue()
    spec = small_spec()
    assert catalog.sync([spec], "db", client) == (True, [catalog.SyncResult("db", "t", "created")])
    assert catalog.sync([spec], "db", client) == (False, [catalog.SyncResult("db", "t", "unchanged")])
    assert client.calls == ["create_database", "create_table"]


def test_glue_errors_are_one_line_by_error_code():
    client = FakeGlue(fail="AccessDeniedException")
    with pytest.raises(TerminalError, match="Glue refused create or read database db: AccessDeniedException: no"):
        catalog.sync([small_spec()], "db", client)


class FakeGlue:
    """The few Glue calls sync makes, keeping tables as given."""

    class exceptions:  # mirrors boto3's client.exceptions
        class EntityNotFoundException(Exception):
            pass

        class AlreadyExistsException(Exception):
            pass

    def __init__(self, fail: str | None = None):
        self.databases, self.tables, self.calls, self.fail = set(), {}, [], fail

    def get_database(self, Name):
        if self.fail:
            from botocore.exceptions import ClientError
            raise ClientError({"Error": {"Code": self.fail, "Message": "no"}}, "GetDatabase")
        if Name not in self.databases:
            raise self.exceptions.EntityNotFoundException(Name)

    def create_database(self, DatabaseInput):
        self.calls.append("create_database")
        self.databases.add(DatabaseInput["Name"])

    def get_table(self, DatabaseName, Name):
        if (DatabaseName, Name) not in self.tables:
            raise self.exceptions.EntityNotFoundException(Name)
        return {"Table": self.tables[(DatabaseName, Name)]}

    def create_table(self, DatabaseName, TableInput):
        self.calls.append("create_table")
        self.tables[(DatabaseName, TableInput["Name"])] = TableInput

    def update_table(self, DatabaseName, TableInput):
        self.calls.append("update_table")
        self.tables[(DatabaseName, TableInput["Name"])] = TableInput
