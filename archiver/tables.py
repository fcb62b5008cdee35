"""Apache Iceberg tables over the archive: the ledger publishes what it committed, each file once.

Each archived topic is also an Iceberg table (format v2) whose data files are the archive's own
Parquet files, registered in place and never rewritten. Publishing turns the ledger entries
committed since the table's last snapshot into one table commit:

    publish(topic):
        repeat until committed:
            table     = catalog.load(topic)                   # or create it from a file's schema
            published = table.current_snapshot().summary["archiver.ledger"]   # {partition: seq}
            changes   = for every partition, the entries with seq > published[partition]:
                          commit      -> add its files
                          compaction  -> remove the files of the entries it replaces, add its own
            if no file changes: return
            one transaction: widen the schema, then one snapshot that removes, adds and records
                             the new {partition: seq} in its summary
            commit            # optimistic: refused if another snapshot landed since `load`

A snapshot is only ever made of the files of committed entries (the ledger has them before the
table does) and records the ledger position it reflects in the same atomic commit, so a crash
anywhere leaves the table before or after that commit, and whoever publishes next starts from
the position the table holds. Two publishers that race both read a position, one commit wins, the
other is refused and starts again from the winner's position. DESIGN.md §10 gives the argument.

Archiver owns the table's data files: `gc.enabled` is false so that engines' snapshot expiry never
deletes archive objects; compaction deletes a replaced object only once no retained snapshot
names it (`retained_position`).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from archiver import layouts
from archiver.archive import Archive
from archiver.config import CatalogSettings
from archiver.errors import ArchiverError, ConfigError, TerminalError, TransientError
from archiver.ledger import ABORTED, Decisions, Entry, FileEntry, PartitionLedger
from archiver.retry import Backoff

logger = logging.getLogger(__name__)

POSITIONS = "archiver.ledger"
"""Snapshot summary property: the ledger seq each partition's entries are published up to (JSON)."""
TOPIC_PROPERTY = "archiver.topic"
ARCHIVE_PROPERTY = "archiver.archive"
EXPIRE_BATCH = 100
"""Publishing expires snapshots older than the retention once this many have accumulated."""
OWN_PROPERTIES = {
    "commit.retry.num-retries": "0",  # pyiceberg would re-apply a refused append onto the newer
                                      # snapshot; publishing must start over instead
    "commit.manifest-merge.enabled": "true",  # appends merge small manifests (one per commit) once
                                              # commit.manifest.min-count-to-merge (100) accumulate
}
"""Table properties publishing relies on, set when the table is made and restored if changed."""
_TABLE_NAME = re.compile(r"[^a-z0-9_]")


def table_name(topic: str) -> str:
    """The table of a topic: lower case, every character Glue and Athena refuse as `_`."""
    return _TABLE_NAME.sub("_", topic.lower())


def open_catalog(settings: CatalogSettings, archive_url: str):
    """The pyiceberg catalog; S3 endpoint and region default to the archive's own S3 client's, so
    that table metadata and data files are read and written where the archive is."""
    if not settings.configured:
        raise ConfigError("no catalog is configured: set [catalog] type and uri (or ARCHIVER_CATALOG_TYPE "
                          "and ARCHIVER_CATALOG_URI); `infra/services env` prints a local SQLite one")
    from pyiceberg.catalog import load_catalog

    props = dict(settings.properties)
    props.setdefault("py-io-impl", "archiver.iceberg_io.ArchiverFileIO")  # releases S3 at exit (see there)
    if archive_url.startswith("s3://"):
        import boto3

        client = boto3.client("s3")
        endpoint = client.meta.endpoint_url
        if endpoint and "amazonaws.com" not in endpoint:
            props.setdefault("s3.endpoint", endpoint)
        if client.meta.region_name:
            props.setdefault("s3.region", client.meta.region_name)
    try:
        return load_catalog("archiver", **props)
    except (ValueError, NotImplementedError) as e:
        raise ConfigError(f"catalog: {e}") from None


def _absolute(archive_url: str, key: str) -> str:
    """A data object's URL, as the table's files name it."""
    base = archive_url.rstrip("/")
    if base.startswith("/"):
        base = "file://" + base
    return f"{base}/{key}"


@dataclass
class Changes:
    """What one publish adds to and removes from the table, and the positions it records."""

    positions: dict[int, int]
    added: dict[str, FileEntry] = field(default_factory=dict)  # URL -> file
    removed: set[str] = field(default_factory=set)  # URLs of files the table holds now

    @property
    def empty(self) -> bool:
        return not self.added and not self.removed


@dataclass(frozen=True)
class Published:
    """The outcome of one publish."""

    topic: str
    identifier: str
    snapshot_id: int | None
    added: int
    removed: int
    attempts: int
    seconds: float

    def line(self) -> str:
        if self.snapshot_id is None:
            return f"{self.topic}: {self.identifier} is up to date"
        return (f"{self.topic}: {self.identifier} snapshot {self.snapshot_id}: +{self.added} -{self.removed} files "
                f"({self.attempts} attempt{'s' if self.attempts > 1 else ''}, {self.seconds:.2f} s)")


class Publisher:
    """Publishes the committed ledger entries of topics to their Iceberg tables."""

    def __init__(self, archive: Archive, catalog, settings: CatalogSettings, *, attempts: int = 10,
                 sleep=time.sleep, retain_s: float = 900.0, expire_batch: int = EXPIRE_BATCH):
        self.archive = archive
        self.catalog = catalog
        self.settings = settings
        self.attempts = attempts
        self.sleep = sleep
        self.url = archive.store.url
        self.retain_s = retain_s  # snapshots are kept this long (compact_grace_s)
        self.expire_batch = expire_batch

    def identifier(self, topic: str) -> str:
        return f"{self.settings.namespace}.{table_name(topic)}"

    def load(self, topic: str):
        """The topic's table, or None before its first publish."""
        from pyiceberg.exceptions import NoSuchTableError

        try:
            table = self.catalog.load_table(self.identifier(topic))
        except NoSuchTableError:
            return None
        owner = table.properties.get(TOPIC_PROPERTY)
        if owner is not None and owner != topic:
            raise ConfigError(f"table {self.identifier(topic)} holds topic {owner!r}, not {topic!r} "
                              "(two topic names map to one table name): set another [catalog] namespace")
        archive = table.properties.get(ARCHIVE_PROPERTY)
        if archive is not None and archive != self.url:
            raise ConfigError(f"table {self.identifier(topic)} holds the archive at {archive}, not {self.url} "
                              "(its ledger positions are another archive's): set another [catalog] namespace")
        return table

    def publish(self, topic: str) -> Published:
        """Bring the topic's table to the ledger's committed state: one commit, retried on conflict.

        Raises:
            TransientError: the catalog (or the table's storage) cannot be reached or is busy.
            TerminalError: a table this archive's files cannot make.
        """
        try:
            return self._publish(topic)
        except (ArchiverError, KeyboardInterrupt):
            raise
        except FileNotFoundError as e:  # not an outage: waiting will not bring the file back
            raise TerminalError(f"{self.identifier(topic)}: a file of the table is missing from its storage "
                                f"(deleted under the catalog?): {_first_line(e)}") from None
        except Exception as e:
            if _is_outage(e):
                raise TransientError(f"{self.identifier(topic)}: the catalog is unavailable: "
                                     f"{_first_line(e)}") from None
            raise

    def _publish(self, topic: str) -> Published:
        from pyiceberg.exceptions import CommitFailedException

        started = time.monotonic()
        backoff = Backoff(initial=0.2, maximum=5.0)
        for attempt in range(1, self.attempts + 1):
            table = self.load(topic)
            changes = self.changes(topic, table)
            if changes.empty:
                return Published(topic, self.identifier(topic), None, 0, 0, attempt, time.monotonic() - started)
            try:
                snapshot, committed = self._commit(topic, table, changes)
            except (ValueError, TypeError) as e:  # pyiceberg's word for a table it cannot make
                raise TerminalError(f"{self.identifier(topic)}: {e}") from None
            except CommitFailedException as e:
                if attempt == self.attempts:
                    raise TransientError(f"{self.identifier(topic)}: {attempt} table commits refused: {e}") from None
                logger.info("%s: table commit refused (another publisher won), again: %s", topic, e)
                self.sleep(backoff.next_delay())
                continue
            self._expire_in_batches(committed)
            return Published(topic, self.identifier(topic), snapshot, len(changes.added), len(changes.removed),
                             attempt, time.monotonic() - started)
        raise AssertionError("unreachable")  # pragma: no cover

    def settle(self, topic: str, grace_s: float) -> dict[int, int]:
        """After a compaction: publish it, expire the snapshots older than `grace_s` (never the
        current one); per partition, the lowest ledger position a retained snapshot reflects."""
        self.publish(topic)
        table = self.load(topic)
        if table is None:
            return {}
        expire(table, grace_s, self.sleep)
        return retained_positions(self.load(topic))

    # --- what changed ------------------------------------------------------------------------

    def changes(self, topic: str, table) -> Changes:
        """The files to add and remove to reflect every committed entry after the table's positions."""
        published = positions(table)
        changes = Changes(dict(published))
        ledgers = [PartitionLedger(self.archive.store, topic, p) for p in self.archive.partitions(topic)]
        pending = {ledger.partition: list(ledger.entries(published.get(ledger.partition, 0))) for ledger in ledgers}
        ready, aborted = self._groups(topic, pending)
        for ledger in ledgers:
            after = published.get(ledger.partition, 0)
            for entry in pending[ledger.partition]:
                if entry.group is not None and entry.group not in ready:
                    if entry.group not in aborted:
                        break  # undecided, or a member's entry not read yet: publish up to it
                else:
                    self._apply(ledger, entry, after, changes)
                changes.positions[ledger.partition] = entry.seq
        return changes

    def _groups(self, topic: str, pending: dict[int, list[Entry]]) -> tuple[set[str], set[str]]:
        """(groups to publish, aborted groups) among the entries read: a compaction across
        partitions is published in one commit with every member's entry, or not at all, since its
        merged files hold rows of every member."""
        read: dict[str, set[int]] = {}
        for partition, entries in pending.items():
            for entry in entries:
                if entry.group is not None:
                    read.setdefault(entry.group, set()).add(partition)
        decisions = Decisions(self.archive.store, topic)
        ready, aborted = set(), set()
        for group, partitions in read.items():
            decision = decisions.read(group)
            if decision is None:
                continue
            if decision["outcome"] == ABORTED:
                aborted.add(group)
            elif set(decision["members"]) <= partitions:
                ready.add(group)
        return ready, aborted

    def _apply(self, ledger: PartitionLedger, entry: Entry, published: int, changes: Changes) -> None:
        if entry.kind == "claim":
            return
        for seq in entry.replaces:
            for file in _entry(ledger, seq).files:
                url = _absolute(self.url, file.key)
                if changes.added.pop(url, None) is None and seq <= published:
                    changes.removed.add(url)
        for file in entry.files:
            changes.added[_absolute(self.url, file.key)] = file

    # --- committing --------------------------------------------------------------------------

    def _commit(self, topic: str, table, changes: Changes) -> tuple[int, object]:
        """One transaction: widen the schema, then one snapshot; (its id, the committed table)."""
        from pyiceberg.table import TableProperties
        from pyiceberg.table.update import AssertRefSnapshotId

        footers = self._footers(table, list(changes.added))
        if table is None:
            table = self._create(topic, next(iter(footers.values())).schema.to_arrow_schema())
        if any(table.properties.get(k) != v for k, v in OWN_PROPERTIES.items()):
            table = table.transaction().set_properties(OWN_PROPERTIES).commit_transaction()
        tx = table.transaction()
        # the commit holds only if nothing else landed since `changes` were read: a rebased append
        # would add files another publisher already added
        current = table.current_snapshot()
        tx._stage((), (AssertRefSnapshotId(snapshot_id=current.snapshot_id if current else None, ref="main"),))
        distinct = {str(s): s for s in (_without_metadata(f.schema.to_arrow_schema()) for f in footers.values())}
        wider = [s for s in distinct.values() if _adds_columns(tx.table_metadata.schema(), s)]
        if wider:
            with tx.update_schema() as update:
                update.union_by_name(pa.unify_schemas(wider))
            tx.set_properties({TableProperties.DEFAULT_NAME_MAPPING:
                               tx.table_metadata.schema().name_mapping.model_dump_json()})
        files = [_data_file(tx.table_metadata, url, changes.added[url].bytes, footers[url]) for url in changes.added]
        summary = {POSITIONS: json.dumps({str(p): s for p, s in sorted(changes.positions.items())},
                                         separators=(",", ":"))}
        if changes.removed:
            current = _current_files(table, changes.removed)
            with tx.update_snapshot(snapshot_properties=summary).overwrite() as overwrite:
                for url in sorted(changes.removed):
                    if url in current:
                        overwrite.delete_data_file(current[url])
                    else:
                        logger.warning("%s: %s is not in the table to remove", topic, url)
                for data_file in files:
                    overwrite.append_data_file(data_file)
        else:
            with tx.update_snapshot(snapshot_properties=summary).merge_append() as append:
                for data_file in files:
                    append.append_data_file(data_file)
        committed = tx.commit_transaction()
        return committed.current_snapshot().snapshot_id, committed

    def _expire_in_batches(self, table) -> None:
        """Keep metadata small between compactions: once `expire_batch` snapshots are older than
        the retention, expire them (one extra commit per batch; the current one always stays)."""
        cutoff = (time.time() - self.retain_s) * 1000
        current = table.current_snapshot()
        old = sum(1 for s in table.snapshots() if s.timestamp_ms < cutoff and s.snapshot_id != current.snapshot_id)
        if old >= self.expire_batch:
            try:
                expire(table, self.retain_s, self.sleep)
            except Exception as e:  # noqa: BLE001 - the next batch tries again; the table is fine
                logger.warning("expiring old snapshots of %s failed: %s", table.name(), e)

    def _create(self, topic: str, schema: pa.Schema):
        """The topic's table: the schema of its files, partitioned by the time of the layout."""
        from pyiceberg.exceptions import NamespaceAlreadyExistsError, TableAlreadyExistsError
        from pyiceberg.table import TableProperties

        iceberg = _iceberg_schema(schema)
        spec = partition_spec(iceberg, layouts.of_archive(self.archive, topic))
        try:
            self.catalog.create_namespace(self.settings.namespace)
        except NamespaceAlreadyExistsError:
            pass
        properties = {"format-version": "2", "gc.enabled": "false", TOPIC_PROPERTY: topic, **OWN_PROPERTIES,
                      ARCHIVE_PROPERTY: self.url,
                      TableProperties.DEFAULT_NAME_MAPPING: iceberg.name_mapping.model_dump_json()}
        location = _absolute(self.url, f"_iceberg/{table_name(topic)}")
        try:
            return self.catalog.create_table(self.identifier(topic), schema=iceberg, location=location,
                                             partition_spec=spec, properties=properties)
        except TableAlreadyExistsError:  # another publisher created it first
            return self.load(topic)

    def _footers(self, table, urls: list[str]) -> dict[str, pq.FileMetaData]:
        """The Parquet footer of every file to add, read in parallel (ranged reads, not whole files)."""
        from pyiceberg.io import load_file_io

        file_io = table.io if table is not None else load_file_io(self.catalog.properties, urls[0])

        def footer(url: str) -> pq.FileMetaData:
            with file_io.new_input(url).open() as stream:
                return pq.read_metadata(stream)

        with ThreadPoolExecutor(8) as pool:
            return dict(zip(urls, pool.map(footer, urls), strict=True))


def _is_outage(error: Exception) -> bool:
    """A catalog or storage failure that a later attempt may not meet: a database that is locked
    or unreachable, a refused connection, a throttled or failing service."""
    name = f"{type(error).__module__}.{type(error).__name__}"
    return (isinstance(error, OSError | TimeoutError | ConnectionError)
            or name.startswith(("sqlalchemy.exc.OperationalError", "botocore.exceptions.EndpointConnectionError",
                                "botocore.exceptions.ConnectTimeoutError", "botocore.exceptions.ReadTimeoutError",
                                "requests.exceptions.ConnectionError", "requests.exceptions.Timeout",
                                "pyiceberg.exceptions.ServiceUnavailableError", "pyiceberg.exceptions.ServerError")))


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def expire(table, older_than_s: float, sleep=time.sleep, attempts: int = 5) -> int:
    """Expire the table's snapshots older than `older_than_s` but the current one; how many."""
    from pyiceberg.exceptions import CommitFailedException

    backoff = Backoff(initial=0.2, maximum=5.0)
    for attempt in range(1, attempts + 1):
        cutoff = (time.time() - older_than_s) * 1000
        current = table.current_snapshot()
        doomed = [s.snapshot_id for s in table.snapshots()
                  if s.timestamp_ms < cutoff and (current is None or s.snapshot_id != current.snapshot_id)]
        if not doomed:
            return 0
        try:
            table.maintenance.expire_snapshots().by_ids(doomed).commit()
            return len(doomed)
        except CommitFailedException:
            if attempt == attempts:
                raise
            sleep(backoff.next_delay())
            table = table.refresh()
    return 0


def positions(table) -> dict[int, int]:
    """The ledger position the table's current state reflects, per partition ({} before the first)."""
    if table is None:
        return {}
    snapshot = table.current_snapshot()
    while snapshot is not None:
        if POSITIONS in (snapshot.summary.additional_properties if snapshot.summary else {}):
            return _positions_of(snapshot)
        snapshot = table.snapshot_by_id(snapshot.parent_snapshot_id) if snapshot.parent_snapshot_id else None
    return {}


def retained_positions(table) -> dict[int, int]:
    """Per partition, the lowest position any retained snapshot reflects: the files of an entry a
    compaction at or below it replaced are named by no retained snapshot, so they may be deleted."""
    if table is None:
        return {}
    retained = [_positions_of(s) for s in table.snapshots()]
    partitions = {p for at in retained for p in at}
    return {p: min(at.get(p, 0) for at in retained) for p in partitions}


def _positions_of(snapshot) -> dict[int, int]:
    raw = (snapshot.summary.additional_properties if snapshot.summary else {}).get(POSITIONS)
    return {int(p): int(s) for p, s in json.loads(raw).items()} if raw else {}


def partition_spec(schema, topic_layout: layouts.TopicLayout):
    """Time partitioning where the layout dates records by their Kafka timestamp (Kafka 4 gives
    every record one): day for day directories, hour for hour and minute ones. A layout dated by a
    value field is left unpartitioned (a record without the field is filed by its Kafka timestamp,
    which no Iceberg transform of the field can express); column bounds still prune its files."""
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.transforms import DayTransform, HourTransform

    if topic_layout.time_field is not None:
        return PartitionSpec()
    source = schema.find_field("_kafka_timestamp")
    if topic_layout.time_granularity == "day":
        return PartitionSpec(PartitionField(source.field_id, 1000, DayTransform(), "_kafka_timestamp_day"))
    return PartitionSpec(PartitionField(source.field_id, 1000, HourTransform(), "_kafka_timestamp_hour"))


def _iceberg_schema(schema: pa.Schema):
    from pyiceberg.io.pyarrow import _pyarrow_to_schema_without_ids
    from pyiceberg.schema import assign_fresh_schema_ids

    try:
        return assign_fresh_schema_ids(_pyarrow_to_schema_without_ids(_without_metadata(schema)))
    except (TypeError, ValueError) as e:
        raise TerminalError(f"the archive's files have a column Iceberg cannot hold: {e}") from None


def _without_metadata(schema: pa.Schema) -> pa.Schema:
    return schema.remove_metadata()


def _adds_columns(table_schema, schema: pa.Schema) -> bool:
    names = set(table_schema._name_to_id)
    return any(name not in names for name in _pyarrow_names(schema))


def _pyarrow_names(schema: pa.Schema) -> Iterable[str]:
    return _iceberg_schema(schema)._name_to_id.keys()


def _data_file(metadata, url: str, size: int, footer: pq.FileMetaData):
    """A DataFile for a file registered in place: its statistics and partition from its footer."""
    from pyiceberg.io.pyarrow import (
        compute_statistics_plan,
        data_file_statistics_from_parquet_metadata,
        parquet_path_to_id_mapping,
    )
    from pyiceberg.manifest import DataFile, DataFileContent, FileFormat

    schema = metadata.schema()
    statistics = data_file_statistics_from_parquet_metadata(
        parquet_metadata=footer, stats_columns=compute_statistics_plan(schema, metadata.properties),
        parquet_column_mapping=parquet_path_to_id_mapping(schema))
    return DataFile.from_args(
        content=DataFileContent.DATA, file_path=url, file_format=FileFormat.PARQUET,
        partition=statistics.partition(metadata.spec(), schema), file_size_in_bytes=size,
        sort_order_id=None, spec_id=metadata.default_spec_id, equality_ids=None, key_metadata=None,
        **statistics.to_serialized_dict())


def _current_files(table, urls: set[str]) -> dict:
    """The table's current DataFile for each of `urls` it holds."""
    found = {}
    snapshot = table.current_snapshot() if table is not None else None
    if snapshot is None:
        return found
    for manifest in snapshot.manifests(table.io):
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
            if entry.data_file.file_path in urls:
                found[entry.data_file.file_path] = entry.data_file
    return found


def _entry(ledger: PartitionLedger, seq: int) -> Entry:
    from archiver import layout

    return Entry.from_json(ledger.store.get(layout.ledger_key(ledger.topic, ledger.partition, seq)))


# --- commands ------------------------------------------------------------------------------------


def publisher(settings) -> Publisher:
    """A Publisher for `settings` (config.RunSettings): the archive and the configured catalog."""

    archive = Archive(settings.open_store())
    return Publisher(archive, open_catalog(settings.catalog, settings.archive_url), settings.catalog,
                     retain_s=settings.compact_grace_s)


def publish(settings, topics: Iterable[str] = ()) -> list[Published]:
    """`archiver catalog publish`: one table commit per topic with anything new (all archived topics
    by default)."""
    pub = publisher(settings)
    pub.archive.require()
    return [pub.publish(topic) for topic in _archived(pub.archive, topics)]


def _archived(archive: Archive, topics: Iterable[str]) -> list[str]:
    """`topics` (all archived ones if none), each checked to be in the archive."""
    known = archive.topics()
    chosen = list(topics) or known
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        raise ConfigError(f"topic {unknown[0]!r} is not archived in {archive.store.url}")
    return chosen


def status(settings, topic: str) -> dict:
    """`archiver catalog status`: the table, its current snapshot, and per partition the published
    ledger position against the ledger's head."""
    pub = publisher(settings)
    pub.archive.require()
    _archived(pub.archive, [topic])
    table = pub.load(topic)
    published = positions(table)
    partitions = []
    for partition in pub.archive.partitions(topic):
        ledger = PartitionLedger(pub.archive.store, topic, partition)
        head = ledger.read_head()
        at = published.get(partition, 0)
        pending = [e for e in ledger.entries(at)] if head is not None and head.seq > at else []
        partitions.append({"partition": partition, "published_seq": at, "ledger_seq": head.seq if head else 0,
                           "lag_entries": sum(e.kind != "claim" for e in pending),
                           "lag_records": sum(e.records for e in pending if e.kind == "commit")})
    snapshot = table.current_snapshot() if table is not None else None
    summary = snapshot.summary.additional_properties if snapshot is not None and snapshot.summary else {}
    return {"topic": topic, "table": pub.identifier(topic), "catalog": settings.catalog.kind,
            "exists": table is not None, "metadata_location": table.metadata_location if table is not None else None,
            "snapshot_id": snapshot.snapshot_id if snapshot is not None else None,
            "snapshots": len(table.snapshots()) if table is not None else 0,
            "data_files": int(summary.get("total-data-files", 0)), "records": int(summary.get("total-records", 0)),
            "lag_records": sum(p["lag_records"] for p in partitions), "partitions": partitions}


def status_text(doc: dict) -> str:
    if not doc["exists"]:
        head = f"{doc['topic']}: no table {doc['table']} yet (catalog {doc['catalog']}): run `archiver catalog publish`"
    else:
        head = (f"{doc['topic']}: {doc['table']} (catalog {doc['catalog']}) snapshot {doc['snapshot_id']}, "
                f"{doc['data_files']} files, {doc['records']} records, {doc['lag_records']} records to publish\n"
                f"  metadata: {doc['metadata_location']}")
    rows = [f"  partition {p['partition']:>3}: published seq {p['published_seq']} of {p['ledger_seq']}"
            f" ({p['lag_records']} records behind)" for p in doc["partitions"]]
    return "\n".join([head, *rows])


def json_text(doc: dict) -> str:
    return json.dumps(doc, indent=2)


# --- on a schedule, inside the daemon --------------------------------------------------------


class Scheduled:
    """Publishing every `interval_s` inside the daemon, in a background thread: one table commit
    per topic the daemon owns partitions of, covering everything committed since the last one."""

    def __init__(self, settings, interval_s: float, topics: Callable[[], Iterable[str]]):
        import schedule

        self.settings, self.topics = settings, topics
        self._publisher: Publisher | None = None
        self._lock = threading.Lock()
        self.scheduler = schedule.Scheduler()
        self.scheduler.every(interval_s).seconds.do(self._start)
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.commits = 0
        self.failures = 0
        self.last_success: float | None = None
        self.last_seconds = 0.0

    def publisher(self) -> Publisher:
        """The daemon's Publisher (its own S3 client and catalog connection), made on first use."""
        with self._lock:
            if self._publisher is None:
                self._publisher = publisher(self.settings)
            return self._publisher

    def tick(self) -> None:
        self.scheduler.run_pending()

    def _start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return  # the previous round is still going
        topics = sorted(set(self.topics()))
        self._thread = threading.Thread(target=self.publish_all, args=(topics,), name="publishing", daemon=True)
        self._thread.start()

    def publish_all(self, topics: Iterable[str]) -> None:
        for topic in topics:
            if self._stopping.is_set():
                return
            try:
                result = self.publisher().publish(topic)
            except Exception as e:  # noqa: BLE001 - the table catches up at the next interval
                self.failures += 1
                logger.warning("publishing %s to its table failed (again in %s): %s", topic,
                               f"{self.settings.publish_interval_s:g}s", e)
                continue
            self.last_success, self.last_seconds = time.time(), result.seconds
            if result.snapshot_id is not None:
                self.commits += 1
                logger.info("%s", result.line())

    def close(self, timeout: float = 60.0) -> None:
        """Stop after the topic in progress (its table commit is atomic either way)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)


# --- reading the table (the demo's last step) ---------------------------------------------------


def duckdb_connection(archive_url: str):
    """DuckDB with its iceberg extension (and avro, httpfs) loaded from their wheels, reading S3
    with the credentials of the standard AWS chain."""
    from archiver import query

    con = query.connect(archive_url)
    con.execute(f"LOAD '{query.extension_path('avro')}'")
    con.execute(f"LOAD '{query.extension_path('iceberg')}'")
    return con


def demo_query(settings, topic: str, since_ms: int, until_ms: int) -> tuple[str, list[tuple], int, int]:
    """Count a topic's events of [since, until) by type through its Iceberg table with DuckDB:
    (sql, rows, files read, files in the table)."""
    pub = publisher(settings)
    table = pub.load(topic)
    if table is None:
        raise TerminalError(f"no table {pub.identifier(topic)}: publish it with `archiver catalog publish`")
    source = f"iceberg_scan('{table.metadata_location}')"
    where = (f"_kafka_timestamp >= make_timestamptz({since_ms}::BIGINT * 1000) "
             f"AND _kafka_timestamp < make_timestamptz({until_ms}::BIGINT * 1000)")
    sql = f"SELECT event_type, count(*) AS events FROM {source} WHERE {where} GROUP BY 1 ORDER BY 2 DESC, 1"
    con = duckdb_connection(settings.archive_url)
    try:
        rows = con.execute(sql).fetchall()
        plan = con.execute(f"EXPLAIN ANALYZE SELECT count(*) FROM {source} WHERE {where}").fetchone()[1]
    finally:
        con.close()
    read = re.search(r"Total Files Read:\s*([\d,]+)", plan)
    summary = table.current_snapshot().summary.additional_properties
    return sql, rows, int(read[1].replace(",", "")) if read else -1, int(summary.get("total-data-files", 0))
