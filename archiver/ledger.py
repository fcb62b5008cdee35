"""The commit protocol: one ledger per Kafka partition, extended by conditional writes.

    _ledger/topic=T/partition=P/<seq>.json   entries, written with If-None-Match: * (one winner per seq)
    _intents/topic=T/partition=P/<seq>-<epoch>.json   files a writer is about to upload for seq

An entry is a claim (a new owner fences older ones by taking the next seq with a higher epoch)
or a commit (files covering the contiguous offset range [start, end)). The archive, not Kafka,
is the source of truth: an owner resumes at the end of the last committed range. See DESIGN.md.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from archiver import layout
from archiver.errors import NotFound, PreconditionFailed, TerminalError
from archiver.store import ObjectStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileEntry:
    """One Parquet file of a commit."""

    key: str
    rows: int
    bytes: int
    sha256: str
    first_offset: int
    last_offset: int
    min_timestamp: int | None
    max_timestamp: int | None
    schema_ids: list[int]


@dataclass(frozen=True)
class Entry:
    """A ledger entry. `start`/`end` bound the consumed offsets [start, end); a claim has start == end."""

    seq: int
    epoch: int
    kind: str  # "claim" | "commit" | "compaction"
    start: int | None
    end: int | None
    files: list[FileEntry] = field(default_factory=list)
    records: int = 0
    dead_lettered: int = 0
    replaces: list[int] = field(default_factory=list)
    committed_at: float = 0.0
    writer: str = ""

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Entry:
        raw = json.loads(data)
        raw["files"] = [FileEntry(**f) for f in raw.get("files", [])]
        return cls(**raw)


def writer_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class FencedError(TerminalError):
    """Another owner took the next ledger sequence: this writer no longer owns the partition."""


class PartitionLedger:
    """The ledger of one topic-partition, as seen by its current owner."""

    def __init__(self, store: ObjectStore, topic: str, partition: int):
        self.store = store
        self.topic = topic
        self.partition = partition
        self.head: Entry | None = None  # the newest entry this owner knows of
        self.epoch = 0

    # --- reading -------------------------------------------------------------------------

    def entries(self) -> Iterator[Entry]:
        """Every entry in sequence order."""
        for key in self.store.list(layout.ledger_prefix(self.topic, self.partition)):
            yield Entry.from_json(self.store.get(key))

    def read_head(self) -> Entry | None:
        """The newest entry, or None for a partition never archived."""
        keys = list(self.store.list(layout.ledger_prefix(self.topic, self.partition)))
        return Entry.from_json(self.store.get(keys[-1])) if keys else None

    def next_offset(self) -> int | None:
        """Where the archive continues: the end of the last committed range, or None if unknown."""
        return self.head.end if self.head else None

    # --- owning ----------------------------------------------------------------------------

    def claim(self) -> Entry:
        """Become the owner: write the next seq as a claim with a higher epoch, then clean up.

        After this succeeds, a previous owner's commit (which needs the same seq) fails.
        """
        while True:
            head = self.read_head()
            seq = head.seq + 1 if head else 1
            epoch = head.epoch + 1 if head else 1
            start = head.end if head else None
            claim = Entry(seq, epoch, "claim", start, start, committed_at=time.time(), writer=writer_id())
            try:
                self.store.put(layout.ledger_key(self.topic, self.partition, seq), claim.to_json(), if_absent=True)
            except PreconditionFailed:
                continue  # someone else wrote seq meanwhile; look again
            self.head, self.epoch = claim, epoch
            self._remove_uncommitted()
            logger.info("claimed %s[%d] epoch %d at seq %d, resuming at offset %s",
                        self.topic, self.partition, epoch, seq, start)
            return claim

    def _remove_uncommitted(self) -> None:
        """Delete files named by intents that no committed entry of their epoch covers."""
        for key in list(self.store.list(layout.intent_prefix(self.topic, self.partition))):
            _, _, seq, epoch = layout.parse_intent_key(key)
            if not self._committed(seq, epoch):
                try:
                    names = json.loads(self.store.get(key))["files"]
                except NotFound:
                    continue
                for name in names:
                    self.store.delete(name)
                logger.info("removed %d uncommitted file(s) of %s[%d] seq %d epoch %d",
                            len(names), self.topic, self.partition, seq, epoch)
            self.store.delete(key)

    def _committed(self, seq: int, epoch: int) -> bool:
        try:
            entry = Entry.from_json(self.store.get(layout.ledger_key(self.topic, self.partition, seq)))
        except NotFound:
            return False
        return entry.epoch == epoch and entry.kind != "claim"

    def write_intent(self, keys: list[str]) -> None:
        """Record the files about to be uploaded for the next seq, so a crash can be cleaned up."""
        seq = self.head.seq + 1
        body = json.dumps({"files": keys, "writer": writer_id()}).encode()
        self.store.put(layout.intent_key(self.topic, self.partition, seq, self.epoch), body)

    def commit(self, entry: Entry) -> None:
        """Append `entry` (built for seq head+1 and this epoch); FencedError if another owner won."""
        assert entry.seq == self.head.seq + 1 and entry.epoch == self.epoch
        key = layout.ledger_key(self.topic, self.partition, entry.seq)
        try:
            self.store.put(key, entry.to_json(), if_absent=True)
        except PreconditionFailed:
            existing = Entry.from_json(self.store.get(key))
            if existing != entry:  # not our own earlier attempt whose response was lost
                raise FencedError(f"{self.topic}[{self.partition}] seq {entry.seq} taken by epoch "
                                  f"{existing.epoch} ({existing.writer}); this writer (epoch {self.epoch}) "
                                  f"lost the partition") from None
        self.head = entry
        self.store.delete(layout.intent_key(self.topic, self.partition, entry.seq, self.epoch))
