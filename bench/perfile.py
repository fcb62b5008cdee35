"""CPU per output file: the sink's whole cost of one small file, on the real S3.

Feeds the sink (in this process, no broker) runs of `--rows` demo records and commits each run
(`flush`), as a daemon does every `interval_s` on a quiet topic: per commit one Parquet file per
directory touched, its PUT, the intent, the ledger entry and the intent's delete. Prints CPU
milliseconds per file (this process, all threads; medians of `--runs`), for each variant:

- default: snappy for small files, requests through obstore;
- zstd: `small_file_rows = 0` (every file zstd, as before small files were snappy);
- boto3: requests through boto3 only (as before obstore).

    infra/services up && eval "$(infra/services env)"
    .venv/bin/python bench/perfile.py --rows 17 --commits 300 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid

from archiver import demo
from archiver.codec.values import ValueDecoder
from archiver.config import TopicSettings
from archiver.sink import Sink
from archiver.source.records import Batch, Record
from archiver.store import open_store
from archiver.writer.buffer import Rotation


class Schemas:
    """The demo schema as id 1 (no registry: the registry's cost is not a file's)."""

    def schema_text(self, schema_id: int) -> str:
        return json.dumps(demo.SCHEMA)


def one_run(variant: str, rows: int, commits: int, buckets: int) -> float:
    bucket = os.environ["ARCHIVER_ARCHIVE_URL"].removeprefix("s3://").split("/")[0]
    store = open_store(f"s3://{bucket}/bench-perfile/{uuid.uuid4().hex[:8]}")
    if variant == "boto3":
        store._fast = None
    settings = TopicSettings(key_buckets=buckets, small_file_rows=0 if variant == "zstd" else 1_000)
    decoder = ValueDecoder(Schemas())
    sink = Sink(store, lambda t: settings, lambda t: decoder, lambda t, p, o: None, None)
    sink.assign("t", 0)
    events = list(demo.events(rows * (commits + 5), 1_764_000_000_000, 3_600_000))
    records = [Record("t", 0, o, (1, e.timestamp_ms), e.key, demo.encode(e.value, 1), e.headers)
               for o, e in enumerate(events)]
    batches = [Batch.of(records[i * rows:(i + 1) * rows]) for i in range(commits + 5)]
    for batch in batches[:5]:  # warm up: imports, schema, caches
        sink.ingest("t", 0, batch)
        sink.flush("t", 0, Rotation.INTERVAL)
    files_before = sink.stats.files
    started = time.process_time()
    for batch in batches[5:]:
        sink.ingest("t", 0, batch)
        sink.flush("t", 0, Rotation.INTERVAL)
    cpu = time.process_time() - started
    sink.close()
    return cpu * 1000 / (sink.stats.files - files_before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=17, help="records per commit")
    parser.add_argument("--commits", type=int, default=300)
    parser.add_argument("--buckets", type=int, default=1, help="key buckets (files per commit, at most)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--variants", default="default,zstd,boto3")
    args = parser.parse_args()
    results = {v: [] for v in args.variants.split(",")}
    for _ in range(args.runs):
        for variant, samples in results.items():  # interleaved: the machine's noise spreads over all
            samples.append(one_run(variant, args.rows, args.commits, args.buckets))
    for variant, samples in results.items():
        print(f"{variant:8}: {statistics.median(samples):.2f} ms CPU per file "
              f"({args.rows} records a commit, {args.buckets} bucket(s); runs: "
              f"{', '.join(f'{s:.2f}' for s in samples)})")


if __name__ == "__main__":
    main()
