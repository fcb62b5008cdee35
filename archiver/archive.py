"""Reading a committed archive through its ledger (never by listing data objects)."""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from archiver.ledger import Entry, FileEntry, PartitionLedger
from archiver.store import ObjectStore


class Archive:
    """The committed view of an archive: ledger entries and the files they name."""

    def __init__(self, store: ObjectStore):
        self.store = store

    def topics(self) -> list[str]:
        names = {re.match(r"_ledger/topic=([^/]+)/", k)[1] for k in self.store.list("_ledger/topic=")}
        return sorted(names)

    def partitions(self, topic: str) -> list[int]:
        found = {int(re.match(r".*/partition=(\d+)/", k)[1]) for k in self.store.list(f"_ledger/topic={topic}/")}
        return sorted(found)

    def entries(self, topic: str, partition: int) -> list[Entry]:
        """Committed entries of one partition, in sequence order (claims included)."""
        return list(PartitionLedger(self.store, topic, partition).entries())

    def live_entries(self, topic: str, partition: int) -> list[Entry]:
        """Commit (and compaction) entries in effect, in offset order: claims and replaced ones left out."""
        return live_of(self.entries(topic, partition))

    def files(self, topic: str, partition: int | None = None) -> Iterator[FileEntry]:
        """Every committed file of a topic (or one partition), in offset order per partition."""
        for p in ([partition] if partition is not None else self.partitions(topic)):
            for entry in self.live_entries(topic, p):
                yield from sorted(entry.files, key=lambda f: (f.first_offset, f.key))

    def read(self, file: FileEntry) -> pa.Table:
        return pq.read_table(io.BytesIO(self.store.get(file.key)))

    def read_topic(self, topic: str) -> pa.Table:
        tables = [self.read(f) for f in self.files(topic)]
        return pa.concat_tables(tables, promote_options="default") if tables else pa.table({})


def live_of(entries: Iterable[Entry]) -> list[Entry]:
    """The entries in effect among a ledger's entries (in seq order), sorted by offset."""
    live: dict[int, Entry] = {}
    for entry in entries:
        for replaced in entry.replaces:
            live.pop(replaced, None)
        if entry.kind != "claim":
            live[entry.seq] = entry
    return sorted(live.values(), key=lambda e: e.start)
