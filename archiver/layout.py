"""Object keys of the archive. Every `format_*` has an exact inverse `parse_*`.

    topic=T/dt=YYYY-MM-DD/hour=HH/key_bucket=NN/T+P+<first offset:020d>+<epoch:010d>.parquet
    topic=T/.../T+P+<first offset:020d>+<epoch:010d>-g<group>.parquet   merged across partitions
    _ledger/topic=T/partition=P/<seq:020d>.json
    _intents/topic=T/partition=P/<seq:020d>-<epoch:010d>.json
    _layout/topic=T.json
    _decisions/topic=T/<group>.json   outcome of a compaction across partitions

Partition values are computed from bounded inputs only (a time bucket, a hash bucket, or a
sanitised value from an allow-list), so nothing a producer sends can create a path outside the
prefix or more key partitions than configured.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum

from archiver.errors import ConfigError

_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class Granularity(Enum):
    """Time partitioning: the directories a record's UTC timestamp selects."""

    DAY = "day"
    HOUR = "hour"
    MINUTE = "minute"

    @property
    def millis(self) -> int:
        return {"day": 86_400_000, "hour": 3_600_000, "minute": 60_000}[self.value]


def check_topic(topic: str) -> str:
    """Kafka's own topic rule; it also keeps topic names safe as path segments."""
    if not _TOPIC.match(topic) or topic in (".", ".."):
        raise ConfigError(f"topic name {topic!r} is not a valid Kafka topic name")
    return topic


def time_bucket(timestamp_ms: int, granularity: Granularity) -> int:
    """The start (epoch ms) of the time partition that holds `timestamp_ms`."""
    return timestamp_ms - timestamp_ms % granularity.millis


def time_path(bucket_ms: int, granularity: Granularity) -> str:
    """`dt=YYYY-MM-DD[/hour=HH[/minute=MM]]` for a time bucket start."""
    t = datetime.fromtimestamp(bucket_ms / 1000, UTC)
    path = f"dt={t:%Y-%m-%d}"
    if granularity in (Granularity.HOUR, Granularity.MINUTE):
        path += f"/hour={t:%H}"
    if granularity is Granularity.MINUTE:
        path += f"/minute={t:%M}"
    return path


def key_bucket(key: bytes | None, buckets: int) -> int:
    """The hash bucket of a record key: CRC-32 of the key bytes modulo `buckets`; null keys → 0."""
    return zlib.crc32(key) % buckets if key is not None else 0


def bucket_path(bucket: int, buckets: int) -> str:
    return f"key_bucket={bucket:0{len(str(buckets - 1))}d}"


def field_value_path(field: str, value: object, allowed: frozenset[str]) -> str:
    """`field=value` for a low-cardinality value field; values outside `allowed` become `_other`."""
    if value is None:
        text = "_null"
    else:
        text = str(value)
        if text not in allowed or not _SAFE_VALUE.match(text):
            text = "_other"
    return f"{field}={text}"


@dataclass(frozen=True)
class DataKey:
    """Where one Parquet file lives: its partition directories and the offsets it starts at.

    A compacted file also names the ledger seq of its compaction, so it never collides with the
    file of a commit that starts at the same offset.
    """

    topic: str
    partition: int
    first_offset: int
    epoch: int
    directories: str  # e.g. "dt=2026-11-24/hour=21/key_bucket=07"
    compaction: int | None = None  # the compaction's ledger seq
    group: str | None = None
    """A compaction's random id: two compactions that planned the same seq never name a file alike.
    A merge across partitions: its group id (partition and offset are those of its first row)."""

    def format(self) -> str:
        suffix = "" if self.compaction is None else f"-c{self.compaction:020d}"
        suffix += "" if self.group is None else f"-g{self.group}"
        return (f"topic={self.topic}/{self.directories}/"
                f"{self.topic}+{self.partition}+{self.first_offset:020d}+{self.epoch:010d}{suffix}.parquet")

    def partition_values(self) -> dict[str, str]:
        return dict(part.split("=", 1) for part in self.directories.split("/"))


_DATA_KEY = re.compile(r"^topic=(?P<topic>[^/]+)/(?P<dirs>(?:[^/=]+=[^/]+/)+)"
                       r"(?P=topic)\+(?P<partition>\d+)\+(?P<first>\d{20})\+(?P<epoch>\d{10})"
                       r"(?:-c(?P<compaction>\d{20}))?(?:-g(?P<group>[0-9a-f]{16}))?\.parquet$")


def parse_data_key(key: str) -> DataKey:
    """The inverse of `DataKey.format`; ValueError for keys archiver did not write."""
    m = _DATA_KEY.match(key)
    if not m:
        raise ValueError(f"not an archive data key: {key!r}")
    return DataKey(m["topic"], int(m["partition"]), int(m["first"]), int(m["epoch"]), m["dirs"].rstrip("/"),
                   int(m["compaction"]) if m["compaction"] else None, m["group"])


def ledger_prefix(topic: str, partition: int) -> str:
    return f"_ledger/topic={topic}/partition={partition}/"


def ledger_key(topic: str, partition: int, seq: int) -> str:
    return f"{ledger_prefix(topic, partition)}{seq:020d}.json"


def parse_ledger_key(key: str) -> tuple[str, int, int]:
    """(topic, partition, seq) of a ledger key."""
    m = re.match(r"^_ledger/topic=([^/]+)/partition=(\d+)/(\d{20})\.json$", key)
    if not m:
        raise ValueError(f"not a ledger key: {key!r}")
    return m[1], int(m[2]), int(m[3])


def checkpoint_prefix(topic: str, partition: int) -> str:
    return f"_checkpoints/topic={topic}/partition={partition}/"


def checkpoint_key(topic: str, partition: int, seq: int) -> str:
    return f"{checkpoint_prefix(topic, partition)}{seq:020d}.json"


def intent_prefix(topic: str, partition: int) -> str:
    return f"_intents/topic={topic}/partition={partition}/"


def intent_key(topic: str, partition: int, seq: int, epoch: int, kind: str = "commit") -> str:
    suffix = "" if kind == "commit" else f"-{kind}"
    return f"{intent_prefix(topic, partition)}{seq:020d}-{epoch:010d}{suffix}.json"


def parse_intent_key(key: str) -> tuple[str, int, int, int, str]:
    """(topic, partition, seq, epoch, kind) of an intent key; kind is "commit" or "compaction"."""
    m = re.match(r"^_intents/topic=([^/]+)/partition=(\d+)/(\d{20})-(\d{10})(-compaction)?\.json$", key)
    if not m:
        raise ValueError(f"not an intent key: {key!r}")
    return m[1], int(m[2]), int(m[3]), int(m[4]), "compaction" if m[5] else "commit"


def decision_key(topic: str, group: str) -> str:
    """The outcome of a compaction group across partitions (see `ledger.Decisions`)."""
    return f"_decisions/topic={topic}/{group}.json"


def group_intent_prefix(topic: str) -> str:
    return f"_intents/topic={topic}/groups/"


def group_intent_key(topic: str, group: str) -> str:
    """The files a compaction across partitions is about to upload, and its members."""
    return f"{group_intent_prefix(topic)}{group}.json"


def layout_key(topic: str) -> str:
    """Where a topic's layout record lives (see `archiver.layouts`)."""
    return f"_layout/topic={topic}.json"
