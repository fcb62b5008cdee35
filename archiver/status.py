"""`archiver status`: how far the archive is per partition, and whether Kafka lost records first.

The archive's frontier of a partition is the next offset it will archive: the end of its last
live ledger entry; for a partition never archived, the consumer group's committed offset (where
`run` would start) or else 0 (`run` starts at the earliest offset, so it owes the whole log).
Records are lost when Kafka's log-start offset passed the frontier: retention (or
delete-records) removed offsets [frontier, log-start) before they were archived. That, a
frontier beyond Kafka's end offset (the topic was recreated: `run` would skip new records) and a
hole between ledger ranges are alarms; `status` exits 1 on any, for cron and monitoring.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from archiver import layout
from archiver.archive import Archive
from archiver.config import RunSettings, load_run_settings
from archiver.errors import ConfigError
from archiver.ledger import Entry, PartitionLedger
from archiver.source import kafka as source_kafka
from archiver.source.kafka import KafkaOffsets


@dataclass
class PartitionStatus:
    """The archive and Kafka side by side for one topic-partition."""

    topic: str
    partition: int
    ranges: list[tuple[int, int]] = field(default_factory=list)  # archived runs [start, end)
    records: int = 0
    files: int = 0
    bytes: int = 0
    dead_lettered: int = 0
    last_commit_at: float | None = None
    frontier: int = 0
    kafka: KafkaOffsets | None = None
    lag: int | None = None
    lost: tuple[int, int] | None = None  # offsets first..last deleted before they were archived
    alarms: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def archived(self) -> bool:
        return bool(self.ranges)

    def to_dict(self) -> dict:
        k = self.kafka
        return {
            "topic": self.topic, "partition": self.partition, "archived": self.archived,
            "ranges": [{"start": s, "end": e} for s, e in self.ranges],
            "records": self.records, "files": self.files, "bytes": self.bytes, "dead_lettered": self.dead_lettered,
            "last_commit_at": _iso(self.last_commit_at), "frontier": self.frontier,
            "group_offset": k.committed if k else None, "log_start": k.log_start if k else None,
            "end_offset": k.end if k else None, "lag": self.lag,
            "lost": {"first": self.lost[0], "last": self.lost[1], "count": self.lost[1] - self.lost[0] + 1}
            if self.lost else None,
            "alarms": self.alarms, "notes": self.notes,
        }


@dataclass
class StatusReport:
    group_id: str
    partitions: list[PartitionStatus]

    @property
    def alarms(self) -> list[str]:
        return [f"{p.topic}[{p.partition}] {a}" for p in self.partitions for a in p.alarms]

    @property
    def healthy(self) -> bool:
        return not self.alarms

    @property
    def never_archived(self) -> list[PartitionStatus]:
        return [p for p in self.partitions if not p.archived]

    def to_dict(self) -> dict:
        return {"group_id": self.group_id, "healthy": self.healthy, "alarms": self.alarms,
                "never_archived": [{"topic": p.topic, "partition": p.partition} for p in self.never_archived],
                "partitions": [p.to_dict() for p in self.partitions]}


# --- the archive side (pure) -----------------------------------------------------------------


def archived_ranges(live: list[Entry]) -> list[tuple[int, int]]:
    """Contiguous runs [start, end) of live entries (in offset order); more than one means a hole."""
    runs: list[tuple[int, int]] = []
    for e in live:
        if e.start is None or e.end is None:
            continue
        if runs and e.start <= runs[-1][1]:
            runs[-1] = (runs[-1][0], max(runs[-1][1], e.end))
        else:
            runs.append((e.start, e.end))
    return runs


def partition_status(topic: str, partition: int, live: list[Entry], last_commit_at: float | None,
                     kafka: KafkaOffsets | None) -> PartitionStatus:
    """Compare one partition's live ledger entries with Kafka's offsets; alarms as defined in the module doc."""
    s = PartitionStatus(topic, partition, archived_ranges(live), kafka=kafka,
                        records=sum(e.records for e in live), files=sum(len(e.files) for e in live),
                        bytes=sum(f.own_bytes for e in live for f in e.files),
                        dead_lettered=sum(e.dead_lettered for e in live), last_commit_at=last_commit_at)
    for (_, end), (start, _) in zip(s.ranges, s.ranges[1:]):
        s.alarms.append(f"offsets {end}..{start - 1} are in no ledger entry (run archiver verify)")
    for entry in live:
        for first, end in entry.lost:
            s.alarms.append(f"records lost: offsets {first}..{end - 1} ({end - first}) were deleted from Kafka "
                            f"before they were archived (recorded by the commit at seq {entry.seq})")
    if s.archived:
        s.frontier = s.ranges[-1][1]
    else:
        s.frontier = kafka.committed if kafka and kafka.committed is not None else 0
        s.notes.append("never archived")
    if kafka is not None:
        _compare_with_kafka(s, kafka)
    return s


def _compare_with_kafka(s: PartitionStatus, kafka: KafkaOffsets) -> None:
    if kafka.log_start > s.frontier:
        s.lost = (s.frontier, kafka.log_start - 1)
        count = kafka.log_start - s.frontier
        s.alarms.append(f"records lost: offsets {s.frontier}..{kafka.log_start - 1} ({count}) were deleted from "
                        f"Kafka (log-start offset {kafka.log_start}) before they were archived")
    if s.frontier > kafka.end:
        s.alarms.append(f"archive frontier {s.frontier} is beyond Kafka's end offset {kafka.end} (topic "
                        f"recreated?): run would skip new records below {s.frontier}")
    s.lag = max(0, kafka.end - max(s.frontier, kafka.log_start))


# --- Kafka (I/O) -------------------------------------------------------------------------------


# --- putting it together --------------------------------------------------------------------


def load_settings(config_path: str | None, flags: Mapping[str, object],
                  env: Mapping[str, str] = os.environ) -> RunSettings:
    """`archiver run`'s settings from the same file, environment and flags.

    status reads no schema and may run where no topics are configured, so it requires neither.
    """
    return load_run_settings(config_path, env, flags, needs=frozenset({"kafka", "archive"}))


def select_topics(requested: Iterable[str] | None, settings: RunSettings, archived: Iterable[str],
                  in_kafka: Mapping[str, int]) -> list[str]:
    """The named topics, or else every archived topic plus those `run` is configured to archive."""
    if requested:
        topics = [layout.check_topic(t) for t in requested]
        for t in topics:
            if t not in in_kafka and t not in archived:
                raise ConfigError(f"topic {t!r} is neither in the archive at {settings.archive_url} nor in Kafka "
                                  f"at {settings.kafka.bootstrap_servers}")
        return topics
    chosen = set(archived) | {t for t in settings.topics if t in in_kafka}
    if settings.topic_pattern:
        pattern = re.compile("^" + settings.topic_pattern.removeprefix("^"))
        chosen |= {t for t in in_kafka if pattern.match(t) and not t.startswith("__")}
    return sorted(chosen)


def status(settings: RunSettings, archive: Archive, requested: Iterable[str] | None = None) -> StatusReport:
    """Every partition of the selected topics: those in the archive and those in Kafka.

    Raises ConfigError for a URL with no archive under it: every partition would read as never
    archived, and a mistyped prefix as a healthy archive.
    """
    archive.require()
    in_kafka = source_kafka.list_topics(settings.kafka)
    topics = select_topics(requested, settings, archive.topics(), in_kafka)
    offsets = source_kafka.group_offsets(settings.kafka, settings.group_id, {t: in_kafka[t] for t in topics if t in in_kafka})
    report = StatusReport(settings.group_id, [])
    for topic in topics:
        for partition in sorted(set(archive.partitions(topic)) | set(range(in_kafka.get(topic, 0)))):
            view = PartitionLedger(archive.store, topic, partition).view()
            s = partition_status(topic, partition, view.live, view.last_commit_at, offsets.get((topic, partition)))
            if (topic, partition) not in offsets:
                s.notes.append("topic not in Kafka" if topic not in in_kafka else "partition not in Kafka")
            report.partitions.append(s)
    return report


# --- rendering ----------------------------------------------------------------------------------


_COLUMNS = ("TOPIC", "PART", "ARCHIVED", "RECORDS", "FILES", "BYTES", "LAST COMMIT (UTC)", "GROUP OFFSET",
            "LOG START", "END", "LAG", "STATE")


def render_table(report: StatusReport) -> str:
    """A fixed-width table, then one line per alarm and a summary line."""
    rows = [_COLUMNS] + [_row(p) for p in report.partitions]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines += [f"ALARM {a}" for a in report.alarms]
    lag = sum(p.lag or 0 for p in report.partitions)
    topics = len({p.topic for p in report.partitions})
    lines.append(f"{len(report.partitions)} partition(s) of {topics} topic(s), group {report.group_id!r}: "
                 f"{len(report.never_archived)} never archived, lag {lag:,}, "
                 f"{len(report.alarms)} alarm(s){'' if report.alarms else ' (healthy)'}")
    return "\n".join(lines)


def _row(p: PartitionStatus) -> tuple[str, ...]:
    k = p.kafka
    archived = ",".join(f"{s}..{e - 1}" for s, e in p.ranges) or "-"
    state = "ALARM" if p.alarms else (", ".join(p.notes) or "ok")

    def opt(value: int | None) -> str:
        return "-" if value is None else str(value)

    return (p.topic, str(p.partition), archived, f"{p.records:,}", str(p.files), f"{p.bytes:,}",
            _iso(p.last_commit_at) or "-", opt(k.committed if k else None), opt(k.log_start if k else None),
            opt(k.end if k else None), opt(p.lag), state)


def _iso(epoch_s: float | None) -> str | None:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if epoch_s else None
