"""Avro-encoded record keys (Confluent wire format) decoded into one `_key` column."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from archiver.codec.registry import Registry
from archiver.codec.values import ValueDecoder


class KeyDecoder:
    """Decodes a batch of keys; null keys give null rows, undecodable ones are reported."""

    def __init__(self, registry: Registry | None, native_allowed: bool = True):
        self._values = ValueDecoder(registry, native_allowed=native_allowed)

    def decode(self, keys: Sequence[bytes | None]) -> tuple[pa.Array, list[tuple[int, str]]]:
        """The `_key` values of the keys that decoded, in input order, and (position, reason) of the others.

        A key schema's record fields become the struct's fields; keys of different schemas in
        one batch are merged by field name.
        """
        decoded = self._values.decode(keys)
        tables, positions = [], []
        for run in decoded.runs:
            if run.table is None:
                continue
            table = run.table.combine_chunks()
            columns = [c.chunk(0) if c.num_chunks else pa.array([], c.type) for c in table.columns]
            tables.append(pa.table({"_key": pa.StructArray.from_arrays(columns, fields=list(table.schema))}))
            positions.append(np.asarray(run.rows))
        bad = {i for i, _ in decoded.errors}
        good = [i for i in range(len(keys)) if i not in bad]
        if not tables:
            return pa.nulls(len(good)), [(i, f"key: {reason}") for i, reason in decoded.errors]
        merged = pa.concat_tables(tables, promote_options="permissive")["_key"]
        # place decoded keys at their positions among the good rows; null keys stay null
        slot = {pos: n for n, pos in enumerate(good)}
        order = np.full(len(good), -1, dtype=np.int64)
        for n, pos in enumerate(np.concatenate(positions)):
            order[slot[int(pos)]] = n
        indices = pa.array(order, mask=order < 0)
        return merged.take(indices), [(i, f"key: {reason}") for i, reason in decoded.errors]
