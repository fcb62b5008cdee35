"""Benchmark `archiver replay`: real S3 archive → real Kafka broker.

Archives a topic once with `archiver run --once` (or reuses --archive-url), then replays it into
fresh target topics several times and prints medians of records/s, MB/s (value + key bytes
produced), records per CPU-second of the replay process and peak RSS, for each Kafka client
(`--clients`: the native producer of archiver_native, confluent-kafka's; runs interleaved).

    infra/services up && eval "$(infra/services env)"
    .venv/bin/python bench/sink.py --records 1000000 --runs 1 --baseline-runs 0   # makes a topic
    .venv/bin/python bench/replay.py --topic bench-1000000-xxxxxx --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from archiver.config import KafkaSettings
from archiver.source import kafka as source_kafka

ARCHIVER = str(Path(sys.executable).parent / "archiver")


def timed(argv: list[str], env: dict) -> tuple[float, float, float, str]:
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    out, err = proc.stdout.read(), proc.stderr.read()
    if status != 0:
        raise SystemExit(f"{argv[1]} failed: {err[-2000:]}")
    return time.monotonic() - started, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--archive-url", help="an archive already holding --topic")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", default="native,python", help="run.kafka_client values to compare")
    parser.add_argument("--trees", default="", help="NAME=DIR,...: also compare these checkouts of archiver "
                        "(run with PYTHONPATH=DIR, each with the first of --clients), interleaved with the others")
    args = parser.parse_args()
    clients = args.clients.split(",")
    trees = dict(item.split("=", 1) for item in args.trees.split(",") if item)

    env = dict(os.environ)
    if args.archive_url:
        env["ARCHIVER_ARCHIVE_URL"] = args.archive_url
    else:
        bucket = env["ARCHIVER_ARCHIVE_URL"].removeprefix("s3://").split("/")[0]
        env["ARCHIVER_ARCHIVE_URL"] = f"s3://{bucket}/bench-replay/{uuid.uuid4().hex[:8]}"
        wall, _, _, out = timed([ARCHIVER, "run", "--once", "--topics", args.topic],
                                env | {"ARCHIVER_GROUP_ID": f"bench-{uuid.uuid4().hex[:8]}"})
        print(f"archived {args.topic} in {wall:.1f}s: {out.strip()}")
    kafka = KafkaSettings.from_env(env)
    partitions = source_kafka.list_topics(kafka)[args.topic]
    variants = {client: {"ARCHIVER_KAFKA_CLIENT": client} for client in clients}
    variants |= {name: {"ARCHIVER_KAFKA_CLIENT": clients[0], "PYTHONPATH": str(Path(tree).resolve())}
                 for name, tree in trees.items()}
    samples: dict[str, list[dict]] = {name: [] for name in variants}
    for _ in range(args.runs):
        for client, extra in variants.items():
            target = f"{args.topic}-replay-{uuid.uuid4().hex[:6]}"
            source_kafka.ensure_topic(kafka, target, partitions)
            wall, cpu, rss, out = timed([ARCHIVER, "replay", "--topic", args.topic, "--to-topic", target],
                                        env | extra)
            summary = json.loads(out)
            samples[client].append({"wall": wall, "cpu": cpu, "rss": rss, "records": summary["records"],
                                    "bytes": summary["bytes"]})
            print(f"  {client}: {summary['records']:,} records in {wall:.1f}s wall, {cpu:.1f} CPU-s, {rss:.0f} MB RSS")
    for client, runs in samples.items():
        med = lambda k, runs=runs: statistics.median(s[k] for s in runs)
        records = runs[0]["records"]
        print(f"replay ({client}): records/s={records / med('wall'):,.0f} "
              f"MB/s={runs[0]['bytes'] / 1e6 / med('wall'):.1f} records/CPU-s={records / med('cpu'):,.0f} "
              f"peak_rss_mb={med('rss'):.0f} (median of {len(runs)})")


if __name__ == "__main__":
    main()
