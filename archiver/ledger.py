"""The commit protocol: one ledger per Kafka partition, extended by conditional writes.

    _ledger/topic=T/partition=P/<seq>.json   entries, written with If-None-Match: * (one winner per seq)
    _intents/topic=T/partition=P/<seq>-<epoch>.json   files a writer is about to upload for seq

An entry is a claim (a new owner fences older ones by taking the next seq with a higher epoch),
a commit (files covering the contiguous offset range [start, end)) or a compaction (new files
that replace a contiguous run of earlier entries; it takes the next seq with the owner's epoch,
so it races safely with the live writer without fencing it). The archive, not Kafka, is the
source of truth: an owner resumes at the end of the last committed range. See DESIGN.md.

    _intents/topic=T/partition=P/<seq>-<epoch>-compaction.json   files a compactor is about to upload
    _checkpoints/topic=T/partition=P/<seq>.json   the live entries as of seq (see `Checkpoint`)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import time
import typing
from collections.abc import Iterable, Iterator
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
    row_groups: list[int] | None = None
    """A file shared by several Kafka partitions (a merge across partitions): the row groups that
    hold this partition's rows; the other fields but `bytes` and `sha256` (the object's) are this
    partition's. None: the whole file is this partition's."""
    partitions: list[int] | None = None
    """A shared file: every Kafka partition with rows in it."""
    part_bytes: int | None = None
    """A shared file: the compressed bytes of this partition's row groups."""

    @property
    def own_bytes(self) -> int:
        """The bytes of this partition's rows: the whole object unless it is shared."""
        return self.bytes if self.part_bytes is None else self.part_bytes


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
    frontier: int | None = None  # a compaction: the archive's next offset when it was written
    lost: list[list[int]] = field(default_factory=list)  # [from, to) ranges Kafka deleted before they were read
    group: str | None = None
    """A compaction across partitions: the id of its group. The entry takes effect only once the
    group's decision object says committed (see `Decisions`); until then, and forever if the group
    was aborted, readers skip it."""

    @property
    def next_offset(self) -> int | None:
        """Where the archive continues after this entry (a compaction's range may lie behind)."""
        return self.frontier if self.kind == "compaction" else self.end

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Entry:
        return cls.from_dict(json.loads(data))

    @classmethod
    def from_dict(cls, raw: dict) -> Entry:
        return cls(**raw | {"files": [FileEntry(**f) for f in raw.get("files", [])]})

    def to_dict(self) -> dict:
        """The entry as stored; fields at their default for entries of one partition are left out,
        so ledgers stay readable by releases from before compaction across partitions."""
        raw = asdict(self)
        if raw["group"] is None:
            del raw["group"]
        for f in raw["files"]:
            for name in ("row_groups", "partitions", "part_bytes"):
                if f[name] is None:
                    del f[name]
        return raw


COMMITTED, ABORTED = "committed", "aborted"


class Decisions:
    """The outcome of each compaction group across partitions: one object per group, written once
    with If-None-Match: * by whoever decides first (the compactor commits, a cleaner of a stale
    group aborts), so every ledger of the group flips at the same instant.

    Decisions are final, so they are cached for the process; an undecided group is looked up again.
    """

    _final: typing.ClassVar[dict[tuple[str, str, str], dict]] = {}

    def __init__(self, store: ObjectStore, topic: str):
        self.store, self.topic = store, topic

    def read(self, group: str) -> dict | None:
        """The decision ({"outcome": committed | aborted, "members": [partitions], ...}), or None."""
        cached = (self.store.url, self.topic, group)
        if cached in self._final:
            return self._final[cached]
        try:
            decision = json.loads(self.store.get(layout.decision_key(self.topic, group)))
        except NotFound:
            return None
        self._final[cached] = decision
        return decision

    def outcome(self, group: str) -> str | None:
        """committed, aborted, or None (undecided)."""
        decision = self.read(group)
        return decision["outcome"] if decision else None

    def decide(self, group: str, outcome: str, members: list[int]) -> str:
        """Write `outcome` unless a decision exists; the decision in force."""
        decision = {"outcome": outcome, "members": sorted(members), "at": time.time(), "writer": writer_id()}
        try:
            self.store.put(layout.decision_key(self.topic, group), json.dumps(decision).encode(), if_absent=True)
        except PreconditionFailed:
            decided = self.outcome(group)
            if decided is None:  # decisions are never deleted
                raise
            return decided
        self._final[(self.store.url, self.topic, group)] = decision
        return outcome


def effective(entries: Iterable[Entry], decisions: Decisions) -> tuple[list[Entry], list[Entry]]:
    """(the entries in force, the group entries still undecided): a group entry is in force only
    once its group committed; an aborted one never is."""
    kept, undecided = [], []
    for entry in entries:
        if entry.group is None:
            kept.append(entry)
            continue
        outcome = decisions.outcome(entry.group)
        if outcome == COMMITTED:
            kept.append(entry)
        elif outcome is None:
            undecided.append(entry)
    return kept, undecided


def live_of(entries: Iterable[Entry]) -> list[Entry]:
    """The entries in effect among a ledger's entries (in seq order), sorted by offset."""
    live: dict[int, Entry] = {}
    for entry in entries:
        for replaced in entry.replaces:
            live.pop(replaced, None)
        if entry.kind != "claim":
            live[entry.seq] = entry
    return sorted(live.values(), key=lambda e: e.start)


CHECKPOINT_EVERY = 100
"""Seqs between ledger checkpoints: reading a ledger costs the entries since its last checkpoint."""


@dataclass(frozen=True)
class Checkpoint:
    """What entries 1..seq add up to: the live ones, and when the newest commit among them was made.

    Entries never change once written, so a checkpoint is a pure function of them: any writer
    may write it, twice or concurrently, and readers take it instead of entries 1..seq.
    """

    seq: int
    live: list[Entry]
    last_commit_at: float | None

    def to_json(self) -> bytes:
        return json.dumps({"seq": self.seq, "live": [e.to_dict() for e in self.live],
                           "last_commit_at": self.last_commit_at}, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Checkpoint:
        raw = json.loads(data)
        return cls(raw["seq"], [Entry.from_dict(e) for e in raw["live"]], raw["last_commit_at"])

    @classmethod
    def of(cls, seq: int, base: Checkpoint | None, entries: list[Entry]) -> Checkpoint:
        """The checkpoint at `seq` from the one before it and the entries after it, up to `seq`."""
        live = sorted(base.live, key=lambda e: e.seq) if base else []
        commits = [e.committed_at for e in entries if e.kind == "commit"]
        last = commits[-1] if commits else (base.last_commit_at if base else None)
        return cls(seq, live_of(live + entries), last)


@dataclass
class LedgerView:
    """A partition's ledger as readers need it: the live entries, read through the last checkpoint."""

    live: list[Entry]
    last_commit_at: float | None
    head: Entry | None  # the newest entry, any kind; None: no entry
    read: int  # entries read (not counting the checkpoint's)
    undecided: list[Entry] = field(default_factory=list)  # group entries whose group has no decision yet


def writer_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def append(store: ObjectStore, topic: str, partition: int, entry: Entry,
           on_taken: typing.Callable[[Entry, Entry], Entry | None]) -> Entry | None:
    """Put `entry` at its seq of the partition's ledger, If-None-Match: the one write that commits
    anything to a partition. The writer's commits, compactions and the prepared entries of merges
    across partitions all go through here.

    When the seq is taken by this very entry (a put retried after its first attempt succeeded
    and its answer was lost), the entry is committed: never treat one's own commit as lost, or
    the files it names would be deleted. When another entry took it, `on_taken(entry, existing)`
    returns the entry to try instead (at another seq), or None to give up; it may raise.
    Returns the committed entry, or None.
    """
    while True:
        key = layout.ledger_key(topic, partition, entry.seq)
        try:
            store.put(key, entry.to_json(), if_absent=True)
            return entry
        except PreconditionFailed:
            existing = Entry.from_json(store.get(key))
            if existing == entry:
                return entry
            entry = on_taken(entry, existing)
            if entry is None:
                return None


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
        self.checkpointed = 0  # seq of the newest checkpoint this owner knows of
        self.decisions = Decisions(store, topic)

    # --- reading -------------------------------------------------------------------------

    def entries(self, after: int = 0) -> Iterator[Entry]:
        """Every entry in sequence order (those with a seq above `after` only, if given)."""
        start = layout.ledger_key(self.topic, self.partition, after) if after else ""
        for key in self.store.list(layout.ledger_prefix(self.topic, self.partition), start):
            yield Entry.from_json(self.store.get(key))

    def read_head(self) -> Entry | None:
        """The newest entry, or None for a partition never archived; lists the ledger from its
        newest checkpoint on."""
        seqs = self.checkpoint_seqs()
        self.checkpointed = seqs[-1] if seqs else 0
        start = layout.ledger_key(self.topic, self.partition, seqs[-1] - 1) if seqs else ""
        keys = list(self.store.list(layout.ledger_prefix(self.topic, self.partition), start))
        if not keys and start:  # the checkpointed entries were listed away: a broken ledger
            keys = list(self.store.list(layout.ledger_prefix(self.topic, self.partition)))
        return Entry.from_json(self.store.get(keys[-1])) if keys else None

    def checkpoint(self) -> Checkpoint | None:
        """The newest checkpoint, or None."""
        for seq in reversed(self.checkpoint_seqs()):
            try:
                return self.read_checkpoint(seq)
            except NotFound:  # pruned since the listing
                continue
        return None

    def read_checkpoint(self, seq: int) -> Checkpoint:
        return Checkpoint.from_json(self.store.get(layout.checkpoint_key(self.topic, self.partition, seq)))

    def view(self) -> LedgerView:
        """The live entries: the newest checkpoint's, updated with the entries after it."""
        base = self.checkpoint()
        after = list(self.entries(base.seq if base else 0))
        if after:
            head = after[-1]
        else:
            head = Entry.from_json(self.store.get(layout.ledger_key(self.topic, self.partition, base.seq))) if base else None
        kept, undecided = effective(after, self.decisions)
        top = Checkpoint.of(head.seq if head else 0, base, kept)
        return LedgerView(top.live, top.last_commit_at, head, len(after), undecided)

    def checkpoint_due(self) -> bool:
        """Whether the owner should write a checkpoint at its head now."""
        return self.head is not None and self.head.seq - self.checkpointed >= CHECKPOINT_EVERY

    def write_checkpoint(self, seq: int) -> Checkpoint | None:
        """Write the checkpoint at `seq` (an entry this writer knows is committed) and prune older
        ones but the last; None when the entries since the last checkpoint have a hole."""
        base = self.checkpoint()
        if base is not None and base.seq >= seq:
            return base
        entries = [e for e in self.entries(base.seq if base else 0) if e.seq <= seq]
        if [e.seq for e in entries] != list(range((base.seq if base else 0) + 1, seq + 1)):
            logger.warning("%s[%d]: no checkpoint at seq %d, the ledger has a hole before it",
                           self.topic, self.partition, seq)
            return None
        kept, undecided = effective(entries, self.decisions)
        if undecided:  # a checkpoint is final: it may only fold in decided groups
            seq = undecided[0].seq - 1
            if seq <= (base.seq if base else 0):
                return base
            kept = [e for e in kept if e.seq <= seq]
        checkpoint = Checkpoint.of(seq, base, kept)
        self.store.put(layout.checkpoint_key(self.topic, self.partition, seq), checkpoint.to_json())
        for old in self.checkpoint_seqs()[:-2]:
            self.store.delete(layout.checkpoint_key(self.topic, self.partition, old))
        return checkpoint

    def checkpoint_seqs(self) -> list[int]:
        prefix = layout.checkpoint_prefix(self.topic, self.partition)
        return [int(key[len(prefix):].removesuffix(".json")) for key in self.store.list(prefix)]

    def next_offset(self) -> int | None:
        """Where the archive continues: the end of the last committed range, or None if unknown."""
        return self.head.next_offset if self.head else None

    # --- owning ----------------------------------------------------------------------------

    def claim(self) -> Entry:
        """Become the owner: write the next seq as a claim with a higher epoch, then clean up.

        After this succeeds, a previous owner's commit (which needs the same seq) fails.
        """
        while True:
            head = self.read_head()
            seq = head.seq + 1 if head else 1
            epoch = head.epoch + 1 if head else 1
            start = head.next_offset if head else None
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
        """Delete files named by writer intents that no committed entry of their epoch holds.

        Compaction intents are left to compactors (`remove_stale_compactions`): a compaction may
        be uploading right now, and only its age tells a crashed one from a running one.
        """
        for key in list(self.store.list(layout.intent_prefix(self.topic, self.partition))):
            _, _, seq, epoch, kind = layout.parse_intent_key(key)
            if kind != "commit":
                continue
            try:
                names = json.loads(self.store.get(key))["files"]
            except NotFound:
                continue
            if not self.holds(seq, epoch, "commit", names):
                for name in names:
                    self.store.delete(name)
                logger.info("removed %d uncommitted file(s) of %s[%d] seq %d epoch %d",
                            len(names), self.topic, self.partition, seq, epoch)
            self.store.delete(key)

    def holds(self, seq: int, epoch: int, kind: str, names: list[str]) -> bool:
        """Whether the entry an intent for `seq` ended up as names all of `names`.

        A writer whose seq was taken by a compaction commits at the next free seq with the same
        epoch, keeping its first intent: so for a commit, compactions are stepped over and the
        first other entry decides. A compactor that lost its seq retries later with any epoch:
        every later entry is searched.
        """
        wanted = set(names)
        while True:
            try:
                entry = Entry.from_json(self.store.get(layout.ledger_key(self.topic, self.partition, seq)))
            except NotFound:
                return False
            if entry.kind == kind and wanted <= {f.key for f in entry.files}:
                return True
            if kind == "commit" and entry.kind != "compaction":
                return False
            seq += 1

    def write_intent(self, keys: list[str]) -> None:
        """Record the files about to be uploaded for the next seq, so a crash can be cleaned up."""
        seq = self.head.seq + 1
        body = json.dumps({"files": keys, "writer": writer_id()}).encode()
        self.store.put(layout.intent_key(self.topic, self.partition, seq, self.epoch), body)

    def commit(self, entry: Entry) -> Entry:
        """Append `entry` (built for seq head+1 and this epoch); returns it as committed.

        A compaction that took the seq meanwhile is stepped over (the entry moves to the next
        seq); any other entry there means another owner won: FencedError.
        """
        assert entry.seq == self.head.seq + 1 and entry.epoch == self.epoch
        intent = layout.intent_key(self.topic, self.partition, entry.seq, self.epoch)

        def step_over_compactions(entry: Entry, existing: Entry) -> Entry:
            if existing.kind != "compaction" or existing.epoch != self.epoch:
                raise FencedError(f"{self.topic}[{self.partition}] seq {entry.seq} taken by epoch "
                                  f"{existing.epoch} ({existing.writer}); this writer (epoch {self.epoch}) "
                                  "lost the partition")
            logger.info("%s[%d] seq %d taken by a compaction; committing at seq %d",
                        self.topic, self.partition, entry.seq, entry.seq + 1)
            return dataclasses.replace(entry, seq=entry.seq + 1)

        entry = append(self.store, self.topic, self.partition, entry, step_over_compactions)
        self.head = entry
        self.store.delete(intent)
        return entry
