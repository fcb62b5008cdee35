"""Publishing the ledger to Iceberg tables, on a local archive and a SQL catalog in a temporary SQLite file."""

from __future__ import annotations

import collections

import pytest

from archiver import tables
from archiver.compact import CompactSettings, compact, compact_partition
from archiver.config import CatalogSettings, TopicSettings
from archiver.ledger import PartitionLedger
from archiver.store import open_store
from archiver.tables import Publisher, positions, retained_positions
from tests.unit.test_catalog import archive_with, v2_messages
from tests.unit.test_sink import messages


@pytest.fixture
def store(tmp_path):
    return open_store(f"file://{tmp_path}/archive")


@pytest.fixture
def catalog(tmp_path):
    from pyiceberg.catalog.sql import SqlCatalog

    return SqlCatalog("archiver", uri=f"sqlite:///{tmp_path}/catalog.db")


def offsets_of(table) -> collections.Counter:
    rows = table.scan().to_arrow()
    return collections.Counter(zip(rows["_kafka_partition"].to_pylist(), rows["_kafka_offset"].to_pylist()))


def head(archive, partition: int = 0) -> int:
    return PartitionLedger(archive.store, "t", partition).read_head().seq


def test_publish_registers_each_committed_file_once_and_again_changes_nothing(store, catalog):
    archive = archive_with(store, TopicSettings(), messages(40), messages(40, first_offset=40))
    pub = Publisher(archive, catalog, CatalogSettings())
    first = pub.publish("t")
    assert first.snapshot_id is not None and first.added == len(list(archive.files("t")))
    table = pub.load("t")
    assert offsets_of(table) == collections.Counter({(0, o): 1 for o in range(80)})
    assert positions(table) == {0: head(archive)}
    assert table.properties["commit.retry.num-retries"] == "0" and table.properties["gc.enabled"] == "false"
    assert [f.name for f in table.spec().fields] == ["_kafka_timestamp_hour"]
    assert str(table.schema().find_field("_kafka_timestamp").field_type) == "timestamptz"
    again = pub.publish("t")
    assert again.snapshot_id is None and len(pub.load("t").snapshots()) == 1


def test_a_compaction_published_with_the_commits_it_replaced_nets_them_out(store, catalog):
    archive = archive_with(store, TopicSettings(), messages(40), messages(40, first_offset=40))
    report = compact_partition(store, "t", 0, CompactSettings(closed_after_s=0, grace_s=3600))
    assert report.files_in > 0
    pub = Publisher(archive, catalog, CatalogSettings())
    result = pub.publish("t")
    assert result.removed == 0  # nothing was in the table yet: the replaced files were never added
    table = pub.load("t")
    assert sorted(f.file_path for f in _files(table)) == \
        sorted(tables._absolute(store.url, f.key) for f in archive.files("t"))  # the live files, no replaced one
    assert offsets_of(table) == collections.Counter({(0, o): 1 for o in range(80)})


def test_compaction_is_one_overwrite_and_replaced_files_wait_for_the_retained_snapshots(store, catalog):
    archive = archive_with(store, TopicSettings(), messages(40), messages(40, first_offset=40))
    pub = Publisher(archive, catalog, CatalogSettings())
    pub.publish("t")
    before = head(archive)
    report = compact(archive, ["t"], CompactSettings(closed_after_s=0, grace_s=3600), tables=pub)
    totals = report.totals()
    assert totals["files_in"] > 0 and totals["deleted_files"] == 0  # the grace period holds them
    table = pub.load("t")
    assert table.current_snapshot().summary.operation.value == "overwrite"
    assert len(table.snapshots()) == 2
    assert retained_positions(table) == {0: before}  # the old snapshot still names the replaced files
    assert offsets_of(table) == collections.Counter({(0, o): 1 for o in range(80)})

    report = compact(archive, ["t"], CompactSettings(closed_after_s=0, grace_s=0), tables=pub)
    assert report.totals()["deleted_files"] == totals["files_in"]
    table = pub.load("t")
    assert len(table.snapshots()) == 1 and retained_positions(table) == {0: head(archive)}
    assert offsets_of(table) == collections.Counter({(0, o): 1 for o in range(80)})  # every file it names exists


def test_a_new_writer_schema_widens_the_table_before_its_files(store, catalog):
    archive = archive_with(store, TopicSettings(), messages(30))
    pub = Publisher(archive, catalog, CatalogSettings())
    pub.publish("t")
    archive = archive_with(store, TopicSettings(), v2_messages(30, 30))
    pub.publish("t")
    rows = pub.load("t").scan().to_arrow()
    assert sorted(collections.Counter(rows["experiment"].to_pylist()).items(), key=str) == [("x", 30), (None, 30)]


def test_names_partitioning_and_outages():
    from pyiceberg.schema import Schema
    from pyiceberg.types import NestedField, TimestamptzType

    from archiver.layouts import TopicLayout

    assert tables.table_name("Web.Events-v2") == "web_events_v2"
    schema = Schema(NestedField(1, "_kafka_timestamp", TimestamptzType(), required=False))
    assert [f.name for f in tables.partition_spec(schema, TopicLayout(time_granularity="day")).fields] == \
        ["_kafka_timestamp_day"]
    assert [f.name for f in tables.partition_spec(schema, TopicLayout(time_granularity="minute")).fields] == \
        ["_kafka_timestamp_hour"]
    assert tables.partition_spec(schema, TopicLayout(time_field="event_time")).fields == ()
    assert tables._is_outage(ConnectionRefusedError("refused"))
    assert not tables._is_outage(ValueError("bad schema"))


def _files(table):
    return [entry.data_file for manifest in table.current_snapshot().manifests(table.io)
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True)]


def test_commands_refuse_a_topic_the_archive_does_not_hold(store, tmp_path):
    from archiver.config import load_run_settings
    from archiver.errors import ConfigError

    archive_with(store, TopicSettings(), messages(10))
    settings = load_run_settings(None, {"ARCHIVER_ARCHIVE_URL": store.url, "ARCHIVER_CATALOG_TYPE": "sql",
                                        "ARCHIVER_CATALOG_URI": f"sqlite:///{tmp_path}/c.db"},
                                 needs=frozenset({"archive"}))
    with pytest.raises(ConfigError, match=r"^topic 'nope' is not archived in "):
        tables.publish(settings, ["nope"])
    with pytest.raises(ConfigError, match=r"^topic 'nope' is not archived in "):
        tables.status(settings, "nope")
    (result,) = tables.publish(settings)
    assert result.topic == "t" and result.snapshot_id is not None
    doc = tables.status(settings, "t")
    assert (doc["exists"], doc["records"], doc["lag_records"]) == (True, 10, 0)
    assert "records to publish" in tables.status_text(doc)


def test_publishing_expires_old_snapshots_in_batches(store, catalog):
    archive = archive_with(store, TopicSettings(), messages(10))
    pub = Publisher(archive, catalog, CatalogSettings(), retain_s=0, expire_batch=2)
    pub.publish("t")
    archive_with(store, TopicSettings(), messages(10, first_offset=10))
    pub.publish("t")
    assert len(pub.load("t").snapshots()) == 2  # one old snapshot: below the batch
    archive_with(store, TopicSettings(), messages(10, first_offset=20))
    pub.publish("t")
    table = pub.load("t")
    assert len(table.snapshots()) == 1  # two old ones: expired together, the current one stays
    assert offsets_of(table) == collections.Counter({(0, o): 1 for o in range(30)})
    assert positions(table) == {0: head(archive)}


def test_appends_merge_manifests_so_planning_reads_a_bounded_number(store, catalog):
    archive = archive_with(store, TopicSettings(), messages(5))
    pub = Publisher(archive, catalog, CatalogSettings())
    pub.publish("t")
    table = pub.load("t")
    assert table.properties["commit.manifest-merge.enabled"] == "true"
    table.transaction().set_properties({"commit.manifest.min-count-to-merge": "3"}).commit_transaction()
    for i in range(1, 7):
        archive_with(store, TopicSettings(), messages(5, first_offset=5 * i))
        pub.publish("t")
    table = pub.load("t")
    assert len(table.current_snapshot().manifests(table.io)) < 3  # one per commit would be 7
    assert offsets_of(table) == collections.Counter({(0, o): 1 for o in range(35)})


def test_a_table_of_another_archive_is_refused_with_one_line(tmp_path, catalog):
    from archiver.archive import Archive
    from archiver.errors import ConfigError

    first, second = (open_store(f"file://{tmp_path}/{name}") for name in ("first", "second"))
    for store in (first, second):
        archive_with(store, TopicSettings(), messages(10))
    Publisher(Archive(first), catalog, CatalogSettings()).publish("t")
    with pytest.raises(ConfigError, match=r"^table archiver\.t holds the archive at file://.*/first/, not "
                                          r"file://.*/second/ .*set another \[catalog\] namespace$"):
        Publisher(Archive(second), catalog, CatalogSettings()).publish("t")


def test_a_table_whose_metadata_was_deleted_is_a_terminal_error_not_an_outage(store, catalog):
    import pathlib

    from archiver.archive import Archive
    from archiver.errors import TerminalError

    archive = archive_with(store, TopicSettings(), messages(10))
    pub = Publisher(Archive(store), catalog, CatalogSettings())
    pub.publish("t")
    location = pub.load("t").metadata_location
    pathlib.Path(location.removeprefix("file://")).unlink()
    with pytest.raises(TerminalError, match=r"^archiver\.t: a file of the table is missing from its storage"):
        Publisher(archive, catalog, CatalogSettings()).publish("t")


def test_the_catalogs_file_io_drops_its_filesystems_at_exit(store, tmp_path):
    """pyarrow deadlocks at exit while an S3 filesystem with web-identity credentials lives
    (apache/arrow#50188): the catalog's FileIO is archiver's, whose exit hook releases them."""
    from archiver import iceberg_io

    settings = CatalogSettings({"type": "sql", "uri": f"sqlite:///{tmp_path}/catalog.db"})
    catalog = tables.open_catalog(settings, f"file://{tmp_path}/archive")
    archive = archive_with(store, TopicSettings(), messages(5))
    publisher = Publisher(archive, catalog, settings)
    publisher.publish("t")
    table = publisher.load("t")
    assert isinstance(table.io, iceberg_io.ArchiverFileIO)
    assert offsets_of(table) == collections.Counter({(0, o): 1 for o in range(5)})
    assert table.io.fs_by_scheme.cache_info().currsize > 0
    iceberg_io.release()
    assert table.io.fs_by_scheme.cache_info().currsize == 0
    assert offsets_of(table) == collections.Counter({(0, o): 1 for o in range(5)})  # made again when used
