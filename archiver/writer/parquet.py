"""Parquet encoding of archived records: decoded value columns plus Kafka metadata columns."""

from __future__ import annotations

import io
import itertools
import json
import operator
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

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


def metadata_table(partition: int, offsets: Sequence[int], stamps: Sequence[tuple[int, int]],
                   keys: Sequence[bytes | None], headers: Sequence[list | None], schema_id: int | None) -> pa.Table:
    """The Kafka metadata columns for records of one partition written with one schema.

    `stamps` are confluent-kafka's (type, ms) pairs; `headers` its lists of (key, bytes) or None.
    """
    n = len(offsets)
    return pa.Table.from_arrays([
        pa.array(np.full(n, partition, dtype=np.int32)),
        pa.array(offsets, pa.int64()),
        pa.array([ts if kind else None for kind, ts in stamps], pa.timestamp("ms", tz="UTC")),
        pa.DictionaryArray.from_arrays(pa.array([kind for kind, _ in stamps], pa.int8()), _TIMESTAMP_NAMES
                                       ).cast(pa.string()),
        pa.array(keys, pa.binary()),
        _headers(headers),
        pa.nulls(n, pa.int32()) if schema_id is None else pa.array(np.full(n, schema_id, dtype=np.int32)),
    ], schema=METADATA_SCHEMA)


_first, _second = operator.itemgetter(0), operator.itemgetter(1)
_TIMESTAMP_NAMES = pa.array([None, "CreateTime", "LogAppendTime"], pa.string())


def _headers(headers: Sequence[list | None]) -> pa.Array:
    """An ordered list<struct<key, value>> column, built from flat arrays (no per-header objects)."""
    counts = [len(h) if h else 0 for h in headers]
    flat = list(itertools.chain.from_iterable(h for h in headers if h))
    names, values = list(map(_first, flat)), list(map(_second, flat))
    entries = pa.StructArray.from_arrays([pa.array(names, pa.string()), pa.array(values, pa.binary())],
                                         fields=list(HEADER_TYPE.value_type))
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts, dtype=np.int32)]).astype(np.int32))
    return pa.ListArray.from_arrays(offsets, entries, type=HEADER_TYPE)


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
