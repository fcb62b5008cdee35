"""Reading a committed archive through its ledger (never by listing data objects)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pyarrow as pa

from archiver.errors import ConfigError
from archiver.ledger import Entry, FileEntry, PartitionLedger
from archiver.store import ObjectStore
from archiver.writer import parquet


class Archive:
    """The committed view of an archive: ledger entries and the files they name."""

    def __init__(self, store: ObjectStore):
        self.store = store

    def topics(self) -> list[str]:
        return [m[1] for m in self._distinct("_ledger/topic=", r"_ledger/topic=([^/]+)/")]

    def require(self) -> None:
        """Raise ConfigError unless something archiver writes is under the URL (a ledger, or data of a
        topic): a mistyped prefix must not read as an empty, healthy archive."""
        for prefix in ("_ledger/", "topic="):
            if next(iter(self.store.list(prefix)), None) is not None:
                return
        raise ConfigError(f"no archive at {self.store.url}: nothing under _ledger/ or topic=*/ "
                          "(a mistyped bucket or prefix?)")

    def partitions(self, topic: str) -> list[int]:
        return sorted(int(m[1]) for m in self._distinct(f"_ledger/topic={topic}/", r".*/partition=(\d+)/"))

    def _distinct(self, prefix: str, pattern: str) -> Iterator[re.Match]:
        """The distinct matches of `pattern` among the keys under `prefix`: one listing request
        per match, each starting after every key of the previous one ("~" sorts after the
        characters of seqs, topic names and "partition=")."""
        after = ""
        while True:
            key = next(iter(self.store.list(prefix, after)), None)
            if key is None:
                return
            match = re.match(pattern, key)
            yield match
            after = match[0] + "~"

    def entries(self, topic: str, partition: int) -> list[Entry]:
        """Committed entries of one partition, in sequence order (claims included): the whole
        ledger, for audits; readers of the live entries go through checkpoints."""
        return list(PartitionLedger(self.store, topic, partition).entries())

    def live_entries(self, topic: str, partition: int) -> list[Entry]:
        """Commit (and compaction) entries in effect, in offset order: claims and replaced ones left out."""
        return PartitionLedger(self.store, topic, partition).view().live

    def files(self, topic: str, partition: int | None = None) -> Iterator[FileEntry]:
        """Every committed file of a topic (or one partition), in offset order per partition."""
        for p in ([partition] if partition is not None else self.partitions(topic)):
            for entry in self.live_entries(topic, p):
                yield from sorted(entry.files, key=lambda f: (f.first_offset, f.key))

    def read(self, file: FileEntry) -> pa.Table:
        """The file's rows of its partition (all of them, unless the file is shared)."""
        return parquet.read_table(self.store.get(file.key), file.row_groups)

    def read_topic(self, topic: str) -> pa.Table:
        tables = [self.read(f) for f in self.files(topic)]
        return pa.concat_tables(tables, promote_options="default") if tables else pa.table({})
