"""Athena / Glue tables over the archive: `archiver ddl` and `archiver catalog sync`.

One external Parquet table per archived topic. Its columns are the Arrow schema of a committed
file written with the topic's newest writer schema (exactly what the sink wrote: value fields,
then the `_kafka_*` columns, `_schema_id` and `_key` if any), so no registry is needed and the
table cannot drift from the files. Its partitions use Athena partition projection, derived from
the layout the archive records for the topic (`archiver.layouts`) and checked against every
committed file's directories, so no `MSCK REPAIR TABLE` or partition registration is ever needed.
"""

from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq

from archiver import layout, layouts
from archiver.archive import Archive
from archiver.config import load_run_settings
from archiver.errors import ConfigError, TerminalError, TransientError
from archiver.ledger import FileEntry

logger = logging.getLogger(__name__)

SERDE = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
INPUT_FORMAT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
OUTPUT_FORMAT = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"
_COMPRESSION = {"zstd": "ZSTD", "snappy": "SNAPPY", "gzip": "GZIP", "lz4": "LZ4", "none": "UNCOMPRESSED"}
_ATHENA_NAME = re.compile(r"^[a-z0-9_]{1,255}$")
_PLAIN = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_GLUE_FIELD = re.compile(r"^[A-Za-z0-9_.$]+$")  # what Hive's type-string tokenizer takes as a name
# Hive's reserved keywords: unquoted, they break a struct<...> type in DDL.
_RESERVED_WORDS = """
    all alter and array as authorization between bigint binary boolean both by cache case cast char column
    commit conf constraint create cross cube current current_date current_timestamp cursor database date
    dayofweek decimal delete describe distinct double drop else end exchange exists extended external
    extract false fetch float floor following for foreign from full function grant group grouping having
    if import in inner insert int integer intersect interval into is join lateral left less like local
    macro map more none not null numeric of on only or order out outer over partialscan partition percent
    preceding precision preserve primary procedure range reads reduce references regexp revoke right rlike
    rollback rollup row rows select set smallint start sync table tablesample then time timestamp to
    transform trigger true truncate unbounded union uniquejoin update user using utc_timestamp values
    varchar views when where window with"""
_RESERVED = frozenset(_RESERVED_WORDS.split())
_MAX_DECIMAL_DIGITS = 38  # Athena's (and Hive's) limit


# --- Arrow → Hive types ---------------------------------------------------------------------------


def hive_type(t: pa.DataType, *, ddl: bool = True) -> str:
    """The Athena (Hive) type that reads a Parquet column archiver wrote with Arrow type `t`.

    Args:
        t: The column's Arrow type, as the file's schema gives it.
        ddl: Quote struct field names that need it, for a CREATE TABLE statement; False gives
            the plain type string the Glue API stores (Hive's type parser takes no quotes).

    Raises:
        TerminalError: a type Athena cannot read (decimal over 38 digits, unsigned, unions).
    """
    if pa.types.is_dictionary(t):
        return hive_type(t.value_type, ddl=ddl)
    if pa.types.is_struct(t):
        fields = (t.field(i) for i in range(t.num_fields))
        return "struct<" + ",".join(f"{_field_name(f.name, ddl)}:{hive_type(f.type, ddl=ddl)}"
                                    for f in fields) + ">"
    if pa.types.is_map(t):
        return f"map<{hive_type(t.key_type, ddl=ddl)},{hive_type(t.item_type, ddl=ddl)}>"
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return f"array<{hive_type(t.value_type, ddl=ddl)}>"
    if pa.types.is_decimal(t):
        if t.precision > _MAX_DECIMAL_DIGITS:
            raise TerminalError(f"decimal({t.precision},{t.scale}) has more than the {_MAX_DECIMAL_DIGITS} "
                                f"digits Athena reads")
        return f"decimal({t.precision},{t.scale})"
    for test, name in _LEAVES:
        if test(t):
            return name
    raise TerminalError(f"Arrow type {t} has no Athena equivalent")


_LEAVES = [
    (pa.types.is_boolean, "boolean"), (pa.types.is_int8, "tinyint"), (pa.types.is_int16, "smallint"),
    (pa.types.is_int32, "int"), (pa.types.is_int64, "bigint"), (pa.types.is_float32, "float"),
    (pa.types.is_float64, "double"), (pa.types.is_string, "string"), (pa.types.is_large_string, "string"),
    (pa.types.is_binary, "binary"), (pa.types.is_large_binary, "binary"),
    (pa.types.is_fixed_size_binary, "binary"), (pa.types.is_timestamp, "timestamp"),
    (pa.types.is_date32, "date"),
    # Hive has no time of day: Parquet stores time-millis as INT32 and time-micros as INT64.
    (pa.types.is_time32, "int"), (pa.types.is_time64, "bigint"),
    (pa.types.is_null, "int"),  # an Avro "null" field: Parquet writes an all-null INT32 column
]


def _field_name(name: str, ddl: bool) -> str:
    if ddl:
        return name if _PLAIN.match(name) and name.lower() not in _RESERVED else quote(name)
    if not _GLUE_FIELD.match(name):
        raise TerminalError(f"struct field {name!r} cannot be written in a Glue type string")
    return name


def quote(name: str) -> str:
    """A Hive identifier in backquotes (a backquote inside is doubled)."""
    return "`" + name.replace("`", "``") + "`"


# --- partition columns ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PartitionColumn:
    """A projected partition column: its name in the table and the directory key it reads."""

    name: str
    directory: str
    projection: tuple[tuple[str, str], ...]  # projection.<name>.<key> = value

    def covers(self, value: str) -> bool:
        """Whether the projection enumerates a directory value (dates: any valid day)."""
        p = dict(self.projection)
        if p["type"] == "enum":
            return value in p["values"].split(",")
        if p["type"] == "integer":
            low, high = map(int, p["range"].split(","))
            return len(value) == int(p["digits"]) and value.isdigit() and low <= int(value) <= high
        return re.fullmatch(r"\d{4}-\d{2}-\d{2}", value) is not None


def partition_columns(settings: layouts.TopicLayout, first_day: str, value_columns: Iterable[str]
                      ) -> list[PartitionColumn]:
    """The layout's directories (see `layout.time_path`, `bucket_path`, `field_value_path`) as
    projected columns. A column is named like its directory unless a data column already has that
    name (always so for key_partitioning = field): then `_partition` is appended."""
    taken = {name.lower() for name in value_columns}
    columns = [("dt", (("type", "date"), ("format", "yyyy-MM-dd"), ("range", f"{first_day},NOW"),
                       ("interval", "1"), ("interval.unit", "DAYS")))]
    if settings.time_granularity in ("hour", "minute"):
        columns.append(("hour", (("type", "integer"), ("range", "0,23"), ("digits", "2"))))
    if settings.time_granularity == "minute":
        columns.append(("minute", (("type", "integer"), ("range", "0,59"), ("digits", "2"))))
    if settings.key_partitioning == "hash":
        width = str(len(str(settings.key_buckets - 1)))  # as layout.bucket_path pads
        columns.append(("key_bucket", (("type", "integer"), ("range", f"0,{settings.key_buckets - 1}"),
                                       ("digits", width))))
    elif settings.key_partitioning == "field":
        allowed = frozenset(settings.key_field_values)
        values = sorted({layout.field_value_path("v", v, allowed).split("=", 1)[1] for v in allowed})
        values += [v for v in ("_other", "_null") if v not in values]
        columns.append((settings.key_field, (("type", "enum"), ("values", ",".join(values)))))
    out = []
    for directory, projection in columns:
        name = directory if directory.lower() not in taken else f"{directory}_partition"
        if name.lower() in taken:
            raise TerminalError(f"partition column {name!r} clashes with a data column of the same name")
        taken.add(name.lower())
        out.append(PartitionColumn(name, directory, projection))
    return out


def check_layout(topic: str, files: Iterable[FileEntry], partitions: list[PartitionColumn]) -> None:
    """Fail unless every committed file lies in a directory the projection enumerates.

    The layout is an input of the table (bucket count, allowed field values): files written
    under another one (an archive whose layout changed) would silently be missing from queries.
    """
    want = [p.directory for p in partitions]
    for f in files:
        found = layout.parse_data_key(f.key).partition_values()
        if list(found) != want:
            raise ConfigError(f"topic {topic!r} is archived under {'/'.join(found)} directories but its "
                              f"layout gives {'/'.join(want)} ({layouts.GUIDE})")
        for p in partitions:
            if not p.covers(found[p.directory]):
                raise ConfigError(f"topic {topic!r} has files under {p.directory}={found[p.directory]}, "
                                  f"outside what its layout allows ({_describe(p)}; {layouts.GUIDE})")


def _describe(p: PartitionColumn) -> str:
    proj = dict(p.projection)
    return proj.get("values") or f"{proj.get('range')} with {proj.get('digits')} digits"


# --- the table ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableSpec:
    """Everything a catalog needs to know about one topic's table."""

    topic: str
    name: str
    database: str | None
    location: str  # s3://bucket/prefix/topic=T/
    columns: tuple[tuple[str, pa.DataType], ...]
    partitions: tuple[PartitionColumn, ...]
    compression: str = "ZSTD"

    def properties(self) -> dict[str, str]:
        """Table properties: Parquet write codec and the partition projection."""
        props = {"classification": "parquet", "parquet.compression": self.compression,
                 "projection.enabled": "true"}
        for p in self.partitions:
            props.update({f"projection.{p.name}.{k}": v for k, v in p.projection})
        template = "/".join(f"{p.directory}=${{{p.name}}}" for p in self.partitions)
        props["storage.location.template"] = f"{self.location}{template}/"
        return props

    def ddl(self) -> str:
        """An Athena CREATE EXTERNAL TABLE statement (without the closing semicolon)."""
        name = f"{quote(self.database)}.{quote(self.name)}" if self.database else quote(self.name)
        columns = ",\n".join(f"  {quote(n)} {hive_type(t)}" for n, t in self.columns)
        partitions = ",\n".join(f"  {quote(p.name)} string" for p in self.partitions)
        props = ",\n".join(f"  {_literal(k)}={_literal(v)}" for k, v in self.properties().items())
        return (f"CREATE EXTERNAL TABLE {name} (\n{columns}\n)\nPARTITIONED BY (\n{partitions}\n)\n"
                f"STORED AS PARQUET\nLOCATION {_literal(self.location)}\nTBLPROPERTIES (\n{props}\n)")

    def glue_input(self) -> dict:
        """The Glue TableInput of the same table."""
        return {
            "Name": self.name,
            "TableType": "EXTERNAL_TABLE",
            "Parameters": {"EXTERNAL": "TRUE", **self.properties()},
            "PartitionKeys": [{"Name": p.name, "Type": "string"} for p in self.partitions],
            "StorageDescriptor": {
                "Columns": [{"Name": n, "Type": hive_type(t, ddl=False)} for n, t in self.columns],
                "Location": self.location,
                "InputFormat": INPUT_FORMAT,
                "OutputFormat": OUTPUT_FORMAT,
                "SerdeInfo": {"SerializationLibrary": SERDE, "Parameters": {"serialization.format": "1"}},
            },
        }


def _literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def table_spec(archive: Archive, topic: str, location: str, *, name: str | None = None,
               database: str | None = None, compression: str = "zstd") -> TableSpec:
    """The table of one archived topic, in the layout the archive records (ConfigError if the
    topic has no committed file)."""
    files = list(archive.files(topic))
    if not files:
        raise ConfigError(f"topic {topic!r} has no committed files in {archive.store.url}")
    settings = layouts.of_archive(archive, topic, files)
    if settings.inferred:
        logger.warning("%s has no layout record (archived before layouts were recorded): the table follows its "
                       "directories (%s); `archiver run` records the layout", topic,
                       "/".join(settings.directories()))
    schema = newest_schema(archive, topic, files)
    columns = tuple((f.name, f.type) for f in schema)
    _check_columns(topic, columns)
    first_day = min(layout.parse_data_key(f.key).partition_values()["dt"] for f in files)
    partitions = partition_columns(settings, first_day, schema.names)
    check_layout(topic, files, partitions)
    return TableSpec(topic, name or table_name(topic), database, location, columns, tuple(partitions),
                     _COMPRESSION[compression])


def newest_schema(archive: Archive, topic: str, files: list[FileEntry]) -> pa.Schema:
    """The Arrow schema of the files written with the topic's newest writer schema.

    Registries hand out increasing ids, so the highest id in the ledger is the newest schema. Of
    its files the smallest is read (the store has no ranged reads), for its footer only.
    """
    with_values = [f for f in files if f.schema_ids]  # tombstone-only files have no value columns
    if not with_values:
        raise ConfigError(f"topic {topic!r} has only tombstones in the archive: no columns to describe")
    newest = max(i for f in with_values for i in f.schema_ids)
    smallest = min((f for f in with_values if newest in f.schema_ids), key=lambda f: (f.bytes, f.key))
    schema = pq.read_schema(io.BytesIO(archive.store.get(smallest.key)))
    logger.info("columns of %s from schema id %d, file %s", topic, newest, smallest.key)
    return schema.remove_metadata()


def _check_columns(topic: str, columns: tuple[tuple[str, pa.DataType], ...]) -> None:
    seen: dict[str, str] = {}
    for name, t in columns:
        if name.lower() in seen:  # Athena folds names to lower case
            raise TerminalError(f"topic {topic!r}: columns {seen[name.lower()]!r} and {name!r} differ only "
                                f"in case, which Athena cannot tell apart")
        seen[name.lower()] = name
        try:
            hive_type(t, ddl=False)
        except TerminalError as e:
            raise TerminalError(f"topic {topic!r}, column {name!r}: {e}") from None


def table_name(topic: str) -> str:
    """The default table of a topic: lower case, with every character but [a-z0-9_] as `_`."""
    return re.sub(r"[^a-z0-9_]", "_", topic.lower())


def check_name(kind: str, name: str) -> str:
    """An Athena database or table name: lower-cased, then letters, digits and underscores only."""
    if not _ATHENA_NAME.match(name.lower()):
        raise ConfigError(f"{kind} {name!r}: Athena names hold only letters, digits and underscores (1-255)")
    return name.lower()


def s3_location(archive_url: str, topic: str) -> str:
    """`s3://bucket/prefix/topic=T/`: where the sink writes the topic (the table's LOCATION)."""
    parsed = urlparse(archive_url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ConfigError(f"archive url {archive_url!r}: Athena and Glue read S3, expected s3://bucket/prefix")
    prefix = parsed.path.strip("/")
    return f"s3://{parsed.netloc}/{prefix + '/' if prefix else ''}topic={topic}/"


def table_specs(config_path: str | None, archive_url: str | None, topics: Iterable[str],
                database: str | None, table: str | None,
                env: Mapping[str, str] = os.environ) -> list[TableSpec]:
    """The tables of the named topics (every archived topic if none), as `ddl` and `catalog sync` use.

    The layout (granularity, key partitioning) comes from the archive; the archive URL and the
    codec named in the table properties from the same config file, environment and flags as
    `archiver run`. Kafka and the registry are not contacted, so they need not be set.
    """

    topics = list(dict.fromkeys(topics))
    if table is not None and len(topics) != 1:
        raise ConfigError("--table names one table: give exactly one --topic with it")
    database = check_name("database", database) if database else None
    table = check_name("table", table) if table else None
    settings = load_run_settings(config_path, env=env, flags={"archive_url": archive_url},
                                 needs=frozenset({"archive"}))
    archive = Archive(settings.open_store())
    s3_location(settings.archive_url, "t")  # fail on a file:// archive before reading it
    if not topics:
        topics = archive.topics()
        if not topics:
            raise ConfigError(f"no archived topics in {settings.archive_url}")
    for topic in topics:
        layout.check_topic(topic)
        if not archive.partitions(topic):
            raise ConfigError(f"topic {topic!r} is not archived in {settings.archive_url}")
    names = [table] if table else [table_name(t) for t in topics]
    if len(set(names)) < len(names):
        raise ConfigError(f"topics {', '.join(topics)} map to the same table name; "
                          f"name their tables one by one with --topic T --table NAME")
    return [table_spec(archive, t, s3_location(settings.archive_url, t), name=n, database=database,
                       compression=settings.for_topic(t).compression) for t, n in zip(topics, names)]


# --- Glue ------------------------------------------------------------------------------------------------

_MANAGED_PREFIXES = ("projection.", "storage.location.template")
_KEPT = ("Description", "Owner", "Retention")  # what an update keeps from the table it replaces


@dataclass(frozen=True)
class SyncResult:
    """What `sync` did to one table: created, updated or unchanged."""

    database: str
    table: str
    action: str
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    retyped: tuple[str, ...] = ()
    other: bool = False  # partitions, location, format or properties changed

    def line(self) -> str:
        changes = ([f"+{n}" for n in self.added] + [f"-{n}" for n in self.removed]
                   + [f"~{n}" for n in self.retyped])
        if self.other:
            changes.append("partitioning/location/properties")
        detail = f" ({', '.join(changes)})" if changes and self.action == "updated" else ""
        return f"{self.database}.{self.table}: {self.action}{detail}"


def glue_client():
    """A Glue client from the standard AWS chain (AWS_ENDPOINT_URL_GLUE or AWS_ENDPOINT_URL,
    AWS_DEFAULT_REGION, credentials)."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import NoRegionError

    try:
        return boto3.client("glue", config=Config(retries={"mode": "standard", "max_attempts": 5}))
    except NoRegionError:
        raise ConfigError("no AWS region for Glue: set AWS_DEFAULT_REGION (or a profile's region)") from None


def sync(specs: list[TableSpec], database: str, client) -> tuple[bool, list[SyncResult]]:
    """Create the database if missing, then create each table or update it where it differs.

    An unchanged table is left alone, so re-running adds no table version. Returns whether the
    database was created and one result per table.
    """
    created = _call(client, "create or read database", database, _ensure_database, client, database)
    return created, [_call(client, "sync table", f"{database}.{s.name}", _sync_table, client, database, s)
                     for s in specs]


def _ensure_database(client, database: str) -> bool:
    try:
        client.get_database(Name=database)
        return False
    except client.exceptions.EntityNotFoundException:
        pass
    try:
        client.create_database(DatabaseInput={"Name": database})
    except client.exceptions.AlreadyExistsException:
        return False  # created meanwhile by someone else: fine
    return True


def _sync_table(client, database: str, spec: TableSpec) -> SyncResult:
    wanted = spec.glue_input()
    try:
        current = client.get_table(DatabaseName=database, Name=spec.name)["Table"]
    except client.exceptions.EntityNotFoundException:
        client.create_table(DatabaseName=database, TableInput=wanted)
        return SyncResult(database, spec.name, "created")
    result = _difference(database, spec.name, current, wanted)
    if result.action == "updated":
        client.update_table(DatabaseName=database, TableInput=_merged(current, wanted))
    return result


def _difference(database: str, name: str, current: dict, wanted: dict) -> SyncResult:
    have = _columns(current)
    want = _columns(wanted)
    added = tuple(n for n in want if n not in have)
    removed = tuple(n for n in have if n not in want)
    retyped = tuple(n for n in want if n in have and have[n] != want[n])
    reordered = [n for n in have if n in want] != [n for n in want if n in have]
    other = reordered or _shape(current) != _shape(wanted)
    changed = bool(added or removed or retyped or other)
    return SyncResult(database, name, "updated" if changed else "unchanged", added, removed, retyped, other)


def _columns(table: dict) -> dict[str, str]:
    """Column types by name, lower-cased: Glue and Athena do not keep case."""
    columns = table.get("StorageDescriptor", {}).get("Columns", [])
    return {c["Name"].lower(): c["Type"].lower() for c in columns}


def _shape(table: dict) -> tuple:
    """The parts of a table besides its columns that `sync` manages, normalised for comparison."""
    sd = table.get("StorageDescriptor", {})
    serde = sd.get("SerdeInfo", {})
    return (table.get("TableType"), _managed(table.get("Parameters", {})),
            [(k["Name"].lower(), k["Type"].lower()) for k in table.get("PartitionKeys", [])],
            sd.get("Location"), sd.get("InputFormat"), sd.get("OutputFormat"),
            serde.get("SerializationLibrary"), serde.get("Parameters", {}))


def _managed(params: dict) -> dict:
    ours = {"EXTERNAL", "classification", "parquet.compression"}
    return {k: v for k, v in params.items() if k in ours or k.startswith(_MANAGED_PREFIXES)}


def _merged(current: dict, wanted: dict) -> dict:
    """`wanted`, keeping the current table's own parameters, description and column comments."""
    current_params = current.get("Parameters", {})
    params = {k: v for k, v in current_params.items() if k not in _managed(current_params)}
    current_columns = current.get("StorageDescriptor", {}).get("Columns", [])
    comments = {c["Name"].lower(): c["Comment"] for c in current_columns if c.get("Comment")}
    columns = [c | ({"Comment": comments[c["Name"].lower()]} if c["Name"].lower() in comments else {})
               for c in wanted["StorageDescriptor"]["Columns"]]
    kept = {k: current[k] for k in _KEPT if k in current}
    return wanted | kept | {"Parameters": params | wanted["Parameters"],
                            "StorageDescriptor": wanted["StorageDescriptor"] | {"Columns": columns}}


def _call(client, op: str, what: str, fn, *args):
    """Run one Glue step, translating SDK errors into archiver's (by error code, never message)."""
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

    try:
        return fn(*args)
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        message = e.response.get("Error", {}).get("Message", "")
        if code in ("ThrottlingException", "InternalServiceException", "OperationTimeoutException",
                    "ConcurrentModificationException"):
            raise TransientError(f"Glue {code} during {op} {what}; try again") from e
        raise TerminalError(f"Glue refused {op} {what}: {code}: {message}") from e
    except EndpointConnectionError as e:
        raise TransientError(f"Glue unreachable during {op} {what}: {e}") from e
    except BotoCoreError as e:
        raise TerminalError(f"Glue {op} {what} failed: {e}") from e
