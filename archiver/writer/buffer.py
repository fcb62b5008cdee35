"""Per-partition buffers and the rotation policy.

A buffer holds the records of one Kafka partition consumed since its last commit, split by
output partition (the directories under `topic=T/`). Rotation flushes the whole buffer as one
commit, so every ledger entry covers one contiguous offset range.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np
import pyarrow as pa


class Rotation(Enum):
    """Why a buffer was flushed; logged and counted."""

    RECORDS = "records"
    BYTES = "bytes"
    TIME_WINDOW = "time_window"
    INTERVAL = "interval"
    SCHEMA_CHANGE = "schema_change"
    MEMORY = "memory"
    REVOKE = "revoke"
    END = "end"  # --once reached the end offsets, or shutdown


@dataclass(frozen=True)
class RotationPolicy:
    """When a partition's buffer is flushed (the first limit reached wins)."""

    max_records: int = 1_000_000
    """Records in any one output file."""
    max_bytes: int = 128 * 1024 * 1024
    """Arrow bytes buffered for the partition."""
    time_window_ms: int = 0
    """Spread of record timestamps buffered for the partition (0: no limit)."""
    interval_s: float = 60.0
    """Wall-clock seconds since the first buffered record, so idle partitions still flush."""


@dataclass
class PartitionBuffer:
    """Records of one topic-partition since its last commit."""

    topic: str
    partition: int
    start: int | None = None  # first offset of the range this buffer will commit
    end: int | None = None  # one past the last consumed offset
    chunks: dict[str, list[pa.Table]] = field(default_factory=dict)
    rows: int = 0
    nbytes: int = 0
    dead_lettered: int = 0
    schema_ids: dict[int, str] = field(default_factory=dict)
    min_ts: int | None = None
    max_ts: int | None = None
    opened_at: float | None = None

    @property
    def empty(self) -> bool:
        return self.end is None or self.end == self.start

    def advance(self, first_offset: int, last_offset: int, now: float) -> None:
        """Account consumed offsets (archived or dead-lettered) up to `last_offset`."""
        if self.start is None:
            self.start = first_offset
        self.end = last_offset + 1
        if self.opened_at is None:
            self.opened_at = now

    def add(self, table: pa.Table, ids: list[int], names: list[str], timestamps: list[int]) -> None:
        """Append rows (in offset order); row i goes to output partition names[ids[i]]."""
        for dirs, part in _split(table, ids, names):
            self.chunks.setdefault(dirs, []).append(part)
        self.rows += table.num_rows
        self.nbytes += table.nbytes
        if timestamps:
            lo, hi = min(timestamps), max(timestamps)
            self.min_ts = lo if self.min_ts is None else min(self.min_ts, lo)
            self.max_ts = hi if self.max_ts is None else max(self.max_ts, hi)

    def rotation_due(self, policy: RotationPolicy, now: float) -> Rotation | None:
        if self.empty:
            return None
        if any(sum(t.num_rows for t in parts) >= policy.max_records for parts in self.chunks.values()):
            return Rotation.RECORDS
        if self.nbytes >= policy.max_bytes:
            return Rotation.BYTES
        if policy.time_window_ms and self.min_ts is not None and self.max_ts - self.min_ts >= policy.time_window_ms:
            return Rotation.TIME_WINDOW
        if self.opened_at is not None and now - self.opened_at >= policy.interval_s:
            return Rotation.INTERVAL
        return None

    def files(self) -> list[tuple[str, pa.Table]]:
        """(directories, table) per output partition, each table in offset order."""
        return [(dirs, pa.concat_tables(parts, promote_options="default")) for dirs, parts in sorted(self.chunks.items())]

    def reset(self) -> None:
        """Start the next range where this one ended."""
        start = self.end if self.end is not None else self.start
        self.__init__(self.topic, self.partition, start=start, end=start)


def _split(table: pa.Table, ids: list[int], names: list[str]) -> list[tuple[str, pa.Table]]:
    if len(names) == 1:
        return [(names[0], table)]
    keys = np.asarray(ids, dtype=np.int32)
    order = np.argsort(keys, kind="stable")  # stable: keeps offset order inside each output partition
    ordered = table.take(pa.array(order))
    sorted_keys = keys[order]
    bounds = [0, *(np.flatnonzero(np.diff(sorted_keys)) + 1).tolist(), len(sorted_keys)]
    return [(names[sorted_keys[b]], ordered.slice(b, e - b)) for b, e in zip(bounds, bounds[1:])]
