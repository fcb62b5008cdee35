"""Benchmark `archiver run --once`: real Kafka → archiver → Parquet in real S3.

Produces N demo events (~200 B of Avro each) into a fresh topic, then archives them several
times (a fresh archive prefix and consumer group per run) and prints medians of: records/s,
records per CPU-second of the archiver process, MB/s of Avro input, peak RSS, archive bytes
over raw Avro bytes. `auto` is the default (the native consumer and the batch decoder);
`python-client` the same with confluent-kafka's consumer (run.kafka_client = python); the
baseline is the per-record fastavro decoder on confluent-kafka's consumer (ARCHIVER_DECODER=reference).

    infra/services up && eval "$(infra/services env)"
    .venv/bin/python bench/sink.py --records 1000000 --runs 3
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

from archiver import demo
from archiver.archive import Archive
from archiver.codec.registry import Registry
from archiver.config import KafkaSettings, RegistrySettings
from archiver.source import kafka as source_kafka
from archiver.store import open_store

ARCHIVER = str(Path(sys.executable).parent / "archiver")


def produce(topic: str, records: int, partitions: int, end_ms: int | None = None, span_ms: int = 3 * 3600_000,
            shuffled: bool = False) -> int:
    """Produce `records` distinct demo events, in time order, over the `span_ms` (3 hours) before
    `end_ms` (default: now); returns raw Avro bytes. Every event is new: repeating a pool of events
    would let Parquet compress the repeats, and flatter the archive size. `shuffled`: record
    timestamps drawn at random from the span instead (late and early data in every batch)."""
    import random
    kafka = KafkaSettings.from_env()
    with Registry(RegistrySettings.from_env()) as registry:
        source_kafka.ensure_topic(kafka, topic, partitions)
        schema_id = registry.register(f"{topic}-value", demo.SCHEMA)
    span = span_ms
    start = (end_ms or int(time.time() * 1000)) - span
    rng = random.Random(11)
    producer = source_kafka.producer(kafka, **{"linger.ms": 50, "batch.size": 1_000_000,
                                               "queue.buffering.max.messages": 2_000_000})
    raw = 0
    for i, event in enumerate(demo.events(records, start, span)):
        value = demo.encode(event.value, schema_id)
        while True:
            try:
                producer.produce(topic, value, event.key, headers=event.headers,
                                 timestamp=start + rng.randrange(span) if shuffled else event.timestamp_ms)
                break
            except BufferError:
                producer.poll(0.05)
        raw += len(value)
        if i % 10_000 == 0:
            producer.poll(0)
    source_kafka.flush(producer, timeout=300)
    return raw


def archive_once(topic: str, config: str, decoder: str, client: str = "auto") -> dict:
    prefix = f"bench/{uuid.uuid4().hex[:8]}"
    bucket = os.environ["ARCHIVER_ARCHIVE_URL"].removeprefix("s3://").split("/")[0]
    url = f"s3://{bucket}/{prefix}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVER_CATALOG_")} | {  # a new archive a run
        "ARCHIVER_ARCHIVE_URL": url, "ARCHIVER_GROUP_ID": f"bench-{uuid.uuid4().hex[:8]}",
        "ARCHIVER_CONFIG": config, "ARCHIVER_DECODER": decoder, "ARCHIVER_KAFKA_CLIENT": client}
    started = time.monotonic()
    proc = subprocess.Popen([ARCHIVER, "run", "--once", "--topics", topic], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    out, err = proc.stdout.read(), proc.stderr.read()
    if status != 0:
        raise SystemExit(f"archiver failed: {err[-2000:]}")
    archive = Archive(open_store(url))
    files = list(archive.files(topic))
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024,
            "archive_bytes": sum(f.bytes for f in files), "rows": sum(f.rows for f in files),
            "files": len(files), "summary": out.strip()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--key-buckets", type=int, default=16)
    parser.add_argument("--baseline-runs", type=int, default=1, help="runs of the fastavro baseline (0: skip)")
    parser.add_argument("--python-client-runs", type=int, default=None,
                        help="runs with confluent-kafka's consumer instead of the native one (default: --runs)")
    parser.add_argument("--topic", help="reuse an already produced topic")
    parser.add_argument("--raw-bytes", type=int, help="raw Avro bytes of --topic")
    args = parser.parse_args()

    topic = args.topic or f"bench-{args.records}-{uuid.uuid4().hex[:6]}"
    if args.topic:
        raw = args.raw_bytes
    else:
        t = time.monotonic()
        raw = produce(topic, args.records, args.partitions)
        print(f"produced {args.records:,} records ({raw / 1e6:.1f} MB Avro) to {topic} in {time.monotonic() - t:.1f}s")
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(f"[defaults]\nkey_buckets = {args.key_buckets}\n")
        config = f.name

    results = {}
    python_runs = args.runs if args.python_client_runs is None else args.python_client_runs
    variants = (("auto", "auto", "auto", args.runs), ("python-client", "auto", "python", python_runs),
                ("reference", "reference", "python", args.baseline_runs))
    for name, decoder, client, runs in variants:
        samples = [archive_once(topic, config, decoder, client) for _ in range(runs)]
        for s in samples:
            assert s["rows"] == args.records, f"archived {s['rows']} of {args.records}"
        if samples:
            results[name] = summarize(samples, args.records, raw)
            print(f"{name:13}: " + ", ".join(f"{k}={v:,.3f}" if isinstance(v, float) else f"{k}={v}"
                                             for k, v in results[name].items()))
    if "reference" in results:
        ratio = results["auto"]["records_per_cpu_s"] / results["reference"]["records_per_cpu_s"]
        print(f"records per CPU-second vs the per-record fastavro baseline: {ratio:.2f}x")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"sink-{int(time.time())}.json").write_text(json.dumps(
        {"records": args.records, "raw_bytes": raw, "key_buckets": args.key_buckets, "results": results}, indent=2))


def summarize(samples: list[dict], records: int, raw: int) -> dict:
    med = lambda key: statistics.median(s[key] for s in samples)
    return {
        "runs": len(samples),
        "records_per_s": records / med("wall_s"),
        "records_per_cpu_s": records / med("cpu_s"),
        "avro_mb_per_s": raw / 1e6 / med("wall_s"),
        "peak_rss_mb": med("peak_rss_mb"),
        "archive_ratio": med("archive_bytes") / raw,
        "files": int(med("files")),
    }


if __name__ == "__main__":
    main()
