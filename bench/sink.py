"""Benchmark `archiver run --once`: real Kafka → archiver → Parquet in real S3.

Produces N demo events (~200 B of Avro each; `--shape nested`: orders with nested records, maps,
decimals and a 3-branch union) into a fresh topic, then archives them several
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

NESTED = {
    "type": "record", "name": "Order", "namespace": "bench.nested",
    "fields": [
        {"name": "order_id", "type": "string"},
        {"name": "placed_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "customer", "type": {"type": "record", "name": "Customer", "fields": [
            {"name": "id", "type": "long"},
            {"name": "name", "type": "string"},
            {"name": "address", "type": {"type": "record", "name": "Address", "fields": [
                {"name": "street", "type": "string"}, {"name": "city", "type": "string"},
                {"name": "zip", "type": ["null", "string"], "default": None}]}}]}},
        {"name": "lines", "type": {"type": "array", "items": {"type": "record", "name": "Line", "fields": [
            {"name": "sku", "type": "string"}, {"name": "quantity", "type": "int"},
            {"name": "price", "type": {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}}]}}},
        {"name": "total", "type": {"type": "bytes", "logicalType": "decimal", "precision": 14, "scale": 2}},
        {"name": "attributes", "type": {"type": "map", "values": "string"}},
        {"name": "counters", "type": {"type": "map", "values": "long"}},
        {"name": "payment", "type": ["string", "long", {"type": "record", "name": "Card", "fields": [
            {"name": "network", "type": {"type": "enum", "name": "Network", "symbols": ["VISA", "MC", "AMEX"]}},
            {"name": "last4", "type": "string"}]}]},
    ],
}
"""The nested shape (`--shape nested`): nested records, an array of records, decimals, maps and a
union of three branches (string, long, record)."""


def nested_events(count: int, start_ms: int, span_ms: int, seed: int = 7):
    """`count` distinct orders over [start_ms, start_ms + span_ms), in time order, as demo.Event."""
    import random
    from decimal import Decimal

    rng = random.Random(seed)
    cities = ["Lisbon", "Oslo", "Austin", "Osaka", "Lyon", "Porto", "Kyiv", "Quito"]
    step = span_ms / max(count, 1)
    for i in range(count):
        ts = start_ms + int(i * step)
        customer = rng.randrange(50_000)
        lines = [{"sku": f"sku-{rng.randrange(5_000):05d}", "quantity": rng.randrange(1, 5),
                  "price": Decimal(rng.randrange(100, 100_000)).scaleb(-2)} for _ in range(rng.randrange(1, 4))]
        total = sum((line["price"] * line["quantity"] for line in lines), Decimal(0))
        payment = rng.choice([f"voucher-{rng.getrandbits(32):08x}", rng.randrange(10**9),
                              {"network": rng.choice(["VISA", "MC", "AMEX"]), "last4": f"{rng.randrange(10_000):04d}"}])
        value = {
            "order_id": f"o-{rng.getrandbits(64):016x}", "placed_at": ts,
            "customer": {"id": customer, "name": f"customer {customer}",
                         "address": {"street": f"{rng.randrange(1, 300)} Main St", "city": rng.choice(cities),
                                     "zip": None if rng.random() < 0.2 else f"{rng.randrange(10**5):05d}"}},
            "lines": lines, "total": total,
            "attributes": {k: rng.choice(["a", "b", "c"]) for k in rng.sample(["channel", "promo", "tier", "lang"], 2)},
            "counters": {"items": sum(line["quantity"] for line in lines), "visits": rng.randrange(100)},
            "payment": ("bench.nested.Card", payment) if isinstance(payment, dict) else payment,
        }
        yield demo.Event(f"c-{customer}".encode(), value, [("source", b"checkout")], ts)


def produce(topic: str, records: int, partitions: int, end_ms: int | None = None, span_ms: int = 3 * 3600_000,
            shuffled: bool = False, shape: str = "demo") -> int:
    """Produce `records` distinct demo events, in time order, over the `span_ms` (3 hours) before
    `end_ms` (default: now); returns raw Avro bytes. Every event is new: repeating a pool of events
    would let Parquet compress the repeats, and flatter the archive size. `shuffled`: record
    timestamps drawn at random from the span instead (late and early data in every batch).
    `shape` nested: orders of the NESTED schema instead, over the last hour."""
    import io
    import random

    import fastavro

    from archiver.codec import wire
    kafka = KafkaSettings.from_env()
    schema = NESTED if shape == "nested" else demo.SCHEMA
    parsed = fastavro.parse_schema(schema)
    with Registry(RegistrySettings.from_env()) as registry:
        source_kafka.ensure_topic(kafka, topic, partitions)
        schema_id = registry.register(f"{topic}-value", schema)
    span = span_ms
    start = (end_ms or int(time.time() * 1000)) - span
    rng = random.Random(11)
    producer = source_kafka.producer(kafka, **{"linger.ms": 50, "batch.size": 1_000_000,
                                               "queue.buffering.max.messages": 2_000_000})
    raw = 0
    events = nested_events(records, start, span) if shape == "nested" else demo.events(records, start, span)
    for i, event in enumerate(events):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed, event.value)
        value = wire.frame(schema_id, buf.getvalue())
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
    parser.add_argument("--shape", choices=["demo", "nested"], default="demo",
                        help="demo events, or orders with nested records, maps, decimals and a 3-branch union "
                             "(timestamps within an hour)")
    args = parser.parse_args()

    topic = args.topic or f"bench-{args.shape}-{args.records}-{uuid.uuid4().hex[:6]}"
    if args.topic:
        raw = args.raw_bytes
    else:
        t = time.monotonic()
        raw = produce(topic, args.records, args.partitions, span_ms=3600_000 if args.shape == "nested" else 3 * 3600_000,
                      shape=args.shape)
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
        {"records": args.records, "shape": args.shape, "raw_bytes": raw, "key_buckets": args.key_buckets,
         "results": results}, indent=2))


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
