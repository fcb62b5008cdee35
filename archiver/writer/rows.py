"""Rows: decoded runs of a batch, with their Kafka metadata, as the table a file stores.

The first stage after decoding. A batch of consumed records is cut where the writer schema
changes (`schema_segments`), each segment is decoded into runs (`codec.values`), and each run
becomes rows: the value columns, then the `_kafka_*` metadata columns (and `_key` for the
string and avro key formats), in offset order. Pure: no I/O.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from archiver.codec.arrow import nullable_schema
from archiver.codec.values import Decoded, Run, shared_header
from archiver.source.records import Batch, Record
from archiver.writer import parquet


def schema_segments(values: Sequence[bytes | None]) -> list[tuple[int, int]]:
    """[begin, end) ranges split at writer-schema changes (tombstones join any segment), so a
    change can rotate."""
    if shared_header(values) is not None:
        return [(0, len(values))]
    bounds, current = [0], None
    for i, value in enumerate(values):
        if value is None or len(value) < 5:
            continue
        sid = value[1:5]
        if current is not None and sid != current:
            bounds.append(i)
        current = sid
    bounds.append(len(values))
    return [(begin, end) for begin, end in itertools.pairwise(bounds) if end > begin]


def table_of(runs: list[Run], batch: Batch, key_format: str = "bytes",
             keys: pa.Array | None = None) -> tuple[pa.Table, list[int] | None]:
    """The runs' rows with their metadata, in offset order, and their positions in the batch
    (None: all of them). `keys`: the decoded keys of the batch (key_format = avro)."""
    if len(runs) == 1 and len(runs[0].rows) == len(batch):
        return batch_rows(runs[0], batch, key_format, keys), None
    tables = [batch_rows(run, batch.take(run.rows), key_format,
                         None if keys is None else keys.take(pa.array(run.rows, pa.int64())))
              for run in runs]
    rows = sorted(i for run in runs for i in run.rows)
    return (tables[0] if len(tables) == 1 else in_offset_order(tables)), rows


def batch_rows(run: Run, batch: Batch, key_format: str = "bytes", decoded_keys: pa.Array | None = None) -> pa.Table:
    """The rows a file stores for one decoded run: value columns, then the Kafka metadata columns.

    `decoded_keys` (key_format = avro) become the `_key` column as they are.
    """
    meta = parquet.metadata_columns(batch, run.schema_id)
    if key_format == "string":
        meta = meta.append_column("_key", _keys_as_text(meta["_kafka_key"]))
    elif decoded_keys is not None:
        meta = meta.append_column("_key", decoded_keys)
    if run.table is None:
        return meta
    values = run.table
    wanted = nullable_schema(values.schema)  # tombstone rows null whole structs
    if not wanted.equals(values.schema):  # a no-op cast is not free, and pyarrow breaks structs of null children
        values = pa.Table.from_arrays([c if c.type == f.type else parquet.cast(c, f.type)
                                       for c, f in zip(values.columns, wanted, strict=True)], schema=wanted)
    return pa.Table.from_arrays(values.columns + meta.columns,
                                schema=pa.schema(list(values.schema) + list(meta.schema)))


def archived_rows(run: Run, partition: int, offsets: list[int], stamps: list[tuple[int, int]],
                  keys: list[bytes | None], headers: list, key_format: str = "bytes",
                  decoded_keys: pa.Array | None = None) -> pa.Table:
    """`batch_rows` of records given as lists (confluent-kafka's timestamp pairs and header lists)."""
    meta = Batch.of([Record("", partition, offset, stamp, key, None, header)
                     for offset, stamp, key, header in zip(offsets, stamps, keys, headers, strict=True)])
    return batch_rows(run, meta, key_format, decoded_keys)


def with_keys(decoded: Decoded, keys: list, decode: Callable[[list], tuple[pa.Array, list]]) -> tuple[Decoded, pa.Array]:
    """Avro keys (`decode`: a key decoder's), one per position (null where undecodable); rows with
    a bad key join the errors and leave their runs."""
    column, key_errors = decode(keys)
    bad = {i for i, _ in key_errors}
    good = [i for i in range(len(keys)) if i not in bad]
    slot = dict(zip(good, range(len(good))))
    aligned = column.take(pa.array([slot.get(i) for i in range(len(keys))], pa.int64()))
    if not bad:
        return decoded, aligned
    known = {i for i, _ in decoded.errors}
    errors = sorted(decoded.errors + [(i, r) for i, r in key_errors if i not in known])
    runs = []
    for run in decoded.runs:
        keep = [j for j, i in enumerate(run.rows) if i not in bad]
        if keep:
            table = None if run.table is None else run.table.take(pa.array(keep, pa.int64()))
            runs.append(Run(run.schema_id, [run.rows[j] for j in keep], table))
    return Decoded(runs, errors), aligned


def in_offset_order(tables: list[pa.Table]) -> pa.Table:
    table = pa.concat_tables(tables, promote_options="default")
    return table.take(pc.sort_indices(table["_kafka_offset"]))


def _keys_as_text(keys: pa.ChunkedArray) -> pa.Array:
    """Keys as UTF-8 strings; a key that is not valid UTF-8 gets a null `_key` (its bytes stay in _kafka_key)."""
    try:
        return pc.cast(keys, pa.string())
    except pa.ArrowInvalid:
        return pa.array([_utf8_or_none(k) for k in keys.to_pylist()], pa.string())


def _utf8_or_none(key: bytes | None) -> str | None:
    try:
        return key.decode("utf-8") if key is not None else None
    except UnicodeDecodeError:
        return None
