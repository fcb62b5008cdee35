"""Each topic's layout, recorded in the archive as `_layout/topic=T.json`.

A topic's layout decides the directories of its files: the time source (the record timestamp or
`time_field`) and `time_granularity`, and the key partitioning (`key_buckets` for hash,
`key_field` and `key_field_values` for field). `archiver run` records it when it first takes a
topic, with a conditional put, so of two daemons racing to record one topic one record wins and
both check against it; afterwards it refuses a configuration that differs. Readers (`query`,
`ddl`, `catalog sync`, `verify`) take the layout from the record. An archive written before
layouts were recorded has none: its layout is inferred from the directories of its committed
files, and `run` records it once the configuration agrees with them.

The record, version 1:

    {"format": 1, "topic": "orders",
     "time": {"source": "timestamp"} | {"source": "field", "field": "event_time"}, "granularity": "hour",
     "key": {"partitioning": "hash", "buckets": 16}
          | {"partitioning": "field", "field": "country", "values": ["DE", "FR"]}
          | {"partitioning": "none"},
     "recorded_at": "2026-11-24T21:00:00Z"}
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from archiver import layout
from archiver.errors import ConfigError, NotFound, PreconditionFailed, TerminalError, TransientError

logger = logging.getLogger(__name__)

FORMAT = 1
"""The version of the record this code writes; a newer one is refused rather than misread."""

GUIDE = "see README: changing a topic's layout"
_TIME_DIRECTORIES = ("dt", "hour", "minute")
_GRANULARITIES = ("day", "hour", "minute")
_PARTITIONINGS = ("hash", "field", "none")
SETTINGS = ("time_granularity", "time_field", "key_partitioning", "key_buckets", "key_field", "key_field_values")
"""The settings a layout is made of, in the order differences are reported."""


@dataclass(frozen=True)
class TopicLayout:
    """The settings that decide a topic's directories; those that do not apply are None or ().

    Attributes:
        time_granularity: day, hour or minute.
        time_field: The value field that dates a record; None for the record timestamp.
        key_partitioning: hash, field or none.
        key_buckets: The hash bucket count (hash only).
        key_field: The value field of the key directory (field only).
        key_field_values: Its allowed values, sorted (field only).
        inferred: Read from the directories of an archive that has no record: `time_field` is
            unknown, `key_buckets` is the smallest count that makes the buckets present and
            `key_field_values` are the values present.
    """

    time_granularity: str = "hour"
    time_field: str | None = None
    key_partitioning: str = "hash"
    key_buckets: int | None = 16
    key_field: str | None = None
    key_field_values: tuple[str, ...] = ()
    inferred: bool = False

    @classmethod
    def of(cls, settings) -> TopicLayout:
        """The layout a topic's settings (`config.TopicSettings`) give."""
        by_field = settings.key_partitioning == "field"
        return cls(settings.time_granularity, settings.time_field or None, settings.key_partitioning,
                   settings.key_buckets if settings.key_partitioning == "hash" else None,
                   settings.key_field if by_field else None,
                   tuple(sorted(set(settings.key_field_values))) if by_field else ())

    def directories(self) -> list[str]:
        """The directory names under `topic=T/`, in path order."""
        names = list(_TIME_DIRECTORIES[:_GRANULARITIES.index(self.time_granularity) + 1])
        if self.key_partitioning == "hash":
            names.append("key_bucket")
        elif self.key_partitioning == "field":
            names.append(self.key_field)
        return names

    def to_json(self, topic: str, now: float | None = None) -> bytes:
        source = {"source": "field", "field": self.time_field} if self.time_field else {"source": "timestamp"}
        key: dict = {"partitioning": self.key_partitioning}
        if self.key_partitioning == "hash":
            key["buckets"] = self.key_buckets
        elif self.key_partitioning == "field":
            key |= {"field": self.key_field, "values": list(self.key_field_values)}
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if now is None else now))
        doc = {"format": FORMAT, "topic": topic, "time": source, "granularity": self.time_granularity, "key": key,
               "recorded_at": stamp}
        return json.dumps(doc, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> TopicLayout:
        """The inverse of `to_json`; ValueError for anything else, TerminalError for a newer format."""
        doc = json.loads(data)
        if not isinstance(doc, dict) or not isinstance(doc.get("format"), int):
            raise ValueError("no format version")  # noqa: TRY004 - callers treat any malformed record alike
        if doc["format"] > FORMAT:
            raise TerminalError(f"layout record format {doc['format']} is newer than this archiver reads "
                                f"({FORMAT}): upgrade archiver")
        source, key = doc["time"], doc["key"]
        by_field = key["partitioning"] == "field"
        parsed = cls(doc["granularity"], source["field"] if source["source"] == "field" else None,
                     key["partitioning"], int(key["buckets"]) if key["partitioning"] == "hash" else None,
                     str(key["field"]) if by_field else None,
                     tuple(sorted(map(str, key["values"]))) if by_field else ())
        if parsed.time_granularity not in _GRANULARITIES or parsed.key_partitioning not in _PARTITIONINGS:
            raise ValueError(f"unknown granularity or partitioning in {doc}")
        return parsed

    def difference(self, configured: TopicLayout) -> tuple[str, object, object] | None:
        """The first setting (in `SETTINGS` order) whose value differs: (name, ours, configured)."""
        for name in SETTINGS:
            ours, theirs = getattr(self, name), getattr(configured, name)
            if ours != theirs:
                return name, ours, theirs
        return None


def _directories(key: str) -> dict[str, str]:
    """The `k=v` directories of a data key between `topic=T/` and the file name (any file name:
    verify meets keys archiver did not write)."""
    return dict(part.split("=", 1) for part in key.split("/")[1:-1] if "=" in part)


def show(name: str, value: object) -> str:
    """A setting's value as the configuration spells it."""
    if value is None:
        return "unset (the record timestamp)" if name == "time_field" else "unset"
    if isinstance(value, tuple):
        return json.dumps(list(value))
    return str(value)


def refusal(where: str, topic: str, name: str, written: str, configured: str) -> ConfigError:
    """The one line `run` gives for a configuration that does not match the archive."""
    return ConfigError(f"{where}.{name}: the archive of {topic} was written with {written}, "
                       f"the configuration says {configured} ({GUIDE})")


# --- reading, inferring and recording -----------------------------------------------------------


def read(store, topic: str) -> TopicLayout | None:
    """The recorded layout of a topic; None when the archive has no record of it."""
    key = layout.layout_key(topic)
    try:
        data = store.get(key)
    except NotFound:
        return None
    try:
        return TopicLayout.from_json(data)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise TerminalError(f"{key} is not a layout record archiver wrote: {e}") from None


def infer(topic: str, keys: Iterable[str]) -> TopicLayout | None:
    """The layout the directories of a topic's data keys show; None without keys.

    Raises:
        ConfigError: the files lie under different directory names (two layouts mixed).
    """
    names: list[str] | None = None
    seen: dict[str, set[str]] = {}
    for key in keys:
        dirs = _directories(key)
        if names is None:
            names = list(dirs)
        elif list(dirs) != names:
            raise ConfigError(f"topic {topic!r} mixes layouts: files under {'/'.join(names)} and under "
                              f"{'/'.join(dirs)} directories ({GUIDE})")
        for name, value in dirs.items():
            seen.setdefault(name, set()).add(value)
    if names is None:
        return None
    times = [n for n in names if n in _TIME_DIRECTORIES]
    rest = [n for n in names if n not in _TIME_DIRECTORIES]
    granularity = _GRANULARITIES[len(times) - 1]
    if not rest:
        return TopicLayout(granularity, None, "none", None, inferred=True)
    if rest == ["key_bucket"]:
        return TopicLayout(granularity, None, "hash", _fewest_buckets(seen["key_bucket"]), inferred=True)
    values = tuple(sorted(seen[rest[0]] - {"_other", "_null"}))
    return TopicLayout(granularity, None, "field", None, rest[0], values, inferred=True)


def _fewest_buckets(buckets: set[str]) -> int:
    """The smallest bucket count that makes these directories (`layout.bucket_path` pads to the
    digits of count - 1)."""
    width = max(len(b) for b in buckets)
    return max(max(int(b) for b in buckets) + 1, 10 ** (width - 1) + 1 if width > 1 else 1)


def of_archive(archive, topic: str, files: list | None = None) -> TopicLayout:
    """The layout readers use: the record, else inferred from the committed files' directories.

    Raises:
        ConfigError: no record and no committed file, or files of mixed layouts.
    """
    recorded = read(archive.store, topic)
    if recorded is not None:
        return recorded
    files = list(archive.files(topic)) if files is None else files
    inferred = infer(topic, (f.key for f in files))
    if inferred is None:
        raise ConfigError(f"topic {topic!r} has no committed files in {archive.store.url}")
    logger.info("%s has no layout record (archived before layouts were recorded): inferred from its directories",
                topic)
    return inferred


def check_keys(topic: str, where: str, configured: TopicLayout, keys: Iterable[str]) -> None:
    """Refuse a configuration under which `archiver run` would write other directories than the
    committed files of an archive without a record lie in.

    Only what directories show can be checked: `time_field`, and field values added to the list,
    cannot be.
    """
    want = configured.directories()
    for key in keys:
        dirs = _directories(key)
        if list(dirs) != want:
            raise _names_refusal(topic, where, configured, list(dirs))
        for name, value in dirs.items():
            if not _covers(configured, name, value):
                if name == "key_bucket":
                    raise refusal(where, topic, "key_buckets", f"a count that makes key_bucket={value}",
                                  show("key_buckets", configured.key_buckets))
                raise refusal(where, topic, "key_field_values", f"values that include {value!r}",
                              show("key_field_values", configured.key_field_values))


def _names_refusal(topic: str, where: str, configured: TopicLayout, names: list[str]) -> ConfigError:
    """Directory names differ: so do the granularity, the key partitioning or the key field."""
    written = infer(topic, [layout.DataKey(topic, 0, 0, 0, "/".join(f"{n}=0" for n in names)).format()])
    for name in ("time_granularity", "key_partitioning", "key_field"):
        ours, theirs = getattr(written, name), getattr(configured, name)
        if ours != theirs:
            return refusal(where, topic, name, show(name, ours), show(name, theirs))
    raise AssertionError(f"directories {names} and {configured} agree")


def _covers(configured: TopicLayout, name: str, value: str) -> bool:
    if name == "key_bucket":
        width = len(str(configured.key_buckets - 1))
        return len(value) == width and value.isdigit() and int(value) < configured.key_buckets
    if name == configured.key_field and name not in _TIME_DIRECTORIES:
        return value in configured.key_field_values or value in ("_other", "_null")
    return True


def misplaced(recorded: TopicLayout | None, keys: Iterable[str], reference: list[str]) -> Iterator[tuple[str, str]]:
    """(key, why) of the data keys outside the recorded layout. Without a record, those whose
    directory names differ from `reference`, which the first key fills when empty (pass the same
    list for every partition of a topic)."""
    for key in keys:
        dirs = _directories(key)
        if not reference:
            reference.extend(recorded.directories() if recorded else dirs)
        if list(dirs) != reference:
            yield key, f"under {'/'.join(dirs)} directories, where the topic's layout gives {'/'.join(reference)}"
        elif recorded is not None:
            wrong = [f"{n}={v}" for n, v in dirs.items() if not _covers(recorded, n, v)]
            if wrong:
                yield key, f"under {wrong[0]}, which the topic's recorded layout does not make"


def record(store, topic: str, configured: TopicLayout) -> TopicLayout:
    """Write the record unless one exists (If-None-Match: *); the record in effect afterwards."""
    try:
        store.put(layout.layout_key(topic), configured.to_json(topic), if_absent=True)
        logger.info("recorded the layout of %s", topic)
        return configured
    except PreconditionFailed:
        winner = read(store, topic)  # another daemon recorded it first
        if winner is None:
            raise TransientError(f"the layout record of {topic} exists but cannot be read yet") from None
        return winner


class LayoutGuard:
    """What `archiver run` checks before it writes a topic: the configured layout is the one the
    archive records (recording it the first time). Each topic is checked once per process."""

    def __init__(self, store, settings):
        """`settings` is the `config.RunSettings` of the run."""
        self.store = store
        self.settings = settings
        self._checked: set[str] = set()

    def check(self, topic: str) -> None:
        """Raises ConfigError (exit 2) naming the first setting that differs from the archive."""
        if topic in self._checked:
            return
        configured = TopicLayout.of(self.settings.for_topic(topic))
        where = f'topics."{topic}"' if topic in self.settings.overrides else "defaults"
        recorded = read(self.store, topic)
        if recorded is None:
            from archiver.archive import Archive

            check_keys(topic, where, configured, (f.key for f in Archive(self.store).files(topic)))
            recorded = record(self.store, topic, configured)
        differing = recorded.difference(configured)
        if differing is not None:
            name, written, wanted = differing
            raise refusal(where, topic, name, show(name, written), show(name, wanted))
        self._checked.add(topic)
