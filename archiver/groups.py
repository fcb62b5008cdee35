"""Compaction across Kafka partitions: one merged file per target size in a closed directory,
whatever the partition count, with each partition's lineage exact.

A directory holds files of every Kafka partition that wrote to it. Merged per partition, it
keeps at least one file per partition; merged across them, it holds ceil(bytes / target) files.
Each merged file holds every member partition's rows in row groups of their own (partition after
partition, each in offset order), and each partition's ledger names the file with its row groups,
so replay, verify and `query` still read partition P's rows and nothing else.

One merge touches several ledgers, so it commits in two phases through one decision object:

    intent   = _intents/topic=T/groups/<group>.json: members, directories (uploads are named
               <dir>/...-g<group>.parquet, so a cleaner finds them; rewritten every 30 s)
    upload     the merged files
    prepare    in each member's ledger (in partition order), a compaction entry with `group`,
               put with If-None-Match: * at head + 1 exactly as a compaction of one partition; a
               member whose run is no longer live, or is claimed by another undecided group, aborts
    decide     _decisions/topic=T/<group>.json = committed, with If-None-Match: *
    clean up   delete the intent

A group entry is in force only once its decision says committed, and readers look the decision up
(`ledger.Decisions`): every member's ledger flips at the same instant, the one conditional PUT of
the decision. A crash before it leaves prepared entries that no reader applies; once the intent
is `stale_after_s` old (a running merge rewrites it every 30 s), a cleaner decides aborted (If-None-Match: * again, so a slow compactor and
the cleaner cannot both win) and deletes the uploads. Checkpoints fold in decided groups only, and
the Iceberg publisher commits a group's members in one table commit, once the decision says
committed and it has read every member's entry (see `tables.Publisher.changes`).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from archiver import compact, layout
from archiver.errors import NotFound
from archiver.ledger import (
    ABORTED,
    COMMITTED,
    Decisions,
    Entry,
    FileEntry,
    LedgerView,
    PartitionLedger,
    append,
    writer_id,
)
from archiver.store import ObjectStore

logger = logging.getLogger(__name__)


@dataclass
class Member:
    """One partition's share of a merge across partitions."""

    partition: int
    head: Entry  # its ledger head when planned
    run: list[Entry]  # the live entries the compaction entry replaces
    merge: dict[str, list[FileEntry]]  # directory -> its files to merge, in offset order


@dataclass
class GroupReport(compact.Counts):
    """What one compaction across partitions did."""

    topic: str
    group: str = ""
    members: list[int] = field(default_factory=list)
    outcome: str | None = None  # committed, aborted (lost a race), None (dry run)


def plan(views: dict[int, LedgerView], settings: compact.CompactSettings, now: float) -> list[Member]:
    """The members of a merge across partitions: the closed directories holding at least
    `min_files` small files of two or more partitions, and per partition the run of live entries
    holding them. Empty when there is nothing to merge across partitions (what is left of one
    partition only is `compact_partition`'s).

    A partition with an undecided group entry sits out (that group may still take its files), and
    a file already shared by several partitions is merged only together with all of them.
    """
    loose = dataclasses.replace(settings, min_files=1)
    candidates: dict[int, tuple[list[Entry], dict[str, list[FileEntry]]]] = {}
    for partition, view in sorted(views.items()):
        if view.head is None or view.undecided:
            continue
        found = compact.plan_run(view.live, loose, now, shared=True)
        if found is not None:
            candidates[partition] = found
    holders: dict[str, set[int]] = collections.defaultdict(set)
    objects: dict[str, set[str]] = collections.defaultdict(set)  # a shared file is one object of several partitions
    for partition, (_, merge) in candidates.items():
        for directory, files in merge.items():
            holders[directory].add(partition)
            objects[directory].update(f.key for f in files)
    chosen = {d for d, parts in holders.items() if len(parts) >= 2 and len(objects[d]) >= settings.min_files
              and all(set(f.partitions or [p]) <= parts for p in parts for f in candidates[p][1][d])}
    members = []
    for partition, (run, merge) in candidates.items():
        mine = {d: files for d, files in merge.items() if d in chosen}
        if not mine:
            continue
        keys = {f.key for files in mine.values() for f in files}
        holds = [i for i, e in enumerate(run) if any(f.key in keys for f in e.files)]
        members.append(Member(partition, views[partition].head, run[holds[0]:holds[-1] + 1], mine))
    return members if len(members) >= 2 else []


def compact_across(store: ObjectStore, topic: str, partitions: Iterable[int], settings: compact.CompactSettings,
                   now: Callable[[], float] = time.time, dry_run: bool = False) -> GroupReport | None:
    """Clean up crashed merges of the topic, then merge across `partitions` once; None when there
    was nothing to do."""
    partitions = list(partitions)
    if len(partitions) < 2:
        return None
    started = time.monotonic()
    removed = 0 if dry_run else remove_stale(store, topic, settings, now())
    views = {p: PartitionLedger(store, topic, p).view() for p in partitions}
    members = plan(views, settings, now())
    if not members:
        return GroupReport(topic, removed_stale=removed, seconds=time.monotonic() - started) if removed else None
    report = GroupReport(topic, members=[m.partition for m in members], removed_stale=removed)
    report.directories = len({d for m in members for d in m.merge})
    report.files_in = len({f.key for m in members for files in m.merge.values() for f in files})
    report.bytes_in = sum(f.own_bytes for m in members for files in m.merge.values() for f in files)
    report.replaced_entries = sum(len(m.run) for m in members)
    if not dry_run:
        merge = _Merge(store, topic, members, settings, now)
        report.group = merge.group
        report.outcome, outputs = merge.execute()
        if report.outcome == COMMITTED:
            report.files_out, report.bytes_out = len(outputs), sum(outputs.values())
    report.seconds = time.monotonic() - started
    return report


HEARTBEAT_S = 30.0
"""A running merge rewrites its intent this often (its uploads are found by name, see `uploads_of`)."""


class _Merge:
    """One merge across partitions: upload under the group's intent, prepare, decide."""

    def __init__(self, store: ObjectStore, topic: str, members: list[Member], settings: compact.CompactSettings,
                 now: Callable[[], float]):
        self.store, self.topic, self.members, self.settings, self.now = store, topic, members, settings, now
        self.group = secrets.token_hex(8)
        self.partitions = [m.partition for m in members]
        directories = sorted({d for m in members for d in m.merge})
        self.uploads = compact.Uploads(store, layout.group_intent_key(topic, self.group), settings, now,
                                        heartbeat_s=HEARTBEAT_S, members=self.partitions, directories=directories)
        self.decisions = Decisions(store, topic)

    def execute(self) -> tuple[str, dict[str, int]]:
        """(committed or aborted, the merged files' sizes by key)."""
        self.uploads.write_intent()  # names the group before anything it uploads
        files: dict[int, list[FileEntry]] = collections.defaultdict(list)
        sizes: dict[str, int] = {}
        try:
            for directory in sorted({d for m in self.members for d in m.merge}):
                for output in self._merge_directory(directory):
                    for partition, entry in output.items():
                        files[partition].append(entry)
                        sizes[entry.key] = entry.bytes
        finally:
            self.uploads.finish()
        for member in self.members:
            if self._prepare(member, files[member.partition]) is None:
                outcome = self.decisions.decide(self.group, ABORTED, self.partitions)
                assert outcome == ABORTED, "only this compaction commits its group"
                self.uploads.discard()
                return ABORTED, {}
        outcome = self.decisions.decide(self.group, COMMITTED, self.partitions)
        if outcome != COMMITTED:  # judged stale and aborted by a cleaner meanwhile
            logger.warning("merge %s of %s across partitions %s was aborted before it committed", self.group,
                           self.topic, self.partitions)
            self.uploads.discard()
            return outcome, {}
        self.store.delete(self.uploads.intent)
        logger.info("compacted %s across partitions %s: %d file(s) in %d director(y/ies) → %d file(s) (group %s)",
                    self.topic, self.partitions, sum(len(f) for m in self.members for f in m.merge.values()),
                    len({d for m in self.members for d in m.merge}), len(sizes), self.group)
        return COMMITTED, sizes

    def _merge_directory(self, directory: str) -> list[dict[int, FileEntry]]:
        inputs = [(m.partition, f) for m in self.members for f in m.merge.get(directory, [])]
        epochs = {m.partition: m.head.epoch for m in self.members}

        def name(partition: int, f: FileEntry) -> str:
            return layout.DataKey(self.topic, partition, f.first_offset, epochs[partition], directory,
                                  group=self.group).format()

        return compact.merge_files(self.store, inputs, self.settings, name, self.uploads.upload)

    def _prepare(self, member: Member, merged: list[FileEntry]) -> Entry | None:
        """Put the member's group entry at the head of its ledger; None if its run is taken."""
        ledger = PartitionLedger(self.store, self.topic, member.partition)
        merged_keys = {f.key for files in member.merge.values() for f in files}
        carried = [f for e in member.run for f in e.files if f.key not in merged_keys]
        head, run = member.head, member.run
        entry = Entry(head.seq + 1, head.epoch, "compaction", run[0].start, run[-1].end,
                      sorted(merged + carried, key=lambda f: (f.first_offset, f.key)),
                      records=sum(e.records for e in run), dead_lettered=sum(e.dead_lettered for e in run),
                      replaces=[e.seq for e in run], writer=writer_id(), frontier=head.next_offset,
                      lost=[r for e in run for r in e.lost], group=self.group)
        def after_head(entry: Entry, _existing: Entry) -> Entry | None:
            view = ledger.view()
            if not compact.still_live(view, run):
                logger.warning("merge %s of %s lost partition %d's run to another compaction; aborting",
                               self.group, self.topic, member.partition)
                return None
            return dataclasses.replace(entry, seq=view.head.seq + 1, epoch=view.head.epoch,
                                       frontier=view.head.next_offset, committed_at=self.now())

        return append(self.store, self.topic, member.partition, dataclasses.replace(entry, committed_at=self.now()),
                      after_head)


def remove_stale(store: ObjectStore, topic: str, settings: compact.CompactSettings, now: float) -> int:
    """Finish off crashed merges of a topic: abort a group whose intent is `stale_after_s` old and
    undecided, delete the uploads of aborted groups; returns the files deleted."""
    removed = 0
    decisions = Decisions(store, topic)
    prefix = layout.group_intent_prefix(topic)
    for key in list(store.list(prefix)):
        group = key[len(prefix):].removesuffix(".json")
        try:
            body = json.loads(store.get(key))
        except NotFound:
            continue
        outcome = decisions.outcome(group)
        if outcome is None:
            if now - body.get("updated_at", body.get("started_at", 0)) < settings.stale_after_s:
                continue  # still running, as far as anyone can tell
            outcome = decisions.decide(group, ABORTED, body.get("members", []))
        if outcome == ABORTED:
            doomed = uploads_of(store, topic, group, body)
            store.delete_many(doomed)
            removed += len(doomed)
            logger.info("removed %d file(s) of an unfinished merge of %s across partitions (group %s)",
                        len(doomed), topic, group)
        store.delete(key)
    return removed


def uploads_of(store: ObjectStore, topic: str, group: str, intent: dict) -> list[str]:
    """Every file a merge uploaded: those its intent names, and those in its directories that
    carry its group id (uploaded after the intent's last rewrite)."""
    found = set(intent.get("files", []))
    suffix = f"-g{group}.parquet"
    for directory in intent.get("directories", []):
        found.update(k for k in store.list(f"topic={topic}/{directory}/") if k.endswith(suffix))
    return sorted(found)
