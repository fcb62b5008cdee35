"""Benchmark `archiver query` on its typical question: one key's events in one hour.

Archives N demo events with `archiver run --once` into the local S3 (or reuses --topic with
--archive-url), picks a key and an hour from the archive, then runs
`archiver query --topic T --key K --from H --to H+1h` several times and prints medians of the
bytes fetched from S3 against the topic's archived bytes (target: at most 2 %) and the time, for
DuckDB's httpfs reader (what `archiver query` uses), for the whole CLI process, and for the
alternative that was measured against it: pyarrow datasets (one fragment per ledger file, with
partition expressions) handed to DuckDB.

    infra/services up && eval "$(infra/services env)"
    .venv/bin/python bench/query.py --records 300000 --runs 5
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from archiver import demo, layout, layouts
from archiver import query as query_mod
from archiver.archive import Archive
from archiver.codec.registry import Registry
from archiver.config import KafkaSettings, RegistrySettings
from archiver.store import open_store

ARCHIVER = str(Path(sys.executable).parent / "archiver")
START_MS = 1_764_000_000_000


def archive(records: int, span_hours: int, env: dict) -> tuple[str, str]:
    """Produce `records` demo events over `span_hours` into a new topic and archive them."""
    topic = f"bench-query-{records}-{uuid.uuid4().hex[:6]}"
    bucket = env["ARCHIVER_ARCHIVE_URL"].removeprefix("s3://").split("/")[0]
    url = f"s3://{bucket}/bench-query/{topic}"
    with Registry(RegistrySettings.from_env(env)) as registry:
        demo.produce(KafkaSettings.from_env(env), registry, topic, records, partitions=3, start_ms=START_MS,
                     span_ms=span_hours * 3_600_000)
    started = time.monotonic()
    out = subprocess.run([ARCHIVER, "run", "--once", "--topics", topic], capture_output=True, text=True, check=True,
                         env=env | {"ARCHIVER_ARCHIVE_URL": url, "ARCHIVER_GROUP_ID": f"bench-{topic}"}).stdout
    print(f"archived {topic} in {time.monotonic() - started:.1f}s: {out.strip()}")
    return topic, url


def pick(arch: Archive, topic: str) -> tuple[bytes, int]:
    """A key and the start of an hour it has events in, from a file in the middle of the archive."""
    files = list(arch.files(topic))
    table = arch.read(files[len(files) // 2])
    stamp = pc.cast(table["_kafka_timestamp"], pa.int64())[0].as_py()
    return table["_kafka_key"][0].as_py(), stamp - stamp % 3_600_000


def run_httpfs(url: str, topic: str, key: bytes, hour_ms: int) -> tuple[float, float, int, int, int]:
    """(seconds to open the archive: credentials, httpfs, ledger, views; seconds of the query
    itself; bytes fetched by both; archived bytes; rows) of one run through archiver.query."""
    started = time.monotonic()
    engine = query_mod.Engine(Archive(open_store(url)))
    view = engine.topic_view(topic)
    sql = query_mod.topic_sql(view, layouts.of_archive(engine.archive, topic, list(view.files)), key, hour_ms,
                              hour_ms + 3_600_000)
    engine.prepare(sql)
    opened = time.monotonic()
    explanation = engine.explain(sql)  # executes the query (EXPLAIN ANALYZE)
    done = time.monotonic()
    fetched = explanation.reads.bytes + engine.schema_reads.bytes
    rows = int(engine.con.execute(f"SELECT count(*) FROM ({sql})").fetchone()[0])
    engine.close()
    return opened - started, done - opened, fetched, view.bytes, rows


def run_cli(url: str, topic: str, key: bytes, hour_ms: int, env: dict) -> float:
    iso = datetime.datetime.fromtimestamp(hour_ms / 1000, datetime.UTC)
    argv = [ARCHIVER, "query", "--archive-url", url, "--topic", topic, "--key", key.decode(),
            "--from", iso.isoformat(), "--to", (iso + datetime.timedelta(hours=1)).isoformat(), "--format", "csv"]
    started = time.monotonic()
    subprocess.run(argv, env=env, check=True, capture_output=True)
    return time.monotonic() - started


class _Counting(pafs.FileSystemHandler):
    """Delegates to a pyarrow filesystem and counts the bytes read through it."""

    def __init__(self, fs: pafs.FileSystem):
        self.fs, self.bytes = fs, 0

    def open_input_file(self, path):
        handler = self
        source = self.fs.open_input_file(path)

        class Reader:
            closed = False

            def read(self, n=-1):
                data = source.read(n) if n is not None and n >= 0 else source.read()
                handler.bytes += len(data)
                return data

            def seek(self, offset, whence=0):
                return source.seek(offset, whence)

            def tell(self):
                return source.tell()

            def close(self):
                source.close()
                self.closed = True

            def readable(self):
                return True

            def seekable(self):
                return True

        return pa.PythonFile(Reader(), mode="r")

    def get_type_name(self):
        return "counting"

    def normalize_path(self, path):
        return path

    def get_file_info(self, paths):
        return self.fs.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.fs.get_file_info(selector)

    def open_input_stream(self, path):
        return self.open_input_file(path)

    def _unsupported(self, *args):
        raise NotImplementedError

    create_dir = delete_dir = delete_dir_contents = delete_root_dir_contents = delete_file = _unsupported
    move = copy_file = open_output_stream = open_append_stream = _unsupported


def run_arrow(url: str, topic: str, key: bytes, hour_ms: int, env: dict) -> tuple[float, int, int]:
    """The alternative: pyarrow fragments with partition expressions from the ledger, in DuckDB."""
    endpoint = env.get("AWS_ENDPOINT_URL", "")
    s3 = pafs.S3FileSystem(endpoint_override=endpoint or None, region=env.get("AWS_DEFAULT_REGION", "us-east-1"),
                           scheme="http" if endpoint.startswith("http:") else "https")
    started = time.monotonic()
    counting = _Counting(s3)
    fs = pafs.PyFileSystem(counting)
    files = list(Archive(open_store(url)).files(topic))
    root = url.removeprefix("s3://").rstrip("/")
    fmt = ds.ParquetFileFormat()
    schema = fmt.inspect(f"{root}/{files[0].key}", fs)
    schema = schema.append(pa.field("dt", pa.date32())).append(pa.field("hour", pa.int32()))
    schema = schema.append(pa.field("key_bucket", pa.int32()))
    fragments = []
    for f in files:
        parts = query_mod.directories(f.key)
        expression = ((pc.field("dt") == pa.scalar(datetime.date.fromisoformat(parts["dt"])))
                      & (pc.field("hour") == pa.scalar(int(parts["hour"]), pa.int32()))
                      & (pc.field("key_bucket") == pa.scalar(int(parts["key_bucket"]), pa.int32())))
        fragments.append(fmt.make_fragment(f"{root}/{f.key}", filesystem=fs, partition_expression=expression,
                                           file_size=f.bytes))
    dataset = ds.FileSystemDataset(fragments, schema, fmt, fs)
    hour = datetime.datetime.fromtimestamp(hour_ms / 1000, datetime.UTC)
    con = duckdb.connect()
    con.register("t", dataset)
    literal = "".join(f"\\x{b:02X}" for b in key)
    con.execute(f"SELECT * FROM t WHERE dt = DATE '{hour:%Y-%m-%d}' AND hour = {hour.hour} AND key_bucket = "
                f"{layout.key_bucket(key, 16)} AND _kafka_key = '{literal}'::BLOB").to_arrow_table()
    return time.monotonic() - started, counting.bytes, sum(f.bytes for f in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--span-hours", type=int, default=3, help="hours the demo events cover")
    parser.add_argument("--topic", help="reuse this archived topic (with --archive-url)")
    parser.add_argument("--archive-url")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    env = dict(os.environ)
    topic, url = (args.topic, args.archive_url) if args.topic else archive(args.records, args.span_hours, env)
    key, hour_ms = pick(Archive(open_store(url)), topic)
    print(f"query: key {key.decode()!r}, hour {datetime.datetime.fromtimestamp(hour_ms / 1000, datetime.UTC):%Y-%m-%d %H}:00")
    httpfs = [run_httpfs(url, topic, key, hour_ms) for _ in range(args.runs)]
    cli = [run_cli(url, topic, key, hour_ms, env) for _ in range(args.runs)]
    arrow = [run_arrow(url, topic, key, hour_ms, env) for _ in range(args.runs)]
    total = httpfs[0][3]
    fetched = statistics.median(r[2] for r in httpfs)
    print(f"archive: {total:,} bytes of Parquet in {len(list(Archive(open_store(url)).files(topic)))} files; "
          f"the key has {httpfs[0][4]} events in that hour")
    print(f"httpfs (archiver query): {fetched:,.0f} bytes fetched = {100 * fetched / total:.2f}% of the archive "
          f"(target <= 2%); query {statistics.median(r[1] for r in httpfs) * 1000:.0f} ms after "
          f"{statistics.median(r[0] for r in httpfs) * 1000:.0f} ms opening the archive; "
          f"{statistics.median(cli) * 1000:.0f} ms for the whole CLI process (medians of {args.runs})")
    arrow_bytes = statistics.median(r[1] for r in arrow)
    print(f"pyarrow datasets: {arrow_bytes:,.0f} bytes fetched = {100 * arrow_bytes / total:.2f}%, "
          f"{statistics.median(r[0] for r in arrow) * 1000:.0f} ms in-process")


if __name__ == "__main__":
    main()
