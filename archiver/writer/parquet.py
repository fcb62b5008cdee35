"""Parquet encoding of archived records: decoded value columns plus Kafka metadata columns."""

from __future__ import annotations

import base64
import functools
import io
import json
from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from archiver.source.records import HEADER_TYPE, NO_TIMESTAMP, Batch, header_array

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
ROW_ORDER_KEY = b"archiver.row_order"  # "key": by key then offset within each row group; absent: by offset


def metadata_table(partition: int, offsets: Sequence[int], stamps: Sequence[tuple[int, int]],
                   keys: Sequence[bytes | None], headers: Sequence[list | None], schema_id: int | None) -> pa.Table:
    """The Kafka metadata columns of records given as lists: confluent-kafka's (type, ms) `stamps`
    and its lists of (key, bytes) or None as `headers`."""
    return metadata_columns(Batch("", partition, np.asarray(offsets, dtype=np.int64),
                                  np.array([ts for _, ts in stamps], dtype=np.int64),
                                  np.array([kind for kind, _ in stamps], dtype=np.int8),
                                  list(keys), [None] * len(offsets), header_array(headers)), schema_id)


def metadata_columns(batch: Batch, schema_id: int | None) -> pa.Table:
    """The Kafka metadata columns for records of one partition written with one schema."""
    n = len(batch)
    return pa.Table.from_arrays([
        pa.array(np.full(n, batch.partition, dtype=np.int32)),
        pa.array(batch.offsets, pa.int64()),
        pa.array(batch.timestamps, pa.timestamp("ms", tz="UTC"), mask=batch.types == NO_TIMESTAMP),
        pa.DictionaryArray.from_arrays(pa.array(batch.types, pa.int8()), _TIMESTAMP_NAMES).cast(pa.string()),
        pa.array(batch.keys, pa.binary()),
        batch.headers,
        pa.nulls(n, pa.int32()) if schema_id is None else pa.array(np.full(n, schema_id, dtype=np.int32)),
    ], schema=METADATA_SCHEMA)


_TIMESTAMP_NAMES = pa.array([None, "CreateTime", "LogAppendTime"], pa.string())


def encode(table: pa.Table, writer_schemas: dict[int, str], compression: str = "zstd",
           compression_level: int | None = None, row_group_size: int = 1_000_000) -> bytes:
    """One Parquet file; the writer schemas (id → Avro JSON) go into the key-value metadata."""
    metadata = dict(table.schema.metadata or {})
    metadata[WRITER_SCHEMAS_KEY] = schemas_json(tuple(sorted(writer_schemas.items())))
    table = table.replace_schema_metadata(metadata)
    sink = io.BytesIO()
    with pq.ParquetWriter(sink, table.schema, **writer_options(table.schema, compression, compression_level,
                                                               micros_fit(table))) as writer:
        writer.write_table(table, row_group_size=row_group_size)
    learn_dictionaries(table.schema, writer.writer.metadata)
    return sink.getvalue()


def writer_options(schema: pa.Schema, compression: str = "zstd", compression_level: int | None = None,
                   micros: bool = True) -> dict:
    """Parquet writer settings shared by the sink and compaction.

    Timestamps are stored in microseconds, the unit Iceberg readers require (Spark's vectorized
    Iceberg reader fails on millisecond columns); the Arrow schema in the file keeps their
    original unit, and `as_written` restores it on read. `micros` off (`micros_fit`) keeps them
    as they are.
    """
    bare = schema.remove_metadata()
    return {"compression": compression, "compression_level": compression_level, "write_statistics": True,
            "use_dictionary": _dictionary_columns(bare, _PLAIN.get(bare, frozenset())),
            "coerce_timestamps": "us" if micros else None}


def written_schema(metadata: dict | None) -> pa.Schema | None:
    """The Arrow schema a file was written from (its `ARROW:schema` metadata), or None."""
    encoded = (metadata or {}).get(b"ARROW:schema")
    if encoded is None:
        return None
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(encoded)))


def as_written(data: pa.Table | pa.RecordBatch, written: pa.Schema | None) -> pa.Table | pa.RecordBatch:
    """`data` read from a file, with the types it was written with (millisecond timestamps the
    file stores in microseconds come back in milliseconds: exact, they were whole milliseconds)."""
    if written is None or data.schema.remove_metadata() == written.remove_metadata():
        return data
    columns = [column if column.type == field.type else cast(column, field.type)  # only those that differ
               for column, field in zip(data.columns, written, strict=True)]
    kind = pa.Table if isinstance(data, pa.Table) else pa.RecordBatch
    return kind.from_arrays(columns, schema=written.with_metadata(data.schema.metadata))


def cast(column: pa.Array | pa.ChunkedArray, target: pa.DataType) -> pa.Array | pa.ChunkedArray:
    """`column.cast(target)`, except that a type nesting the null type is rebuilt level by level:
    pyarrow's cast of a struct holding a list of structs with null-typed fields gives an invalid
    array (the null children come back shorter than their parent)."""
    if not _nests(column.type, pa.types.is_null):
        return column.cast(target)
    if isinstance(column, pa.ChunkedArray):
        return pa.chunked_array([_rebuilt(chunk, target) for chunk in column.chunks], type=target)
    return _rebuilt(column, target)


def _rebuilt(array: pa.Array, target: pa.DataType) -> pa.Array:
    t = array.type
    if t == target:
        return array
    mask = array.is_null() if array.null_count else None
    if pa.types.is_null(target):
        return pa.nulls(len(array))
    if pa.types.is_struct(t) and pa.types.is_struct(target):
        children = [_rebuilt(array.field(i), target.field(i).type) for i in range(t.num_fields)]
        return pa.StructArray.from_arrays(children, fields=list(target), mask=mask)
    if (pa.types.is_list(t) and pa.types.is_list(target)) or (pa.types.is_large_list(t) and pa.types.is_large_list(target)):
        start, end = array.offsets[0].as_py(), array.offsets[-1].as_py()
        offsets = pc.subtract(array.offsets, start)
        values = _rebuilt(array.values.slice(start, end - start), target.value_type)
        return type(array).from_arrays(offsets, values, type=target, mask=mask)
    return array.cast(target)


def read_table(data: bytes, row_groups: list[int] | None = None) -> pa.Table:
    """An archived file (or its `row_groups` only), with the types it was written with."""
    file = pq.ParquetFile(io.BytesIO(data))
    metadata = file.metadata
    if any(_nests(f.type, pa.types.is_null) for f in file.schema_arrow):
        table = pq.read_table(io.BytesIO(data))  # ParquetFile.read mangles lists of null
        if row_groups is not None:
            start, length = row_range(metadata, row_groups)
            table = table.slice(start, length)
    elif row_groups is not None:
        table = file.read_row_groups(row_groups)  # only this partition's rows of a shared file
    else:
        table = file.read()  # half the CPU of read_table (no dataset layer): small files add up
    return as_written(table, written_schema(metadata.metadata))


@functools.lru_cache(maxsize=1024)
def _nests(t: pa.DataType, test: Callable[[pa.DataType], bool]) -> bool:
    """Whether `test` holds for a type or any type nested in it."""
    return test(t) or any(_nests(t.field(i).type, test) for i in range(t.num_fields))


def _is_millis(t: pa.DataType) -> bool:
    return pa.types.is_timestamp(t) and t.unit == "ms"


def row_range(metadata: pq.FileMetaData, row_groups: list[int]) -> tuple[int, int]:
    """(first row, rows) of contiguous `row_groups` of a file."""
    counts = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    first, last = min(row_groups), max(row_groups)
    return sum(counts[:first]), sum(counts[first:last + 1])


_MICROS_MAX_MS = (2**63 - 1) // 1000


def micros_fit(table: pa.Table) -> bool:
    """Whether every millisecond timestamp of `table` (nested ones too) can be stored in
    microseconds; Kafka allows any int64, a file with one beyond ±292,000 years keeps milliseconds."""
    def fits(array: pa.Array) -> bool:
        t = array.type
        if pa.types.is_timestamp(t):
            if t.unit != "ms" or array.null_count == len(array):
                return True
            low, high = pc.min_max(array.cast(pa.int64())).values()
            return -_MICROS_MAX_MS <= low.as_py() and high.as_py() <= _MICROS_MAX_MS
        if pa.types.is_struct(t):
            return all(fits(array.field(i)) for i in range(t.num_fields))
        if pa.types.is_map(t):
            return fits(array.keys) and fits(array.items)
        if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
            return fits(array.flatten())
        return True

    # most columns hold no millisecond timestamp: skip them
    return all(fits(chunk) for column in table.columns if _nests(column.type, _is_millis) for chunk in column.chunks)


_UNIQUE_COLUMNS = frozenset({"_kafka_offset", "_kafka_timestamp"})

# Per Arrow schema (without metadata), the leaf columns found not to repeat: their dictionary
# held most of their bytes. Learned from the files written (`learn_dictionaries`); a few hundred
# schemas at most, one small set each.
_PLAIN: dict[pa.Schema, frozenset[str]] = {}
LEARN_MIN_ROWS = 1_000  # a file this large tells whether a column repeats
DICTIONARY_SHARE = 0.5  # plain from then on when the dictionary page was over this share of the column


def learn_dictionaries(schema: pa.Schema, metadata: pq.FileMetaData) -> None:
    """Stop dictionary-encoding the columns of `schema` whose values did not repeat in a file just
    written (ids, trace ids, amounts): their dictionary holds every value, so it costs a hash
    table and index bytes for nothing. Measured on the demo events: 14% less CPU per file and
    8% fewer bytes. Columns that repeat keep their dictionary; the choice is never undone."""
    if metadata.num_rows < LEARN_MIN_ROWS or metadata.num_row_groups == 0:
        return
    bare = schema.remove_metadata()
    found = set(_PLAIN.get(bare, ()))
    group = metadata.row_group(0)
    for i in range(group.num_columns):
        column = group.column(i)
        if column.has_dictionary_page and column.dictionary_page_offset is not None and \
                column.data_page_offset - column.dictionary_page_offset > DICTIONARY_SHARE * column.total_compressed_size:
            found.add(column.path_in_schema)
    if found != _PLAIN.get(bare, frozenset()):
        if len(_PLAIN) >= 256:
            _PLAIN.clear()
        _PLAIN[bare] = frozenset(found)


@functools.lru_cache(maxsize=256)
def _dictionary_columns(schema: pa.Schema, plain: frozenset[str] = frozenset()) -> list[str]:
    """Leaf column paths to dictionary-encode: all but the offsets and timestamps, which are
    (nearly) unique per record, so a dictionary only costs CPU and bytes, and the `plain` ones."""
    sink = io.BytesIO()
    pq.write_table(schema.empty_table(), sink)
    leaves = pq.ParquetFile(sink).schema
    paths = (leaves.column(i).path for i in range(len(leaves)))
    return [path for path in paths if path not in _UNIQUE_COLUMNS and path not in plain]


@functools.lru_cache(maxsize=64)
def schemas_json(writer_schemas: tuple[tuple[int, str], ...]) -> bytes:
    return json.dumps({str(k): v for k, v in writer_schemas}).encode()


def writer_schemas_of(parquet_metadata: dict[bytes, bytes] | None) -> dict[int, str]:
    """The writer schemas stored in a file's key-value metadata."""
    raw = (parquet_metadata or {}).get(WRITER_SCHEMAS_KEY)
    return {int(k): v for k, v in json.loads(raw).items()} if raw else {}
