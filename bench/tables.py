"""Benchmark publishing to the Iceberg tables: commit latency, requests per commit, pruning.

Produces N demo events into a fresh topic in R rounds; after each round `archiver run --once`
archives it (publishing off), then one `Publisher.publish` turns the round's ledger entries into
one table commit, timed. Requests are counted where archiver makes them: the archive's own S3
client (ledger listings and reads, boto3 events), the files' footers (ranged reads through the
table's FileIO), and the table's own objects (manifests, manifest list, metadata.json) written
per commit. Then a one-hour, one-key query is planned against the table: the share of data
files and bytes a reader must scan, for the default hash layout and for a field layout.

    infra/services up && eval "$(infra/services env)"
    .venv/bin/python bench/tables.py --records 300000 --rounds 5 --lag-records 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sink import produce

from archiver.archive import Archive
from archiver.config import load_run_settings
from archiver.store import open_store
from archiver.tables import Publisher, open_catalog

ARCHIVER = str(Path(sys.executable).parent / "archiver")
HOUR = 3600_000


def archive_round(env: dict, topic: str) -> None:
    subprocess.run([ARCHIVER, "run", "--once", "--topics", topic, "-q"], env=env, check=True)


def counted_publisher(env: dict) -> tuple[Publisher, dict]:
    settings = load_run_settings(None, env, needs=frozenset({"archive"}))
    store = open_store(settings.archive_url)
    counts = {"s3_requests": 0}

    def count(**_kwargs):
        counts["s3_requests"] += 1

    store._client.meta.events.register("before-call.s3", count)
    return Publisher(Archive(store), open_catalog(settings.catalog, settings.archive_url), settings.catalog), counts


def run(records: int, rounds: int, partitions: int, layout: str) -> dict:
    topic = f"bench-tables-{layout}-{uuid.uuid4().hex[:6]}"
    env = os.environ | {"ARCHIVER_ARCHIVE_URL": f"s3://archiver/{topic}", "ARCHIVER_GROUP_ID": f"bench-{topic}",
                        "ARCHIVER_PUBLISH_INTERVAL_S": "0"}
    if layout == "field":
        config = Path(tempfile.mkdtemp()) / "archiver.toml"
        config.write_text('[defaults]\nkey_partitioning = "field"\nkey_field = "country"\n'
                          'key_field_values = ["US", "FR", "DE", "GB", "IN", "BR", "JP", "CA", "NL", "ES"]\n')
        env["ARCHIVER_CONFIG"] = str(config)
    end_ms = int(time.time() // 3600 * 3600 * 1000)
    publisher, counts = counted_publisher(env)
    commits = []
    for r in range(rounds):
        produce(topic, records // rounds, partitions, end_ms=end_ms)
        archive_round(env, topic)
        counts["s3_requests"] = 0
        metadata_before = sum(1 for _ in publisher.archive.store.list(f"_iceberg/{topic.replace('-', '_')}/"))
        started = time.perf_counter()
        result = publisher.publish(topic)
        seconds = time.perf_counter() - started
        written = sum(1 for _ in publisher.archive.store.list(f"_iceberg/{topic.replace('-', '_')}/")) - metadata_before
        commits.append({"round": r, "files_added": result.added, "seconds": round(seconds, 3),
                        "archive_s3_requests": counts["s3_requests"], "footer_reads": result.added,
                        "table_objects_written": written})
    table = publisher.load(topic)
    snapshot = table.current_snapshot().summary.additional_properties
    total_files, total_bytes = int(snapshot["total-data-files"]), int(snapshot["total-files-size"])
    since = end_ms - 2 * HOUR
    predicate = (f"_kafka_timestamp >= '{_iso(since)}' and _kafka_timestamp < '{_iso(since + HOUR)}'"
                 + (" and country == 'FR'" if layout == "field" else ""))
    planned = list(table.scan(row_filter=predicate).plan_files())
    scanned_bytes = sum(t.file.file_size_in_bytes for t in planned)
    return {"layout": layout, "records": records, "rounds": rounds, "commits": commits,
            "median_commit_s": statistics.median(c["seconds"] for c in commits[1:] or commits),
            "files": total_files, "bytes": total_bytes,
            "one_hour_one_key": {"predicate": predicate, "files": len(planned), "bytes": scanned_bytes,
                                 "share_of_bytes": round(scanned_bytes / total_bytes, 4)}}


def lag(records: int, partitions: int, interval_s: float) -> dict:
    """Publish lag under the sink: the streaming daemon archives `records` while publishing every
    `interval_s`; sampled each second, how far the table trails the ledger (records, seconds)."""
    from archiver import tables

    topic = f"bench-lag-{uuid.uuid4().hex[:6]}"
    env = os.environ | {"ARCHIVER_ARCHIVE_URL": f"s3://archiver/{topic}", "ARCHIVER_GROUP_ID": f"bench-{topic}",
                        "ARCHIVER_PUBLISH_INTERVAL_S": str(interval_s)}
    produce(topic, records, partitions)
    settings = load_run_settings(None, env, needs=frozenset({"archive"}))
    daemon = subprocess.Popen([ARCHIVER, "run", "--topics", topic, "-q"], env=env)
    started, samples, archived_at, published_at = time.monotonic(), [], None, None
    try:
        while time.monotonic() - started < 600 and published_at is None:
            time.sleep(1)
            try:
                doc = tables.status(settings, topic)
            except Exception:  # noqa: BLE001, S112 - no archive or table yet
                continue
            archived, published = doc["records"] + doc["lag_records"], doc["records"]
            now = time.monotonic() - started
            samples.append({"t": round(now, 1), "archived": archived, "published": published})
            if archived >= records and archived_at is None:
                archived_at = now
            if published >= records:
                published_at = now
    finally:
        daemon.terminate()
        daemon.wait(60)
    behind = [s["archived"] - s["published"] for s in samples]
    return {"records": records, "publish_interval_s": interval_s, "archived_all_after_s": archived_at,
            "published_all_after_s": published_at, "max_records_behind": max(behind, default=0),
            "median_records_behind": statistics.median(behind) if behind else 0}


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(ms / 1000))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--lag-records", type=int, default=1_000_000)
    parser.add_argument("--publish-interval", type=float, default=10.0)
    args = parser.parse_args()
    for layout in ("hash", "field"):
        print(json.dumps(run(args.records, args.rounds, args.partitions, layout), indent=1))
    print(json.dumps(lag(args.lag_records, args.partitions, args.publish_interval), indent=1))


if __name__ == "__main__":
    main()
