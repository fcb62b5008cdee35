"""The `archiver` command line: parse, call one function, render. The only module that prints.

Commands import what they use in their own bodies (and logging once they run), so that start-up
(`archiver --help` included) pays only for the command that runs, not for pyarrow, duckdb, boto3
or the Kafka and Schema Registry clients of every other one.
"""

from __future__ import annotations

import functools
import sys

import click

from archiver import __version__, terminal
from archiver.cli_options import (
    Group,
    archive_option,
    config_option,
    kafka_option,
    registry_option,
    topics_option,
)
from archiver.errors import ArchiverError


def _one_line_errors(fn):
    """Turn archiver's errors into one line on stderr and their exit code; secrets masked."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ArchiverError as e:
            from archiver.logs import mask

            click.echo(f"archiver: error: {mask(str(e))}", err=True)
            sys.exit(e.exit_code)

    return wrapper


def _settings(config_path: str | None, needs=None, **flags):
    """The settings from flags, environment, config file and defaults (the one loader), secrets noted."""
    from archiver import logs
    from archiver.config import RUN_NEEDS, load_run_settings

    settings = load_run_settings(config_path, flags=flags, needs=RUN_NEEDS if needs is None else frozenset(needs))
    logs.add_secrets(settings.secrets())
    return settings


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="archiver")
def cli() -> None:
    """archiver: a durable, queryable, replayable copy of your Kafka topics in S3.

    Reads Avro topics (Confluent wire format + Schema Registry), writes Parquet partitioned by
    time and key to S3 with exactly-once guarantees, and replays archived records into Kafka.
    Every command reads the same settings: flags, then ARCHIVER_* variables, then the TOML file
    (-c / ARCHIVER_CONFIG), then defaults (docs/configuration.md).
    """


@cli.command()
@config_option
@kafka_option
@registry_option
@archive_option
@click.option("--topic", default="web-events", show_default=True, help="Topic to create and fill.")
@click.option("--count", default=20000, show_default=True, type=click.IntRange(1), help="Events to produce.")
@click.option("--partitions", default=6, show_default=True, type=click.IntRange(1))
@_one_line_errors
def demo(config_path, bootstrap_servers, schema_registry_url, archive_url, topic, count, partitions):
    """Produce web-analytics events into TOPIC, archive them with `run --once`, show the archive."""
    from archiver import demo as demo_events
    from archiver.archive import Archive
    from archiver.codec.registry import Registry
    from archiver.daemon import Daemon

    settings = _settings(config_path, bootstrap_servers=bootstrap_servers, archive_url=archive_url,
                         schema_registry_url=schema_registry_url, topics=(topic,), group_id="archiver-demo")
    with Registry(settings.registry) as registry:
        schema_id = demo_events.produce(settings.kafka, registry, topic, count, partitions)
    click.echo(f"1. produced {count} web-analytics events to {topic!r} ({partitions} partitions, "
               f"schema id {schema_id}, keys = session ids, headers source/trace-id)")
    summary = Daemon(settings, once=True).run()
    click.echo(f"2. archiver run --once: {summary.records_out} records in {summary.files} Parquet files, "
               f"{summary.bytes_in / 1e6:.2f} MB Avro -> {summary.bytes_out / 1e6:.2f} MB Parquet "
               f"in {summary.seconds:.1f}s")
    archive = Archive(settings.open_store())
    files = list(archive.files(topic))
    click.echo(f"3. the archive at {settings.archive_url} now holds {sum(f.rows for f in files)} records of "
               f"{topic!r} in {len(files)} files; the newest:")
    for f in sorted(files, key=lambda f: f.key)[-5:]:
        click.echo(f"     {f.key}  ({f.rows} rows, {f.bytes:,} bytes)")
    for p in archive.partitions(topic):
        commits = [e for e in archive.entries(topic, p) if e.kind == "commit"]
        if commits:
            click.echo(f"   ledger {topic}[{p}]: offsets {commits[0].start}..{commits[-1].end - 1} in "
                       f"{len(commits)} commit(s)")
    row = archive.read(files[-1]).slice(0, 1).to_pylist()[0]
    shown = ("event_type", "session_id", "url", "device", "_kafka_partition", "_kafka_offset", "_kafka_timestamp",
             "_kafka_headers")
    click.echo("4. one archived row: " + ", ".join(f"{k}={row[k]!s}" for k in shown))
    _demo_replay(settings, archive, topic, partitions)
    _demo_compact(settings, archive, topic)
    _demo_batch(settings.archive_url, archive, topic)
    if settings.catalog.configured:
        _demo_iceberg(settings, topic)


def _demo_iceberg(settings, topic: str) -> None:
    """The last full hour again, through the topic's Iceberg table, as an engine reads it."""
    import time

    from archiver import tables

    end = int(time.time() // 3600) * 3600_000
    sql, rows, read, total = tables.demo_query(settings, topic, end - 3600_000, end)
    click.echo(f"10. the Iceberg table {settings.catalog.namespace}.{tables.table_name(topic)} "
               f"(catalog {settings.catalog.kind}), read by DuckDB's iceberg extension:\n   {sql}\n"
               f"   (read {read} of {total} files: the table's hour partitions pruned the rest)")
    click.echo("   " + "\n   ".join(f"{event_type:<12} {events:>6}" for event_type, events in rows))


def _demo_compact(settings, archive, topic: str) -> None:
    """Compact the closed hours: each directory becomes one file, whatever the partition count."""
    import collections
    import time

    from archiver import compact as compact_mod
    from archiver import layout, tables
    from archiver import query as query_mod

    now = time.time()
    report = compact_mod.compact(archive, [topic], compact_mod.CompactSettings(closed_after_s=0, grace_s=0),
                                 now=lambda: now, tables=tables.publisher(settings) if settings.catalog.configured
                                 else None)
    totals = report.totals()
    files, _ = query_mod.distinct_files((p, f) for p in archive.partitions(topic) for f in archive.files(topic, p))
    per_directory = collections.Counter(compact_mod.directories_of(f.key) for f in files)
    closed = sorted(d for d in per_directory if (compact_mod.time_partition_end(d) or now + 1) <= now)
    click.echo(f"6. archiver compact --closed-after 0s: {totals['files_in']} small files of the closed hours "
               f"merged across partitions into {totals['files_out']}; the archive now holds {len(files)} files, "
               f"{max((per_directory[d] for d in closed), default=0)} per closed directory:")
    if closed:
        shown = next(f for f in files if compact_mod.directories_of(f.key) == closed[-1])
        parts = shown.partitions or [layout.parse_data_key(shown.key).partition]
        click.echo(f"     {shown.key}  ({shown.bytes:,} bytes, rows of partitions {', '.join(map(str, parts))})")


def _demo_batch(archive_url: str, archive, topic: str) -> None:
    """Query the last full hour through the ledger, verify the archive, print its Athena DDL."""
    import time

    from archiver import audit, catalog
    from archiver import query as query_mod

    hour = time.gmtime(time.time() - 3600)
    dt, hh = time.strftime("%Y-%m-%d", hour), time.strftime("%H", hour)
    sql = (f'SELECT event_type, count(*) AS events, round(avg(duration_ms)) AS avg_ms FROM "{topic}" '
           f"WHERE dt = '{dt}' AND hour = '{hh}' GROUP BY event_type ORDER BY events DESC")
    engine = query_mod.Engine(archive)
    try:
        engine.prepare(sql)
        explanation = engine.explain(sql)
        result = engine.run(sql)
    finally:
        engine.close()
    read = explanation.files_read(topic)
    click.echo(f"7. archiver query \"{sql}\"\n   (read {len(read)} of {len(explanation.views[topic].files)} files: "
               "the dt/hour partition columns pruned the rest)")
    click.echo("   " + query_mod.render_table(result).rstrip("\n").replace("\n", "\n   "))
    report = audit.verify(archive, [topic])
    click.echo(f"8. archiver verify --topics {topic}: {report.summary()}")
    (spec,) = catalog.table_specs(None, archive_url, [topic], None, None)
    click.echo("9. archiver ddl --topic " + topic + " (Athena, partition projection: no MSCK REPAIR):\n"
               + spec.ddl() + ";")


def _demo_replay(settings, archive, topic: str, partitions: int) -> None:
    """Replay the last 30 minutes of the demo topic into <topic>-replay and compare with the source."""
    import time

    from archiver import replay as replay_mod
    from archiver import republish
    from archiver.source import kafka as source_kafka

    target = f"{topic}-replay"
    source_kafka.ensure_topic(settings.kafka, target, partitions)
    now = int(time.time() * 1000)
    selection = replay_mod.Selection(topic, start_ms=now - 30 * 60_000, end_ms=now)
    plan = replay_mod.plan(archive, selection)
    reader = replay_mod.Reader(archive, selection)
    publisher = republish.Publisher(settings.kafka, target, "original", source_topic=topic,
                                    producer=settings.kafka_client)
    stats = publisher.publish(reader.batches(plan.partitions, {}), {})
    click.echo(f"5. archiver replay --topic {topic} --from -30m --to now --to-topic {target}: "
               f"{stats.records} records re-published ({plan.files} files read) in {stats.as_dict()['seconds']}s")


def _run_options(fn):
    options = [
        config_option, kafka_option, registry_option, archive_option,
        topics_option("Topics to archive [env ARCHIVER_TOPICS]."),
        click.option("--topic-pattern", help="Regex of topics, instead of --topics [env ARCHIVER_TOPIC_PATTERN]"),
        click.option("--group-id", help="Consumer group (default archiver) [env ARCHIVER_GROUP_ID]"),
        click.option("--metrics-address", help="host:port for /metrics, /healthz, /readyz [env ARCHIVER_METRICS_ADDRESS]"),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@cli.command()
@_run_options
@click.option("--once", is_flag=True, help="Archive up to the end offsets seen at start, commit and exit.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="The --once summary as a line of text or one JSON document.")
@click.pass_context
@_one_line_errors
def run(ctx, config_path, once, fmt, **flags):
    """Archive topics to Parquet in S3 (or file://), exactly once.

    Streams until SIGTERM/SIGINT (flush, commit, exit 0; 130 after SIGINT), or with --once runs as
    a batch job (exit 1 when records were lost to retention before they could be archived).
    """
    import signal

    from archiver import logs
    from archiver.daemon import Daemon

    settings = _settings(config_path, **flags)
    logs.configure(ctx.meta["archiver.log_level"], settings.log_format)
    progress = terminal.Progress(every_s=1.0)

    def show(d: Daemon, force: bool = False) -> None:
        s = d.sink.stats
        progress.show(f"archived {s.records_out:,} of {s.records_in:,} records consumed, "
                      f"{sum(d.lag().values()):,} still to archive", force)

    daemon = Daemon(settings, once=once, progress=show if once and progress.enabled else None)
    try:
        summary = daemon.run()
        if daemon.progress is not None:
            show(daemon, force=True)  # the final count, even for a run shorter than one redraw
    finally:
        progress.close()
    if once:
        _once_summary(summary, fmt)
    if daemon.stopped_by == signal.SIGINT:
        sys.exit(130)
    if once and summary.lost:
        sys.exit(1)


def _once_summary(summary, fmt: str) -> None:
    import json

    if fmt == "json":
        click.echo(json.dumps(_plain(summary)))
    else:
        rate = summary.records_in / summary.seconds if summary.seconds else 0.0
        click.echo(f"archived {summary.records_out} records ({summary.dead_lettered} dead-lettered) from "
                   f"{summary.records_in} consumed into {summary.files} files in {summary.commits} commits; "
                   f"{summary.bytes_in / 1e6:.1f} MB Avro -> {summary.bytes_out / 1e6:.1f} MB Parquet; "
                   f"{summary.seconds:.1f}s, {rate:,.0f} records/s")
    if summary.lost:
        click.echo(f"archiver: error: {summary.lost} records were deleted by Kafka (retention) before they could "
                   "be archived; `archiver status` lists the ranges", err=True)


@cli.command("config")
@_run_options
@click.option("--reference", is_flag=True,
              help="Print the configuration reference (Markdown: every key, its variable and default) instead.")
@_one_line_errors
def show_config(config_path, reference, **flags):
    """Print the resolved configuration (file + environment + flags), secrets masked."""
    import json

    if reference:
        from archiver.configdoc import reference as render

        click.echo(render(), nl=False)
        return
    click.echo(json.dumps(_settings(config_path, **flags).masked(), indent=2))


@cli.command()
@config_option
@archive_option
@click.option("--topic", required=True, help="Archived topic to replay.")
@click.option("--to-topic", help="Target topic (required unless --to-original).")
@click.option("--to-original", is_flag=True, help="Replay into the archived topic's own name.")
@click.option("--from", "from_", help="Start of the time range (record timestamp): ISO-8601, 'now' or -2h.")
@click.option("--to", help="End of the time range, exclusive.")
@click.option("--partitions", help="Source partitions, e.g. 0,3,5.")
@click.option("--offsets", multiple=True, help="PARTITION:FIRST-LAST (inclusive), repeatable.")
@click.option("--key", "keys", multiple=True, help="Exact key (UTF-8), repeatable.")
@click.option("--keys-file", type=click.Path(exists=True, dir_okay=False), help="File with one key per line.")
@click.option("--where", help="SQL condition on value columns, e.g. \"country = 'FR' and duration_ms > 1000\".")
@click.option("--partitioning", type=click.Choice(["original", "key", "round-robin"]), default="original",
              show_default=True, help="original partition, Kafka's murmur2 of the key, or round-robin.")
@click.option("--target-bootstrap-servers", help="Target cluster [env ARCHIVER_TARGET_KAFKA_BOOTSTRAP_SERVERS; "
              "default: the [kafka] settings]")
@click.option("--target-schema-registry-url", help="Register the writer schemas here (subject <to-topic>-value) "
              "and use the new ids [env ARCHIVER_TARGET_SCHEMA_REGISTRY_URL].")
@click.option("--add-lineage-headers", is_flag=True, help="Add archiver.source.topic/partition/offset headers.")
@click.option("--exactly-once", is_flag=True, help="Transactional producer; needs --checkpoint.")
@click.option("--checkpoint", help="Name under which progress is saved; rerunning with it resumes.")
@click.option("--rate", help="Limit: records/s (5000) or bytes/s (10MB).")
@click.option("--checkpoint-every", type=click.IntRange(1), default=10_000, show_default=True,
              help="Records per checkpoint (per transaction with --exactly-once).")
@click.option("--dry-run", is_flag=True, help="Print the plan and produce nothing.")
@_one_line_errors
def replay(config_path, archive_url, topic, to_topic, to_original, from_, to, partitions, offsets, keys, keys_file, where,
           partitioning, target_bootstrap_servers, target_schema_registry_url, add_lineage_headers,
           exactly_once, checkpoint, rate, checkpoint_every, dry_run):
    """Re-publish archived records of TOPIC into Kafka, faithfully and resumably."""
    import json

    from archiver import replay as replay_mod
    from archiver import republish
    from archiver.archive import Archive
    from archiver.errors import ConfigError

    settings = _settings(config_path, {"archive"}, archive_url=archive_url,
                         target_bootstrap_servers=target_bootstrap_servers,
                         target_schema_registry_url=target_schema_registry_url)
    if bool(to_topic) == bool(to_original):
        raise ConfigError("name the target: --to-topic T, or --to-original to write into the archived topic itself")
    if exactly_once and not checkpoint:
        raise ConfigError("--exactly-once needs --checkpoint NAME (it names the transactional producer)")
    selection = _selection(replay_mod, topic, from_, to, partitions, offsets, keys, keys_file, where)
    archive = Archive(settings.open_store())
    target = to_topic or topic
    kafka = _target_kafka(settings)
    buckets = replay_mod.recorded_key_buckets(archive, topic) if selection.keys else None
    plan = replay_mod.plan(archive, selection, buckets)
    if dry_run:  # the same checks of the target as a replay, then the plan
        republish.check_original_partitions(target, republish.target_partitions(kafka, target), partitioning,
                                            (p.partition for p in plan.partitions))
        click.echo(json.dumps(plan.describe() | {"target_topic": target, "partitioning": partitioning}, indent=2))
        return
    saved = None
    if checkpoint:
        saved = (republish.KafkaCheckpoint(kafka, checkpoint) if exactly_once
                 else republish.StoreCheckpoint(archive.store, checkpoint))
    summary = _publish(archive, (selection, republish.selection_spec(selection, from_, to)), plan, buckets, target,
                       partitioning, kafka, settings.target_registry, add_lineage_headers, exactly_once, saved,
                       rate, checkpoint_every, settings.kafka_client)
    click.echo(json.dumps(summary))


def _selection(replay_mod, topic, from_, to, partitions, offsets, keys, keys_file, where):
    import time

    from archiver.errors import ConfigError
    from archiver.units import parse_time

    now = int(time.time() * 1000)
    start = parse_time(from_, now, "--from") if from_ else None
    end = parse_time(to, now, "--to") if to else None
    if start is not None and end is not None and start >= end:
        raise ConfigError(f"--from {from_} is not before --to {to}")
    wanted = [k.encode() for k in keys]
    if keys_file:
        with open(keys_file, encoding="utf-8") as f:
            wanted += [line.rstrip("\n").encode() for line in f if line.strip()]
    try:
        parts = frozenset(int(p) for p in partitions.split(",")) if partitions else None
    except ValueError:
        raise ConfigError(f"--partitions: {partitions!r} is not a comma-separated list of numbers") from None
    return replay_mod.Selection(topic, parts, start, end, replay_mod.parse_offsets(offsets),
                                frozenset(wanted) if wanted else None, where)


def _target_kafka(settings):
    """The target cluster: [target_kafka] (--target-bootstrap-servers, ARCHIVER_TARGET_KAFKA_*) when its
    servers are set, else the [kafka] settings."""
    from archiver.errors import ConfigError

    kafka = settings.target_kafka or settings.kafka
    if not kafka.bootstrap_servers:
        raise ConfigError("target_kafka.bootstrap_servers is not set (flag --target-bootstrap-servers, "
                          "ARCHIVER_TARGET_KAFKA_BOOTSTRAP_SERVERS or, for the same cluster, "
                          "ARCHIVER_KAFKA_BOOTSTRAP_SERVERS)")
    return kafka


def _publish(archive, selected, plan, buckets, target, partitioning, kafka, target_registry, lineage,
             exactly_once, checkpoint, rate, batch_records, kafka_client="auto"):
    """`selected`: the selection and its description (`republish.selection_spec`) for the checkpoint."""
    import sys

    from archiver import replay as replay_mod
    from archiver import republish, runtime

    records_per_s, bytes_per_s = replay_mod.parse_rate(rate)
    limiter = replay_mod.RateLimiter(records_per_s, bytes_per_s) if rate else None
    selection, spec = selected

    def show(stats):
        total = plan.max_records  # of the plan in effect (a resumed replay plans again)
        elapsed = max(1e-6, __import__("time").monotonic() - stats.started)
        eta = (total - stats.records) / (stats.records / elapsed) if stats.records else 0
        click.echo(f"\rreplayed {stats.records:,}/{total:,} records, {stats.bytes / 1e6:.1f} MB, "
                   f"ETA {max(0, eta):.0f}s ", nl=False, err=True)

    publisher = republish.Publisher(kafka, target, partitioning, source_topic=selection.topic, lineage=lineage,
                                    checkpoint=checkpoint, transactional=exactly_once,
                                    rate=limiter, progress=show if sys.stderr.isatty() else None,
                                    batch_records=batch_records, producer=kafka_client)
    progress = {}
    if checkpoint:  # loaded once the publisher fenced an earlier run of the same replay
        progress, resumed = republish.resume(checkpoint, target, selection, spec)
        if resumed != selection:  # the first run's time range
            selection, plan = resumed, replay_mod.plan(archive, resumed, buckets)
    publisher.check_original_partitions(p.partition for p in plan.partitions)
    if target_registry:
        publisher.schema_ids = _register_target_schemas(archive, plan, target, target_registry)
    reader = replay_mod.Reader(archive, selection)
    runtime.tune_gc()
    stats = publisher.publish(reader.batches(plan.partitions, progress), progress)
    if sys.stderr.isatty():
        click.echo("", err=True)
    return stats.as_dict() | {"target_topic": target, "files_read": plan.files, "bytes_read": reader.bytes_read}


def _register_target_schemas(archive, plan, target, registry_settings) -> dict[int, int]:
    import io
    import json

    import pyarrow.parquet as pq

    from archiver.codec.registry import Registry, Rejected
    from archiver.errors import ConfigError
    from archiver.writer.parquet import writer_schemas_of

    schemas: dict[int, str] = {}
    for p in plan.partitions:
        for f in p.files:
            if set(f.schema_ids) - set(schemas):
                meta = pq.read_metadata(io.BytesIO(archive.store.get(f.key))).metadata
                schemas.update(writer_schemas_of(meta))
    mapping = {}
    with Registry(registry_settings) as registry:
        for old_id, text in sorted(schemas.items()):
            if old_id < 0:
                continue
            try:
                mapping[old_id] = registry.register(f"{target}-value", json.loads(text))
            except Rejected as e:  # a 4xx: the registry refuses it (unreachable: TransientError)
                raise ConfigError(f"target schema registry rejected schema id {old_id} for subject "
                                  f"{target}-value: {e.detail}") from None
    return mapping


@cli.command()
@config_option
@archive_option
@topics_option("Topics to compact (default: every archived topic).")
@click.option("--target-size", help="Size merged files grow to (default 128MiB) [env ARCHIVER_COMPACT_TARGET_BYTES].")
@click.option("--row-group-size", default="64MiB", show_default=True,
              help="In-memory bytes per Parquet row group (bounds memory; large groups suit Athena).")
@click.option("--closed-after", help="Compact a time partition this long after its end (wall clock; default 1h) "
              "[env ARCHIVER_COMPACT_CLOSED_AFTER_S].")
@click.option("--grace", help="Delete replaced files this long after their replacement committed (default 15m) "
              "[env ARCHIVER_COMPACT_GRACE_S].")
@click.option("--stale-after", default="1h", show_default=True,
              help="Remove the uploads of a compaction unfinished for this long (a crashed one).")
@click.option("--sort-by", type=click.Choice(["offset", "key"]), default="offset", show_default=True,
              help="Row order in merged files: offset, or key then offset within each row group.")
@click.option("--dry-run", is_flag=True, help="Show what would be merged; change nothing.")
@_one_line_errors
def compact(config_path, archive_url, topics, target_size, row_group_size, closed_after, grace, stale_after, sort_by,
            dry_run):
    """Merge small files of closed time partitions into large ones, through the ledger."""
    import json

    from archiver import compact as compact_mod
    from archiver.archive import Archive
    from archiver.errors import ConfigError
    from archiver.units import parse_duration, parse_size

    run = _settings(config_path, {"archive"}, archive_url=archive_url, compact_target_bytes=target_size,
                    compact_closed_after_s=closed_after, compact_grace_s=grace)
    settings = compact_mod.CompactSettings(
        target_bytes=run.compact_target_bytes, row_group_bytes=parse_size(row_group_size, "--row-group-size"),
        closed_after_s=run.compact_closed_after_s, grace_s=run.compact_grace_s,
        stale_after_s=parse_duration(stale_after, "--stale-after"), sort_by=sort_by)
    for name, size in (("--target-size", settings.target_bytes), ("--row-group-size", settings.row_group_bytes)):
        if size <= 0:
            raise ConfigError(f"{name}: must be positive, got {size}")
    tables = None
    if run.catalog.configured:
        from archiver import tables as tables_mod

        tables = tables_mod.publisher(run)
    progress = terminal.Progress()
    try:
        report = compact_mod.compact(Archive(run.open_store()), list(topics) or None, settings,
                                     dry_run=dry_run, tables=tables, progress=lambda done, total: progress.show(
                                         f"{'planned' if dry_run else 'compacted'} {done}/{total} partitions",
                                         force=done == total))
    finally:
        progress.close()
    for p in [*report.groups, *report.partitions]:
        if p.files_in or p.deleted_files or p.removed_stale:
            click.echo(json.dumps(_plain(p)))
    click.echo(json.dumps({"dry_run": dry_run} | report.totals()))


def _plain(obj) -> dict:
    import dataclasses

    return {k: round(v, 3) if isinstance(v, float) else v for k, v in dataclasses.asdict(obj).items()}


def _table_options(fn):
    """Options shared by `ddl` and `catalog sync`: where the archive is and how topics are laid out."""
    options = [config_option, archive_option,
               topics_option("Archived topics (default: all; --topic is the same option).", "--topic")]
    for option in reversed(options):
        fn = option(fn)
    return fn


@cli.command()
@_table_options
@click.option("--database", help="Qualify the table with this database.")
@click.option("--table", help="Table name (one --topic only; default: the topic, [^a-z0-9_] as _).")
@_one_line_errors
def ddl(config_path, archive_url, topics, database, table):
    """Print Athena CREATE EXTERNAL TABLE statements for archived topics (partition projection)."""
    from archiver import catalog

    specs = catalog.table_specs(config_path, archive_url, topics, database, table)
    click.echo(";\n\n".join(spec.ddl() for spec in specs) + ";")


@cli.group("catalog")
def catalog_group() -> None:
    """Iceberg tables over the archive (publish, status); Hive-directory tables in Glue (sync)."""


@catalog_group.command("publish")
@config_option
@archive_option
@topics_option("Archived topics (default: all).", "--topic")
@_one_line_errors
def catalog_publish(config_path, archive_url, topics):
    """Publish newly committed files to each topic's Iceberg table: one table commit per topic."""
    from archiver import tables

    settings = _settings(config_path, needs=("archive",), archive_url=archive_url)
    for result in tables.publish(settings, topics):
        click.echo(result.line())


@catalog_group.command("status")
@config_option
@archive_option
@click.option("--topic", required=True, help="The archived topic.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@_one_line_errors
def catalog_status(config_path, archive_url, topic, fmt):
    """A topic's Iceberg table: snapshot, files, records, and what is not yet published."""
    from archiver import tables

    doc = tables.status(_settings(config_path, needs=("archive",), archive_url=archive_url), topic)
    click.echo(tables.json_text(doc) if fmt == "json" else tables.status_text(doc))


@catalog_group.command("sync")
@_table_options
@click.option("--database", required=True, help="Glue database (created if missing).")
@click.option("--table", help="Table name (one --topic only; default: the topic, [^a-z0-9_] as _).")
@_one_line_errors
def catalog_sync(config_path, archive_url, topics, database, table):
    """Create or update Glue tables of archived topics; unchanged tables are left alone."""
    from archiver import catalog

    specs = catalog.table_specs(config_path, archive_url, topics, database, table)
    created, results = catalog.sync(specs, specs[0].database, catalog.glue_client())
    if created:
        click.echo(f"{specs[0].database}: database created")
    for result in results:
        click.echo(result.line())


@cli.command()
@config_option
@kafka_option
@archive_option
@click.option("--group-id", help="The archiver's consumer group (default archiver) [env ARCHIVER_GROUP_ID]")
@topics_option("Topics (default: archived topics and run's configured ones).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@_one_line_errors
def status(config_path, bootstrap_servers, archive_url, group_id, topics, fmt):
    """Per partition: archived ranges, size, last commit, lag and Kafka's log start; exit 1 on an alarm."""
    import json

    from archiver import status as status_mod
    from archiver.archive import Archive

    settings = status_mod.load_settings(config_path, {"bootstrap_servers": bootstrap_servers,
                                                      "archive_url": archive_url, "group_id": group_id,
                                                      "topics": topics})
    report = status_mod.status(settings, Archive(settings.open_store()), list(topics) or None)
    click.echo(json.dumps(report.to_dict(), indent=2) if fmt == "json" else status_mod.render_table(report))
    sys.exit(0 if report.healthy else 1)


@cli.command()
@config_option
@archive_option
@topics_option("Topics to audit (default: every archived topic).")
@click.option("--quick", is_flag=True, help="Ledger and object listing only; download no data.")
@click.option("--strict", is_flag=True, help="Orphan objects are problems too (exit 1).")
@click.option("--workers", type=click.IntRange(1, 64), default=4, show_default=True, help="Files read in parallel.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@_one_line_errors
def verify(config_path, archive_url, topics, quick, strict, workers, fmt):
    """Audit the archive against its ledger: files, checksums, rows, gaps, duplicates, orphans."""
    import json

    from archiver import audit
    from archiver.archive import Archive

    settings = _settings(config_path, {"archive"}, archive_url=archive_url)
    progress = terminal.Progress()

    def checked(r: audit.Report, force: bool = False) -> None:
        progress.show(f"checked {r.checked:,} files of {r.partitions} partition(s)", force)

    try:
        report = audit.verify(Archive(settings.open_store()), list(topics) or None, quick=quick,
                              workers=workers, progress=checked)
        checked(report, force=True)
    finally:
        progress.close()
    if fmt == "json":
        click.echo(json.dumps(report.to_dict(strict), indent=2))
    else:
        for problem in report.problems:
            click.echo(f"problem: {problem}")
        for orphan in report.orphans:
            click.echo(f"{'problem' if strict else 'warning'}: {orphan}")
        click.echo(report.summary())
    sys.exit(terminal.EXIT_OK if report.passes(strict) else terminal.EXIT_FAILURE)


@cli.command()
@click.argument("sql", required=False)
@config_option
@archive_option
@click.option("--topic", help="Instead of SQL: this topic's records in time order.")
@click.option("--key", help="With --topic: one key's records (UTF-8), read from its key bucket only.")
@click.option("--from", "from_", help="With --topic: record timestamp from (ISO-8601, 'now' or -2h).")
@click.option("--to", help="With --topic: record timestamp before (exclusive).")
@click.option("--where", help="With --topic: an extra SQL condition, e.g. \"country = 'FR'\".")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "jsonl", "parquet"]), default="table",
              show_default=True, help="Output format.")
@click.option("--output", type=click.Path(dir_okay=False), help="Write to this file (required for parquet).")
@click.option("--explain", is_flag=True, help="Run it, then print the files read (and bytes) and the plan.")
@_one_line_errors
def query(sql, config_path, archive_url, topic, key, from_, to, where, fmt, output, explain):
    """Run SQL over the archive with DuckDB: one view per topic ("web-events", alias web_events)."""
    from archiver import query as query_mod
    from archiver.archive import Archive
    from archiver.errors import ConfigError

    settings = _settings(config_path, {"archive"}, archive_url=archive_url)
    if fmt == "parquet" and not output and not explain:
        raise ConfigError("--format parquet needs --output FILE")
    engine = query_mod.Engine(Archive(settings.open_store()))
    try:
        text = query_mod.statement(engine, sql, topic, key, from_, to, where)
        engine.prepare(text)
        if explain:
            click.echo(engine.explain(text).render())
            return
        result = engine.run(text)
    finally:
        engine.close()
    if fmt == "parquet":
        query_mod.write_parquet(result, output)
        return
    with click.open_file(output or "-", "w", encoding="utf-8") as out:
        if fmt == "table":
            out.write(query_mod.render_table(result))
        else:
            (query_mod.write_csv if fmt == "csv" else query_mod.write_jsonl)(result, out)


def main() -> None:
    cli(prog_name="archiver")
