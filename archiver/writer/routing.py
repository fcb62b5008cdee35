"""Routing: which output partition (the directories under `topic=T/`) each row goes to.

The stage between rows and files. A row's time partition comes from its time field or its
Kafka timestamp; its key directory from a hash bucket of its key or a field's value. Pure: no
I/O; a `Router` serves one Kafka partition and caches the buckets of recent keys.
"""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from archiver import layout
from archiver.config import TopicSettings
from archiver.layout import Granularity

KEY_CACHE = 100_000
"""Keys whose bucket a router remembers."""


class Router:
    """Routes the rows of one Kafka partition by its topic's settings."""

    def __init__(self, settings: TopicSettings):
        self.settings = settings
        self._buckets: dict[bytes | None, int] = {}  # bounded cache of recent keys

    def route(self, table: pa.Table) -> tuple[np.ndarray, list[str], np.ndarray]:
        """Per row, the index of its output partition in the returned names, and the epoch ms
        that picked its time partition (0 when there is none)."""
        times = self.times(table)
        granularity = Granularity(self.settings.time_granularity)
        periods = times // granularity.millis  # floor division: the time bucket's number
        parts, part_names = self._key_parts(table)
        first = int(periods.min())
        codes, ids = np.unique((periods - first) * len(part_names) + parts, return_inverse=True)
        names = []
        for code in codes.tolist():
            period, part = divmod(code, len(part_names))
            path = layout.time_path((first + period) * granularity.millis, granularity)
            names.append(path if part_names[part] is None else f"{path}/{part_names[part]}")
        return ids, names, times

    def times(self, table: pa.Table) -> np.ndarray:
        """Per row, the epoch ms that picks its time partition (0 when there is none)."""
        times = pc.fill_null(table["_kafka_timestamp"].cast(pa.int64()), 0)
        field_name = self.settings.time_field
        if field_name and field_name in table.column_names:
            column = table[field_name]
            if pa.types.is_timestamp(column.type):
                column = pc.cast(column, pa.timestamp("ms", tz=column.type.tz))
            times = pc.coalesce(pc.cast(column, pa.int64()), times)
        return times.to_numpy()

    def _key_parts(self, table: pa.Table) -> tuple[np.ndarray, list[str | None]]:
        """Per row, the index of its key directory in the returned list (None: no key directory)."""
        s = self.settings
        if s.key_partitioning == "hash":
            keys, rows = distinct(table["_kafka_key"])
            buckets = np.array([self._bucket(key) for key in keys], dtype=np.int64)
            return buckets[rows], _bucket_paths(s.key_buckets)
        if s.key_partitioning == "field":
            allowed = frozenset(s.key_field_values)
            if s.key_field not in table.column_names:
                return np.zeros(table.num_rows, np.int64), [layout.field_value_path(s.key_field, None, allowed)]
            values, rows = distinct(table[s.key_field])
            paths = [layout.field_value_path(s.key_field, v, allowed) for v in values]
            names = sorted(set(paths))  # values outside `allowed` share one path
            slot = {path: i for i, path in enumerate(names)}
            return np.array([slot[path] for path in paths], dtype=np.int64)[rows], names
        return np.zeros(table.num_rows, np.int64), [None]

    def _bucket(self, key: bytes | None) -> int:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = layout.key_bucket(key, self.settings.key_buckets)
            if len(self._buckets) < KEY_CACHE:
                self._buckets[key] = bucket
        return bucket


def distinct(column: pa.ChunkedArray) -> tuple[list, np.ndarray]:
    """The distinct values of a column (Python objects) and, per row, the index of its value."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    try:
        encoded = column.combine_chunks().dictionary_encode(null_encoding="encode")
    except pa.ArrowNotImplementedError:  # nested types have no hash kernel: compare Python values
        index: dict[str, int] = {}
        values, rows = [], []
        for value in column.to_pylist():
            rows.append(index.setdefault(repr(value), len(index)))
            if len(values) < len(index):
                values.append(value)
        return values, np.array(rows, dtype=np.int64)
    return encoded.dictionary.to_pylist(), encoded.indices.to_numpy()


@functools.lru_cache(maxsize=16)
def _bucket_paths(buckets: int) -> list[str]:
    return [layout.bucket_path(bucket, buckets) for bucket in range(buckets)]
