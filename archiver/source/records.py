"""A run of consumed records of one Kafka partition, as columns: what the sink takes in.

Both consumers hand records over this way. The native one (`archiver_native`) fills the columns
without a Python object per record but the key and the value; confluent-kafka's messages are
turned into the same columns by `Batch.of`. Tests build batches from lists (`Batch.of` takes any
objects with confluent-kafka's Message methods).
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

HEADER_TYPE = pa.list_(pa.struct([pa.field("key", pa.string(), nullable=False), pa.field("value", pa.binary())]))

Blobs = list[bytes | None] | pa.BinaryArray
"""Keys or values: a list of bytes (None: null), or an Arrow `binary` array."""

# confluent-kafka's timestamp types (TIMESTAMP_NOT_AVAILABLE, _CREATE_TIME, _LOG_APPEND_TIME)
NO_TIMESTAMP, CREATE_TIME, LOG_APPEND_TIME = 0, 1, 2


@dataclass(frozen=True)
class Record:
    """One record of a batch, with confluent-kafka's Message methods (dead letters, error lines)."""

    _topic: str
    _partition: int
    _offset: int
    _timestamp: tuple[int, int]
    _key: bytes | None
    _value: bytes | None
    _headers: list[tuple[str, bytes | None]] | None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return self._timestamp

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        return self._headers


@dataclass(frozen=True)
class Batch:
    """Records of one partition in offset order: offsets, timestamps (ms, meaningless where the
    type is NO_TIMESTAMP) and their types as NumPy arrays, keys and values as bytes (None: null),
    headers as an Arrow list<struct<key, value>> (an empty list for a record without headers).

    Keys and values are lists of bytes (None: null) from the consumers, or Arrow `binary` arrays
    when replay reads them from Parquet: `blob_list`, `blob_size` and `blob_buffers` take both."""

    topic: str
    partition: int
    offsets: np.ndarray
    timestamps: np.ndarray
    types: np.ndarray
    keys: Blobs
    values: Blobs
    headers: pa.Array

    def __len__(self) -> int:
        return len(self.offsets)

    @property
    def first(self) -> int:
        return int(self.offsets[0])

    @property
    def last(self) -> int:
        return int(self.offsets[-1])

    def slice(self, begin: int, end: int) -> Batch:
        if begin == 0 and end == len(self):
            return self
        return Batch(self.topic, self.partition, self.offsets[begin:end], self.timestamps[begin:end],
                     self.types[begin:end], self.keys[begin:end], self.values[begin:end],
                     self.headers.slice(begin, end - begin))

    def take(self, rows: Sequence[int] | None) -> Batch:
        """The records at positions `rows` (all when None)."""
        if rows is None:
            return self
        index = np.asarray(rows, dtype=np.int64)
        return Batch(self.topic, self.partition, self.offsets[index], self.timestamps[index], self.types[index],
                     _take(self.keys, rows, index), _take(self.values, rows, index),
                     self.headers.take(pa.array(index)))

    def from_offset(self, offset: int) -> Batch:
        """The records at `offset` and after."""
        return self.slice(int(np.searchsorted(self.offsets, offset)), len(self))

    def record(self, i: int) -> Record:
        headers = [(h["key"], h["value"]) for h in self.headers[i].as_py()] or None
        return Record(self.topic, self.partition, int(self.offsets[i]),
                      (int(self.types[i]), int(self.timestamps[i]) if self.types[i] else -1),
                      _item(self.keys, i), _item(self.values, i), headers)

    @classmethod
    def of(cls, messages: Sequence) -> Batch:
        """The batch of confluent-kafka messages (or objects with their methods) of one partition."""
        first = messages[0] if messages else None
        stamps = [m.timestamp() for m in messages]
        return cls(first.topic() if first is not None else "", first.partition() if first is not None else -1,
                   np.fromiter((m.offset() for m in messages), np.int64, len(messages)),
                   np.fromiter(map(_second, stamps), np.int64, len(stamps)),
                   np.fromiter(map(_first, stamps), np.int8, len(stamps)),
                   [m.key() for m in messages], [m.value() for m in messages],
                   header_array([m.headers() for m in messages]))

    @classmethod
    def from_native(cls, run: tuple) -> Batch:
        """A run as `archiver_native.Consumer.consume` returns it."""
        topic, partition, offsets, timestamps, types, keys, values, headers = run
        list_offsets, name_offsets, names, value_offsets, header_values, validity, count = headers
        entries = pa.StructArray.from_arrays([
            pa.Array.from_buffers(pa.string(), count, [None, pa.py_buffer(name_offsets), pa.py_buffer(names)]),
            pa.Array.from_buffers(pa.binary(), count, [None if validity is None else pa.py_buffer(validity),
                                                       pa.py_buffer(value_offsets), pa.py_buffer(header_values)]),
        ], fields=list(HEADER_TYPE.value_type))
        n = len(values)
        return cls(topic, partition, np.frombuffer(offsets, np.int64), np.frombuffer(timestamps, np.int64),
                   np.frombuffer(types, np.int8), keys, values,
                   pa.Array.from_buffers(HEADER_TYPE, n, [None, pa.py_buffer(list_offsets)], children=[entries]))


_first, _second = operator.itemgetter(0), operator.itemgetter(1)

def blob_list(column: Blobs) -> list[bytes | None]:
    """The items as bytes (None: null)."""
    return column.to_pylist() if isinstance(column, pa.Array) else list(column)


def blob_size(column: Blobs) -> int:
    """The bytes of all items together."""
    if isinstance(column, pa.Array):
        return int(pc.sum(pc.binary_length(column)).as_py() or 0)
    return sum(map(len, filter(None, column)))


def blob_buffers(column: Blobs) -> tuple | list:
    """The column as `archiver_native` takes it: the list itself, or an Arrow array's buffers
    `(validity or None, int32 offsets, data or None, array offset, length)`, lent without a copy."""
    if not isinstance(column, pa.Array):
        return column if isinstance(column, list) else list(column)
    if column.type != pa.binary():
        column = column.cast(pa.binary())
    validity, offsets, data = column.buffers()
    return (None if validity is None or not column.null_count else raw(validity), raw(offsets),
            None if data is None else raw(data), column.offset, len(column))


def raw(buffer) -> memoryview:
    """A contiguous buffer (Arrow's, NumPy's, bytes) as unsigned bytes, as `archiver_native` reads it."""
    return memoryview(buffer).cast("B")


def _item(column: Blobs, i: int) -> bytes | None:
    return column[i].as_py() if isinstance(column, pa.Array) else column[i]


def _take(column: Blobs, rows: Sequence[int], index: np.ndarray) -> Blobs:
    return column.take(pa.array(index)) if isinstance(column, pa.Array) else [column[i] for i in rows]


def header_array(headers: Sequence[list | None]) -> pa.Array:
    """An ordered list<struct<key, value>> column from confluent-kafka's lists of (key, bytes) or
    None, built from flat arrays (no per-header objects)."""
    if None in headers:  # a message without headers gets an empty list
        headers = [h or () for h in headers]
    offsets = np.zeros(len(headers) + 1, dtype=np.int32)
    np.cumsum(np.fromiter(map(len, headers), np.int32, len(headers)), out=offsets[1:])
    flat = list(itertools.chain.from_iterable(headers))
    names, values = list(map(_first, flat)), list(map(_second, flat))
    entries = pa.StructArray.from_arrays([pa.array(names, pa.string()), pa.array(values, pa.binary())],
                                         fields=list(HEADER_TYPE.value_type))
    return pa.ListArray.from_arrays(pa.array(offsets), entries, type=HEADER_TYPE)
