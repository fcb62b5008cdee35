"""`archiver query`: SQL over the archive with embedded DuckDB.

Every archived topic a statement names is a view called after the topic (quote it:
`"web-events"`), plus a sanitised alias (`web_events`) where the name is not a plain identifier.
A view reads exactly the files the ledger names (`Archive.files`, never a bucket listing) with
DuckDB's Parquet reader; the `k=v` directories of each file's key (dt, hour, key_bucket, ...)
become columns, so a WHERE on them skips whole files before any byte of them is fetched. A
directory named like a data column (always so for `key_field`) becomes `<name>_partition`, as in
the Athena table (`catalog.partition_columns`): the data column keeps the file's values.

s3:// archives are read by DuckDB's httpfs extension, loaded from the duckdb-extension-httpfs
wheel's file (DuckDB checks its signature; nothing is downloaded at run time). Measured against
pyarrow datasets handed to DuckDB (bench/query.py), it fetches a third to a half of the bytes for a
one-hour, one-key query: of files whose rows a filter discards it reads only the filter column.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlparse

import duckdb
import pyarrow as pa

from archiver import layout, layouts
from archiver.archive import Archive
from archiver.errors import ConfigError, TerminalError
from archiver.ledger import FileEntry

logger = logging.getLogger(__name__)

PARTITION_TYPES = {"dt": "DATE", "hour": "INTEGER", "minute": "INTEGER", "key_bucket": "INTEGER"}
"""SQL types of the layout's partition directories; any other directory (key_field) is VARCHAR."""

_TIME_COLUMNS = ("dt", "hour", "minute")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Runtime failures of the engine or the store, as opposed to a statement that cannot run.
_FAILURES = (duckdb.IOException, duckdb.OutOfMemoryException, duckdb.InternalException,
             duckdb.InterruptException, duckdb.FatalException, duckdb.ConnectionException)


# --- views ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TopicView:
    """One topic as DuckDB sees it: the committed files and the partition columns of their keys."""

    topic: str
    files: tuple[FileEntry, ...]
    partition_columns: tuple[str, ...]  # directory names
    names: dict[str, str] = field(default_factory=dict)  # directory -> column, where they differ
    only: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Shared files (merged across partitions) of which only some partitions' rows are read: their
    other partitions' ledgers were read before the merge took effect, so those rows are read from
    the files it replaced."""

    def column(self, directory: str) -> str:
        """The view's column of a directory: its name, or `<name>_partition` when a data column has it."""
        return self.names.get(directory, directory)

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    def values(self, column: str) -> set[str]:
        """Every value `column` takes in this topic's directories (e.g. the key buckets present)."""
        return {directories(f.key).get(column) for f in self.files} - {None}


def directories(key: str) -> dict[str, str]:
    """The `k=v` directories of a data key between `topic=T/` and the file name (never the name)."""
    parts = key.split("/")[1:-1]
    return dict(p.split("=", 1) for p in parts if "=" in p)


def partition_columns(files: Iterable[FileEntry]) -> tuple[str, ...]:
    """Directory names in path order; only those every file has (a column must exist everywhere)."""
    ordered: dict[str, int] = {}
    count = 0
    for f in files:
        count += 1
        for name in directories(f.key):
            ordered[name] = ordered.get(name, 0) + 1
    return tuple(name for name, n in ordered.items() if n == count)


def alias(topic: str) -> str:
    """A name usable without quotes: every character outside [A-Za-z0-9_] becomes '_'."""
    name = re.sub(r"\W", "_", topic, flags=re.ASCII)
    return name if not name[0].isdigit() else f"_{name}"


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def distinct_files(files: Iterable[tuple[int, FileEntry]]) -> tuple[tuple[FileEntry, ...], dict[str, tuple[int, ...]]]:
    """Each object once (a file merged across partitions is named by each of its partitions), and
    the shared files some of whose partitions did not name them (see `TopicView.only`)."""
    seen: dict[str, FileEntry] = {}
    named: dict[str, set[int]] = {}
    for partition, f in files:
        if f.partitions is None:
            seen[f.key] = f
            continue
        named.setdefault(f.key, set()).add(partition)
        if f.key not in seen:
            seen[f.key] = dataclasses.replace(f, row_groups=None, part_bytes=None)
    only = {key: tuple(sorted(parts)) for key, parts in named.items() if parts != set(seen[key].partitions)}
    return tuple(seen.values()), only


def schema_groups(files: Iterable[FileEntry]) -> list[list[FileEntry]]:
    """Files grouped by writer schemas, the newest file (by record time) first in each group.

    Within a group the Parquet columns normally agree, so DuckDB binds each group on the footer of
    its first file instead of reading every footer. When they do not (key_format changed, adding
    `_key`), binding on the newest file makes older files miss a column, which DuckDB reports as a
    schema mismatch (Engine then binds by name); a column only older files have is not shown.
    """
    groups: dict[tuple[int, ...], list[FileEntry]] = {}
    for f in files:
        groups.setdefault(tuple(sorted(set(f.schema_ids))), []).append(f)
    ordered = []
    for group in groups.values():
        newest = max(range(len(group)), key=lambda i: group[i].max_timestamp or -1)
        ordered.append([group[newest], *group[:newest], *group[newest + 1:]])
    return ordered


# --- the engine -----------------------------------------------------------------------------------


@dataclass
class Reads:
    """Bytes DuckDB read per data key, from its own FileSystem log (exact: every READ is logged)."""

    by_key: dict[str, int] = field(default_factory=dict)

    @property
    def bytes(self) -> int:
        return sum(self.by_key.values())


class Engine:
    """A DuckDB connection over one archive, with views for the topics a statement names."""

    def __init__(self, archive: Archive):
        self.archive = archive
        self._base = _base_location(archive.store.url)
        self.con = connect(archive.store.url)
        self.views: dict[str, TopicView] = {}
        self.schema_reads = Reads()  # footers read to bind the views
        self._union_by_name = False

    def close(self) -> None:
        self.con.close()

    def prepare(self, sql: str) -> list[str]:
        """Create the views `sql` needs; returns their topics. Unknown names are a ConfigError."""
        topics = self.resolve(sql)
        new = [t for t in topics if t not in self.views]
        for topic in new:
            self.views[topic] = self._view(topic)
        self._create_views(new)
        self.schema_reads.by_key.update(self._take_reads().by_key)
        self._forget_cached_bytes()
        return topics

    def _forget_cached_bytes(self) -> None:
        """Empty DuckDB's external file cache (by switching it off and on): bytes cached while
        binding would otherwise be served without a logged read, and a file the query reads would
        be missing from --explain. It stays on for the query, which then fetches no byte twice."""
        self.con.execute("SET enable_external_file_cache = false")
        self.con.execute("SET enable_external_file_cache = true")

    def resolve(self, sql: str) -> list[str]:
        """The archived topics `sql` names (by name or alias, case-insensitively); every topic when
        it names none (SHOW TABLES)."""
        try:
            names = duckdb.get_table_names(sql)
        except duckdb.Error as e:
            if "single statement" in str(e):
                raise ConfigError("SQL: give one statement at a time") from None
            raise ConfigError(f"SQL: {_first_line(e)}") from None
        archived = self.archive.topics()
        lookup = {a.lower(): t for t in archived for a in (alias(t), t)}
        unknown = sorted(n for n in names if n.lower() not in lookup)
        if unknown:
            raise ConfigError(f"unknown topic {unknown[0]!r}: not in the archive {self.archive.store.url} "
                              f"(archived topics: {', '.join(archived) or 'none'})")
        return sorted({lookup[n.lower()] for n in names}) if names else archived

    def topic_view(self, topic: str) -> TopicView:
        """The view of one topic (reading its ledger once); ConfigError for a topic not archived."""
        return self.views[self.prepare(f"SELECT * FROM {quote(topic)}")[0]]

    def run(self, sql: str) -> pa.Table:
        """Execute `sql` over the prepared views; the whole result, in memory."""
        return self._retrying(lambda: self.con.execute(sql).to_arrow_table())

    def explain(self, sql: str) -> Explanation:
        """Execute `sql` with EXPLAIN ANALYZE: the files it really read and the profiled plan."""
        rows = self._retrying(lambda: self.con.execute("EXPLAIN ANALYZE " + sql).fetchall())
        return Explanation({t: self.views[t] for t in self.views}, self._take_reads(), self.schema_reads,
                           "\n".join(str(r[-1]) for r in rows))

    def _retrying(self, fn):
        """Run `fn`, translating DuckDB errors; files of one writer schema whose Parquet schemas
        still differ (e.g. a changed key_format) make DuckDB stop, so bind them by name and retry."""
        try:
            return _translated(fn)
        except ConfigError as e:
            if "schema mismatch" not in str(e) or self._union_by_name:
                raise
        logger.warning("files of one writer schema have different columns; reading every footer")
        self._union_by_name = True
        self._take_reads()
        self._create_views(list(self.views))
        self.schema_reads = self._take_reads()
        self._forget_cached_bytes()
        return _translated(fn)

    def _view(self, topic: str) -> TopicView:
        files, only = distinct_files((p, f) for p in self.archive.partitions(topic)
                                     for f in self.archive.files(topic, p))
        if not files:
            raise ConfigError(f"topic {topic!r} has no committed files in {self.archive.store.url} yet")
        return TopicView(topic, files, partition_columns(files), only=only)

    def _create_views(self, topics: list[str]) -> None:
        names = {t.lower() for t in self.views}
        for topic in topics:
            view = self.views[topic] = self._named(self.views[topic])
            create = f"CREATE OR REPLACE TEMP VIEW {quote(topic)} AS {self._select(view)}"
            _translated(lambda sql=create: self.con.execute(sql))
            other = alias(topic)
            if other != topic and other.lower() not in names:
                self.con.execute(f"CREATE OR REPLACE TEMP VIEW {quote(other)} AS SELECT * FROM {quote(topic)}")

    def _select(self, view: TopicView) -> str:
        """UNION ALL BY NAME of one read_parquet per schema group, with the partition columns taken
        from each file's name. DuckDB prunes files on filters over expressions of `filename`, as it
        does on hive partitions, which would instead replace a data column of the same name."""
        start = len(self._base) + 1  # the key within DuckDB's filename (1-based)
        columns = ", ".join(f"{_directory_value(d, start)} AS {quote(view.column(d))}" for d in view.partition_columns)
        selects = []
        for group in schema_groups(view.files):
            urls = ", ".join(_literal(self._location(f.key)) for f in group)
            select = (f"SELECT * EXCLUDE (filename){', ' + columns if columns else ''} FROM read_parquet("
                      f"[{urls}], hive_partitioning = false, filename = true, "
                      f"union_by_name = {str(self._union_by_name).lower()})")
            partial = [(f.key, view.only[f.key]) for f in group if f.key in view.only]
            if partial:
                select += " WHERE " + " AND ".join(
                    f"NOT (filename = {_literal(self._location(key))} AND _kafka_partition NOT IN "
                    f"({', '.join(map(str, partitions))}))" for key, partitions in partial)
            selects.append(select)
        return " UNION ALL BY NAME ".join(selects)

    def _named(self, view: TopicView) -> TopicView:
        """The view with its directory columns named as the Athena table names them."""
        taken: set[str] = set()
        for group in schema_groups(view.files):
            taken |= {r[0].lower() for r in self.con.execute(
                f"DESCRIBE SELECT * FROM read_parquet({_literal(self._location(group[0].key))}, "
                "hive_partitioning = false)").fetchall()}
        names = {}
        for directory in view.partition_columns:
            if directory.lower() in taken:
                names[directory] = f"{directory}_partition"
                if names[directory].lower() in taken:
                    raise TerminalError(f"{view.topic}: partition column {names[directory]!r} clashes with a data "
                                        "column of the same name")
        return TopicView(view.topic, view.files, view.partition_columns, names, view.only)

    def _location(self, key: str) -> str:
        return self._base + key

    def _take_reads(self) -> Reads:
        """Bytes read since the last call, per data key; clears DuckDB's log."""
        rows = self.con.execute("SELECT path, sum(bytes)::BIGINT FROM duckdb_logs_parsed('FileSystem') "
                                "WHERE op = 'READ' GROUP BY path").fetchall()
        self.con.execute("CALL truncate_duckdb_logs()")
        reads = Reads()
        for path, n in rows:
            if path.startswith(self._base):
                reads.by_key[path[len(self._base):]] = n
        return reads


@dataclass
class Explanation:
    """What a statement read, per topic, against everything archived for that topic."""

    views: dict[str, TopicView]
    reads: Reads
    schema_reads: Reads
    plan: str

    def files_read(self, topic: str) -> list[tuple[FileEntry, int]]:
        return [(f, self.reads.by_key[f.key]) for f in self.views[topic].files if f.key in self.reads.by_key]

    def render(self) -> str:
        lines = []
        for topic, view in self.views.items():
            read = self.files_read(topic)
            size = sum(f.bytes for f, _ in read)
            got = sum(n for _, n in read)
            lines.append(f"{topic}: read {len(read)} of {len(view.files)} files ({_pct(len(read), len(view.files))}), "
                         f"{got:,} bytes fetched of {view.bytes:,} archived ({_pct(got, view.bytes)}); "
                         f"those files hold {size:,} bytes")
            lines += [f"  {n:>12,} of {f.bytes:>12,} bytes  {f.key}" for f, n in read]
            probes = [(k, n) for k, n in self.schema_reads.by_key.items() if k.startswith(f"topic={topic}/")]
            if probes:
                lines.append(f"  schema: {sum(n for _, n in probes):,} bytes of {len(probes)} footer(s) read "
                             "to bind the view: " + ", ".join(k for k, _ in probes))
        return "\n".join(lines + ["", self.plan])


def _directory_value(directory: str, start: int) -> str:
    """SQL for the value of `directory=` in the key of DuckDB's `filename`, typed."""
    pattern = "^topic=[^/]+/(?:[^/]+/)*?" + re.escape(directory) + "=([^/]+)/"
    text = f"NULLIF(regexp_extract(substr(filename, {start}), {_literal(pattern)}, 1), '')"
    return f"CAST({text} AS {PARTITION_TYPES.get(directory, 'VARCHAR')})"


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.2f}%" if whole else "0%"


def _translated(fn):
    """Run a DuckDB call: a statement that cannot run is a ConfigError (exit 2); a failure to read
    the archive or of the engine is a TerminalError."""
    try:
        return fn()
    except _FAILURES as e:
        raise TerminalError(f"query failed: {_first_line(e)}") from None
    except duckdb.Error as e:
        raise ConfigError(f"SQL: {_first_line(e)}") from None


def _first_line(error: Exception) -> str:
    """DuckDB's message up to the quoted statement ("LINE 1: ..."), on one line."""
    lines = []
    for line in str(error).splitlines():
        if line.startswith("LINE "):
            break
        if line.strip():
            lines.append(line.strip())
    return " ".join(lines)


# --- the connection -------------------------------------------------------------------------------


def connect(archive_url: str) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that never downloads anything, logs every file read, and reads S3 with
    the credentials of the standard AWS chain."""
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    con.execute("SET TimeZone = 'UTC'")
    # Footers read to bind the views stay parsed in the metadata cache, so a query does not fetch them
    # again; Engine.prepare empties the byte cache after binding (see _forget_cached_bytes).
    con.execute("SET parquet_metadata_cache = true")
    if urlparse(archive_url).scheme == "s3":
        con.execute(f"LOAD {_literal(str(httpfs_path()))}")
        con.execute(s3_secret(urlparse(archive_url).netloc))
    con.execute("CALL enable_logging('FileSystem')")
    return con


def httpfs_path() -> Path:
    """The httpfs extension file of the duckdb-extension-httpfs wheel, for this DuckDB version."""
    return extension_path("httpfs")


def extension_path(name: str) -> Path:
    """A DuckDB extension file from its duckdb-extension-<name> wheel (nothing is downloaded)."""
    import importlib.util

    package = f"duckdb-extension-{name}"
    spec = importlib.util.find_spec(package.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise TerminalError(f"this needs DuckDB's {name} extension: pip install {package}=={duckdb.__version__}")
    path = Path(spec.submodule_search_locations[0]) / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    if not path.is_file():
        raise TerminalError(f"{package} does not match duckdb {duckdb.__version__} (no {path})")
    return path


def s3_secret(bucket: str) -> str:
    """CREATE SECRET for `bucket` from boto3's resolution of credentials, region and endpoint, so
    DuckDB reads what `archiver run` writes (AWS_ENDPOINT_URL, profiles, roles, ...)."""
    import boto3

    session = boto3.Session()
    credentials = session.get_credentials()
    if credentials is None:
        raise ConfigError("no AWS credentials found (environment, profile or role) to read the s3:// archive")
    frozen = credentials.get_frozen_credentials()
    options = {"KEY_ID": frozen.access_key, "SECRET": frozen.secret_key, "REGION": session.region_name or "us-east-1"}
    if frozen.token:
        options["SESSION_TOKEN"] = frozen.token
    endpoint = urlparse(session.client("s3").meta.endpoint_url)
    if not (endpoint.hostname or "").endswith("amazonaws.com"):  # MinIO, LocalStack, ...: path-style
        options |= {"ENDPOINT": endpoint.netloc, "URL_STYLE": "path", "USE_SSL": str(endpoint.scheme == "https")}
    body = ", ".join(f"{k} {v if k == 'USE_SSL' else _literal(v)}" for k, v in options.items())
    return f"CREATE OR REPLACE TEMPORARY SECRET archive (TYPE s3, SCOPE {_literal('s3://' + bucket)}, {body})"


def _base_location(store_url: str) -> str:
    """Where DuckDB finds key K of the archive: the base followed by K."""
    parsed = urlparse(store_url)
    if parsed.scheme == "file":
        return unquote(parsed.path).rstrip("/") + "/"
    return store_url.rstrip("/") + "/"


# --- the --topic/--key shortcut -------------------------------------------------------------------


def topic_sql(view: TopicView, topic_layout: layouts.TopicLayout, key: bytes | None = None,
              start_ms: int | None = None, end_ms: int | None = None, where: str | None = None) -> str:
    """One topic's records (of one key, in [start_ms, end_ms)), in time order, with predicates on
    the partition columns that let DuckDB skip every other file.

    Directory predicates need the layout the files were written with: an inferred one (an archive
    without a layout record) knows neither the bucket count nor whether `time_field` dated the
    records, so then only the data columns are filtered.
    """
    conditions = []
    if key is not None:
        conditions += _key_conditions(view, topic_layout, key)
    if start_ms is not None:
        conditions.append(f"_kafka_timestamp >= {_timestamp(start_ms)}")
    if end_ms is not None:
        conditions.append(f"_kafka_timestamp < {_timestamp(end_ms)}")
    if topic_layout.time_field is None and not topic_layout.inferred:  # directories follow the record timestamp
        conditions += _time_conditions(view.partition_columns, start_ms, end_ms, view.column)
    if where:
        conditions.append(f"({where})")
    sql = f"SELECT * FROM {quote(view.topic)}"
    if conditions:
        sql += " WHERE " + " AND ".join(conditions)
    return sql + " ORDER BY _kafka_timestamp, _kafka_partition, _kafka_offset"


def _key_conditions(view: TopicView, topic_layout: layouts.TopicLayout, key: bytes) -> list[str]:
    conditions = []
    buckets = topic_layout.key_buckets
    if topic_layout.key_partitioning == "hash" and "key_bucket" in view.partition_columns:
        if topic_layout.inferred:
            logger.warning("%s has no layout record (archived before layouts were recorded): --key reads every "
                           "key bucket; `archiver run` records the layout", view.topic)
        else:
            present = view.values("key_bucket")
            width = len(str(buckets - 1))
            if any(int(b) >= buckets or len(b) != width for b in present):
                logger.warning("%s: the archive has key_bucket directories that key_buckets = %d does not make "
                               "(it changed?): events written with the old count are missed", view.topic, buckets)
            conditions.append(f"{quote(view.column('key_bucket'))} = {layout.key_bucket(key, buckets)}")
    literal = "".join(f"\\x{b:02X}" for b in key)
    conditions.append(f"_kafka_key = '{literal}'::BLOB")
    return conditions


def _utc(ms: int) -> datetime:
    """Exact to the millisecond (no float division)."""
    return datetime.fromtimestamp(ms // 1000, UTC).replace(microsecond=ms % 1000 * 1000)


def _timestamp(ms: int) -> str:
    return f"TIMESTAMPTZ '{_utc(ms):%Y-%m-%d %H:%M:%S.%f}+00'"


def _time_conditions(columns: tuple[str, ...], start_ms: int | None, end_ms: int | None,
                     column=lambda directory: directory) -> list[str]:
    """Lexicographic bounds on (dt, hour, minute): the directories that can hold [start, end).
    `column` names the view's column of a directory."""
    present = [c for c in _TIME_COLUMNS if c in columns]
    if not present or present[0] != "dt":
        return []
    conditions = []
    for ms, op in ((start_ms, ">="), (None if end_ms is None else end_ms - 1, "<=")):
        if ms is not None:
            values = {quote(column(c)): v for c, v in _time_values(ms).items()}
            conditions.append(_bound([quote(column(c)) for c in present], values, op))
    return conditions


def _time_values(ms: int) -> dict[str, str]:
    t = _utc(ms)
    return {"dt": f"DATE '{t:%Y-%m-%d}'", "hour": str(t.hour), "minute": str(t.minute)}


def _bound(columns: list[str], values: dict[str, str], op: str) -> str:
    """`(c1, c2, ...) op (v1, v2, ...)` spelled with AND/OR, which DuckDB prunes files with."""
    first, rest = columns[0], columns[1:]
    if not rest:
        return f"{first} {op} {values[first]}"
    strict = op[0]
    return f"({first} {strict} {values[first]} OR ({first} = {values[first]} AND {_bound(rest, values, op)}))"


def statement(engine: Engine, sql: str | None, topic: str | None = None, key: str | None = None,
              start: str | None = None, end: str | None = None, where: str | None = None,
              now_ms: int | None = None) -> str:
    """The SQL to run: `sql` as given, or the --topic/--key shortcut built from the options (in
    the layout the archive records for the topic)."""
    shortcut = {"--key": key, "--from": start, "--to": end, "--where": where}
    if sql is not None:
        given = [name for name, value in {"--topic": topic, **shortcut}.items() if value is not None]
        if given:
            raise ConfigError(f"{given[0]} builds the query itself: give either SQL or --topic [--key ...]")
        if not sql.strip():
            raise ConfigError("the SQL statement is empty")
        return sql
    if topic is None:
        raise ConfigError("give a SQL statement, or --topic T [--key K] [--from TIME] [--to TIME] [--where COND]")
    from archiver.units import parse_time

    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    start_ms = parse_time(start, now_ms, "--from") if start else None
    end_ms = parse_time(end, now_ms, "--to") if end else None
    if start_ms is not None and end_ms is not None and start_ms >= end_ms:
        raise ConfigError(f"--from {start} is not before --to {end}")
    view = engine.topic_view(topic)
    topic_layout = layouts.of_archive(engine.archive, view.topic, list(view.files))
    return topic_sql(view, topic_layout, key.encode() if key is not None else None, start_ms, end_ms, where)


# --- output ---------------------------------------------------------------------------------------

FORMATS = ("table", "csv", "jsonl", "parquet")


def as_text(table: pa.Table) -> tuple[list[str], list[tuple[str | None, ...]]]:
    """Column names and every value as DuckDB's own text (nested values, blobs, timestamps in UTC)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("result", table)
    if not table.num_columns:
        return [], []
    result = con.execute("SELECT COLUMNS(*)::VARCHAR FROM result")
    return [d[0] for d in result.description], result.fetchall()


def render_table(table: pa.Table) -> str:
    """An aligned text table with a row count, NULL shown as NULL."""
    names, rows = as_text(table)
    cells = [["NULL" if v is None else v.replace("\n", "\\n") for v in row] for row in rows]
    widths = [max([len(n)] + [len(r[i]) for r in cells]) for i, n in enumerate(names)]
    line = "  ".join(n.ljust(w) for n, w in zip(names, widths)).rstrip()
    out = [line, "  ".join("-" * w for w in widths)] if names else []
    out += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(out + [f"({table.num_rows} row{'s' if table.num_rows != 1 else ''})"]) + "\n"


def write_csv(table: pa.Table, out) -> None:
    """RFC 4180 CSV with a header; NULL is an empty field, other values are DuckDB's text."""
    import csv

    names, rows = as_text(table)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    writer.writerows(["" if v is None else v for v in row] for row in rows)


def write_jsonl(table: pa.Table, out) -> None:
    """One JSON object per row (DuckDB's to_json: nested values stay nested)."""
    if not table.num_columns:
        return
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("result", table)
    for (line,) in con.execute("SELECT to_json(result)::VARCHAR FROM result").fetchall():
        out.write(line + "\n")


def write_parquet(table: pa.Table, path: str) -> None:
    import pyarrow.parquet as pq

    pq.write_table(table, path, compression="zstd")
