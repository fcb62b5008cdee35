"""The floor under `archiver run --once` and `archiver replay`: what their libraries alone cost.

`sink` runs the library calls a sink cannot skip, one stage at a time, in this process, on a
topic `bench/sink.py` produced, and prints CPU microseconds per record for each stage:

- consume: confluent-kafka `consume()` of every message, nothing else done with them; and
  "consume (native)", the native consumer's columns;
- decode: the native Avro decoder turning the values into Arrow, 10,000 at a time;
- columns: the Kafka metadata columns every file carries (offset, timestamp, key, headers...),
  from confluent-kafka's messages, and "columns (native)" from the native consumer's batches;
- parquet: pyarrow writing those rows as files of the size the sink writes (`--files`);
- put: boto3 PUT of each file into the real S3 (one thread; the sink's pool costs the same CPU),
  and "put (obstore)" through archiver's S3 store.

The sum is the CPU a record costs before the archiver does anything of its own: routing,
buffering, the ledger and process start-up all come on top. One over it is the most records
per CPU-second the stack allows.

`replay` does the same for replay, on an archive of that topic:

- read: GET of every file from the real S3 and pyarrow reading it;
- fields: the Kafka key, timestamp and headers as the Python objects `produce()` takes;
- encode: the native Avro encoder re-encoding the value columns, 10,000 rows at a time;
- produce: confluent-kafka `produce()` of every message into a new topic, then `flush()`. Its
  Python-thread share is printed too: the thread that calls `produce()` holds the GIL for it,
  so one over it bounds the records/s of one process whatever else runs on other cores.

    infra/services up && eval "$(infra/services env)"
    .venv/bin/python bench/sink.py --records 1000000 --runs 1 --baseline-runs 0   # note the topic
    .venv/bin/python bench/floor.py sink --topic bench-1000000-xxxxxx --files 360 --runs 3
    ARCHIVER_ARCHIVE_URL=s3://archiver/floor archiver run --once --topics bench-1000000-xxxxxx
    .venv/bin/python bench/floor.py replay --topic bench-1000000-xxxxxx --archive s3://archiver/floor
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
import uuid

import boto3
import pyarrow as pa
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from archiver.archive import Archive
from archiver.codec import native, native_encode, wire
from archiver.codec.registry import Registry
from archiver.config import KafkaSettings, RegistrySettings
from archiver.runtime import tune_gc
from archiver.source import kafka as source_kafka
from archiver.store import open_store
from archiver.writer import parquet


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def consume(topic: str, keep: bool = True) -> list:
    """Every message of `topic`, read with the batch call the sink uses (kept, or dropped batch
    by batch as the sink does)."""
    kafka = KafkaSettings.from_env()
    consumer = Consumer(kafka.client_config() | {"group.id": f"floor-{uuid.uuid4().hex[:8]}",
                                                 "enable.auto.commit": False, "enable.partition.eof": False})
    metadata = consumer.list_topics(topic, timeout=10).topics[topic]
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in metadata.partitions}
    total = sum(ends.values())
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
    messages: list = []
    seen = 0
    while seen < total:
        batch = [m for m in consumer.consume(10_000, 1.0) if not m.error()]
        seen += len(batch)
        if keep:
            messages.extend(batch)
    consumer.close()
    return messages


def consume_native(topic: str, keep: bool = True) -> list:
    """`consume` with the native consumer (archiver_native): every partition's records as a
    Batch of columns, built in the consume call (kept, or dropped as the sink does)."""
    from archiver_native import Consumer as NativeConsumer

    from archiver.source import native as native_client
    from archiver.source.records import Batch

    kafka = KafkaSettings.from_env()
    ends = {}
    probe = Consumer(kafka.client_config() | {"group.id": "floor-probe"})
    for p in probe.list_topics(topic, timeout=10).topics[topic].partitions:
        ends[p] = probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
    probe.close()
    consumer = NativeConsumer(native_client.settings(kafka.client_config() | {
        "group.id": f"floor-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False, "enable.partition.eof": False}))
    consumer.incremental_assign([(topic, p, OFFSET_BEGINNING) for p in ends])
    batches: list = []
    seen, total = 0, sum(ends.values())
    while seen < total:
        runs, _errors = consumer.consume(10_000, 1.0)
        for run in runs:
            batch = Batch.from_native(run)
            seen += len(batch)
            if keep:
                batches.append(batch)
    consumer.close()
    return batches


class Stages:
    """CPU seconds of the process per stage."""

    def __init__(self):
        self.spent: dict[str, float] = {}

    def __call__(self, name: str, fn, *args):
        started = cpu()
        result = fn(*args)
        self.spent[name] = cpu() - started
        return result

    def per_record(self, n: int) -> dict[str, float]:
        return {name: seconds / n * 1e6 for name, seconds in self.spent.items()}


def sink(args, s3, bucket: str) -> dict[str, float]:
    topic, files = args.topic, args.files
    stage = Stages()

    stage("consume", consume, topic, False)
    stage("consume (native)", consume_native, topic, False)
    messages = consume(topic)
    n = len(messages)
    values = [m.value() for m in messages]
    schema_id = wire.schema_id_of(values[0])
    with Registry(RegistrySettings.from_env()) as registry:
        schema = json.loads(registry.schema_text(schema_id))
    native.decode_batch(values[:10], schema)  # builds the plan outside the timing

    def decode():
        return [native.decode_batch(values[i:i + 10_000], schema).table
                for i in range(0, n, 10_000)]

    decoded = pa.concat_tables(stage("decode", decode))
    fields = ([m.offset() for m in messages], [m.timestamp() for m in messages], [m.key() for m in messages],
              [m.headers() for m in messages])

    def columns():
        return parquet.metadata_table(0, *fields, schema_id)

    meta = stage("columns", columns)
    batches = consume_native(topic)

    def columns_native():  # the metadata columns from the native consumer's batches
        return [parquet.metadata_columns(b, schema_id) for b in batches]

    stage("columns (native)", columns_native)
    table = pa.Table.from_arrays(decoded.columns + meta.columns,
                                 schema=pa.schema(list(decoded.schema) + list(meta.schema)))
    rows = -(-n // files)

    def encode():
        return [parquet.encode(table.slice(i, rows), {schema_id: json.dumps(schema)}) for i in range(0, n, rows)]

    blobs = stage("parquet", encode)
    prefix = f"floor/{uuid.uuid4().hex[:8]}"

    def put():
        for i, blob in enumerate(blobs):
            s3.put_object(Bucket=bucket, Key=f"{prefix}/{i}.parquet", Body=blob)

    stage("put", put)
    store = open_store(f"s3://{bucket}/{prefix}-obstore")

    def put_obstore():  # archiver's S3 store: obstore first
        for i, blob in enumerate(blobs):
            store.put(f"{i}.parquet", blob)

    stage("put (obstore)", put_obstore)
    return stage.per_record(n)


def replay(args, s3, bucket: str) -> dict[str, float]:
    archive = Archive(open_store(args.archive))
    entries = list(archive.files(args.topic))
    stage = Stages()

    def read():
        return [archive.read(f) for f in entries]

    tables = stage("read", read)
    n = sum(t.num_rows for t in tables)
    with Registry(RegistrySettings.from_env()) as registry:
        schema_id = tables[0]["_schema_id"][0].as_py()
        schema = json.loads(registry.schema_text(schema_id))

    def fields():
        return [(t["_kafka_key"].to_pylist(), t["_kafka_timestamp"].cast("int64").to_pylist(),
                 [[(h["key"], h["value"]) for h in hs] for hs in t["_kafka_headers"].to_pylist()])
                for t in tables]

    meta = stage("fields", fields)
    native_encode.encode_rows(tables[0].slice(0, 1000), schema)  # builds the plan outside the timing
    header = wire.frame(schema_id, b"")

    def encode():
        return [[header + v for v in native_encode.encode_rows(t.slice(i, 10_000), schema)]
                for t in tables for i in range(0, t.num_rows, 10_000)]

    values = [v for chunk in stage("encode", encode) for v in chunk]
    kafka = KafkaSettings.from_env()
    target = f"floor-{uuid.uuid4().hex[:8]}"
    source_kafka.ensure_topic(kafka, target, 6)
    producer = source_kafka.CheckedProducer(kafka.client_config() | {  # as replay's: failures reported only
        "linger.ms": 20, "compression.type": "lz4", "enable.idempotence": True, "batch.size": 1_000_000,
        "queue.buffering.max.messages": 2_000_000})
    partitions = [t["_kafka_partition"].to_pylist() for t in tables]
    thread = {}

    def produce():
        started = time.thread_time()
        i = 0
        for (keys, stamps, headers), parts in zip(meta, partitions):
            for key, stamp, hs, part in zip(keys, stamps, headers, parts):
                while True:
                    try:
                        producer.produce(target, values[i], key, partition=part, timestamp=stamp, headers=hs)
                        break
                    except BufferError:
                        producer.poll(0.05)
                i += 1
        source_kafka.flush(producer, 300)
        thread["produce (thread)"] = time.thread_time() - started

    stage("produce", produce)
    return stage.per_record(n) | {name: seconds / n * 1e6 for name, seconds in thread.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job", choices=("sink", "replay"))
    parser.add_argument("--topic", required=True, help="a topic bench/sink.py produced")
    parser.add_argument("--files", type=int, default=360, help="sink: files the sink writes for it (its summary says)")
    parser.add_argument("--archive", help="replay: the URL of an archive of --topic")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    job = {"sink": sink, "replay": replay}[args.job]
    bucket = os.environ["ARCHIVER_ARCHIVE_URL"].removeprefix("s3://").split("/")[0]
    s3 = boto3.client("s3")
    tune_gc()  # as the sink does
    samples = []
    for _ in range(args.runs):
        samples.append(job(args, s3, bucket))
        time.sleep(1)
    medians = {k: statistics.median(s[k] for s in samples) for k in samples[0]}
    total = sum(v for k, v in medians.items() if "thread" not in k)
    for name, micros in medians.items():
        print(f"{name:17} {micros:6.2f} µs/record")
    print(f"{'sum':17} {total:6.2f} µs/record: at most {1e6 / total:,.0f} records per CPU-second "
          f"(median of {args.runs} runs)")
    if "produce (thread)" in medians:
        print(f"one producing thread: at most {1e6 / medians['produce (thread)']:,.0f} records/s")


if __name__ == "__main__":
    main()
