"""Per-partition buffers and the rotation policy.

A buffer holds the records of one Kafka partition consumed since its last commit, split by
output partition (the directories under `topic=T/`). Rotation flushes the whole buffer as one
commit, so every ledger entry covers one contiguous offset range.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


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
    """Records of one topic-partition since its last commit.

    Each batch is kept as one table sorted by output partition, with the row range of every
    output partition in it; a file's rows are sliced out of the batches only when it is encoded
    (thousands of small slices kept per batch cost more memory than the rows they hold).
    """

    topic: str
    partition: int
    start: int | None = None  # first offset of the range this buffer will commit
    end: int | None = None  # one past the last consumed offset
    batches: list[pa.Table] = field(default_factory=list)
    pieces: dict[str, list[tuple[int, int, int]]] = field(default_factory=dict)  # dirs -> (batch, first row, rows)
    partition_rows: dict[str, int] = field(default_factory=dict)  # dirs -> rows buffered
    rows: int = 0
    nbytes: int = 0
    dead_lettered: int = 0
    schema_ids: dict[int, str] = field(default_factory=dict)
    min_ts: int | None = None
    max_ts: int | None = None
    opened_at: float | None = None
    lost: list[tuple[int, int]] = field(default_factory=list)  # [from, to): deleted by Kafka before read

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

    def add(self, table: pa.Table, ids: Sequence[int], names: list[str], timestamps: Sequence[int]) -> None:
        """Append rows (in offset order); row i goes to output partition names[ids[i]] (names are distinct)."""
        batch = len(self.batches)
        ordered, ranges = _sort_by_partition(table, ids)
        self.batches.append(ordered)
        for index, first, count in ranges:
            dirs = names[index]
            self.pieces.setdefault(dirs, []).append((batch, first, count))
            self.partition_rows[dirs] = self.partition_rows.get(dirs, 0) + count
        self.rows += table.num_rows
        self.nbytes += table.nbytes
        if len(timestamps):
            lo, hi = int(np.min(timestamps)), int(np.max(timestamps))
            self.min_ts = lo if self.min_ts is None else min(self.min_ts, lo)
            self.max_ts = hi if self.max_ts is None else max(self.max_ts, hi)

    def rotation_due(self, policy: RotationPolicy, now: float) -> Rotation | None:
        if self.empty:
            return None
        if self.partition_rows and max(self.partition_rows.values()) >= policy.max_records:
            return Rotation.RECORDS
        if self.nbytes >= policy.max_bytes:
            return Rotation.BYTES
        if policy.time_window_ms and self.min_ts is not None and self.max_ts - self.min_ts >= policy.time_window_ms:
            return Rotation.TIME_WINDOW
        if self.opened_at is not None and now - self.opened_at >= policy.interval_s:
            return Rotation.INTERVAL
        return None

    def files(self) -> Iterator[tuple[str, pa.Table]]:
        """(directories, table) per output partition, in directory order, each table in offset order.

        Tables are built one at a time and contiguous (the Parquet writer is slower on many chunks).
        """
        for dirs, pieces in sorted(self.pieces.items()):
            parts = [self.batches[batch].slice(first, count) for batch, first, count in pieces]
            yield dirs, pa.concat_tables(parts, promote_options="default").combine_chunks()

    def release_rows(self) -> None:
        """Drop the buffered rows (a flush has encoded them); offsets and schemas stay."""
        self.batches, self.pieces, self.partition_rows = [], {}, {}
        self.nbytes = 0

    def reset(self) -> None:
        """Start the next range where this one ended."""
        start = self.end if self.end is not None else self.start
        self.__init__(self.topic, self.partition, start=start, end=start)


def _sort_by_partition(table: pa.Table, ids: Sequence[int]) -> tuple[pa.Table, list[tuple[int, int, int]]]:
    """The rows ordered by output partition, and (partition id, first row, rows) per partition.

    Always a copy, even for one partition: decoded columns may live in memory the decoder
    allocated (and over-allocated), which the buffer must not keep alive. The copy comes from
    the system allocator: buffered rows live until their flush, and mixed with the short-lived
    allocations of decoding in Arrow's default pool they left it fragmented (20-30 MB more RSS).
    """
    keys = np.asarray(ids, dtype=np.int64)
    order = np.argsort(keys, kind="stable")  # stable: keeps offset order inside each output partition
    present, firsts, counts = np.unique(keys[order], return_index=True, return_counts=True)
    ordered = pc.take(table, order, memory_pool=pa.system_memory_pool())
    return ordered, list(zip(present.tolist(), firsts.tolist(), counts.tolist()))
