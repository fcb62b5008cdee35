"""Parquet encoding of archived records: decoded value columns plus Kafka metadata columns."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

TIMESTAMP_TYPES = {0: None, 1: "CreateTime", 2: "LogAppendTime"}
HEADER_TYPE = pa.list_(pa.struct([pa.field("key", pa.string(), nullable=False), pa.field("value", pa.binary())]))
METADATA_SCHEMA = pa.schema([
    pa.field("_kafka_partition", pa.int32(), nullable=False),
    pa.field("_kafka_offset", pa.int64(), nullable=False),
    pa.field("_kafka_timestamp", pa.timestamp("ms", tz="UTC")),
    pa.field("_kafka_timestamp_type", pa.string()),
    pa.field("_kafka_key", pa.binary()),
    pa.field("_kafka_headers", HEADER_TYPE),
    pa.field("_schema_id", pa.int32()),  # null for a tombstone
])
METADATA_COLUMNS = tuple(METADATA_SCHEMA.names)
WRITER_SCHEMAS_KEY = b"archiver.writer_schemas"


def metadata_table(partition: int, offsets: Sequence[int], timestamps: Sequence[tuple[int, int]],
                   keys: Sequence[bytes | None], headers: Sequence[list | None],
                   schema_ids: Sequence[int | None]) -> pa.Table:
    """The Kafka metadata columns for a run of records of one partition.

    `timestamps` are confluent-kafka's (type, ms) pairs; `headers` its list of (key, bytes).
    """
    n = len(offsets)
    header_rows = [[{"key": k, "value": v} for k, v in h] if h else [] for h in headers]
    return pa.Table.from_arrays([
        pa.array([partition] * n, pa.int32()),
        pa.array(offsets, pa.int64()),
        pa.array([t[1] if t[0] else None for t in timestamps], pa.timestamp("ms", tz="UTC")),
        pa.array([TIMESTAMP_TYPES.get(t[0]) for t in timestamps], pa.string()),
        pa.array(keys, pa.binary()),
        pa.array(header_rows, HEADER_TYPE),
        pa.array(schema_ids, pa.int32()),
    ], schema=METADATA_SCHEMA)


def encode(table: pa.Table, writer_schemas: dict[int, str], compression: str = "zstd",
           compression_level: int | None = None, row_group_size: int = 1_000_000) -> bytes:
    """One Parquet file; the writer schemas (id → Avro JSON) go into the key-value metadata."""
    metadata = dict(table.schema.metadata or {})
    metadata[WRITER_SCHEMAS_KEY] = json.dumps({str(k): v for k, v in sorted(writer_schemas.items())}).encode()
    table = table.replace_schema_metadata(metadata)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression=compression, compression_level=compression_level,
                   row_group_size=row_group_size, write_statistics=True)
    return sink.getvalue()


def writer_schemas_of(parquet_metadata: dict[bytes, bytes] | None) -> dict[int, str]:
    """The writer schemas stored in a file's key-value metadata."""
    raw = (parquet_metadata or {}).get(WRITER_SCHEMAS_KEY)
    return {int(k): v for k, v in json.loads(raw).items()} if raw else {}
