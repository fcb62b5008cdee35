"""The `archiver` command line: parse, call one function, render. The only module that prints."""

from __future__ import annotations

import functools
import logging
import sys

import click

from archiver import __version__
from archiver.errors import ArchiverError


def _one_line_errors(fn):
    """Turn archiver's errors into one line on stderr and their exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ArchiverError as e:
            click.echo(f"archiver: error: {e}", err=True)
            sys.exit(e.exit_code)

    return wrapper


kafka_option = click.option("--bootstrap-servers", envvar="ARCHIVER_KAFKA_BOOTSTRAP_SERVERS",
                            help="Kafka bootstrap servers [env ARCHIVER_KAFKA_BOOTSTRAP_SERVERS]")
registry_option = click.option("--schema-registry-url", envvar="ARCHIVER_SCHEMA_REGISTRY_URL",
                               help="Schema Registry URL [env ARCHIVER_SCHEMA_REGISTRY_URL]")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="archiver")
@click.option("-v", "--verbose", count=True, help="More logging (-v INFO, -vv DEBUG).")
def cli(verbose: int) -> None:
    """archiver: a durable, queryable, replayable copy of your Kafka topics in S3.

    Reads Avro topics (Confluent wire format + Schema Registry), writes Parquet partitioned by
    time and key to S3 with exactly-once guarantees, and replays archived records into Kafka.
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@cli.command()
@kafka_option
@registry_option
@click.option("--archive-url", envvar="ARCHIVER_ARCHIVE_URL", help="Archive [env ARCHIVER_ARCHIVE_URL]")
@click.option("--topic", default="web-events", show_default=True, help="Topic to create and fill.")
@click.option("--count", default=20000, show_default=True, type=click.IntRange(1), help="Events to produce.")
@click.option("--partitions", default=6, show_default=True, type=click.IntRange(1))
@_one_line_errors
def demo(bootstrap_servers, schema_registry_url, archive_url, topic, count, partitions):
    """Produce web-analytics events into TOPIC, archive them with `run --once`, show the archive."""
    from archiver import demo as demo_events
    from archiver.archive import Archive
    from archiver.codec.registry import Registry
    from archiver.config import load_run_settings
    from archiver.daemon import Daemon
    from archiver.store import open_store

    settings = load_run_settings(None, flags={"bootstrap_servers": bootstrap_servers, "archive_url": archive_url,
                                              "schema_registry_url": schema_registry_url, "topics": topic,
                                              "group_id": "archiver-demo"})
    with Registry(settings.registry) as registry:
        schema_id = demo_events.produce(settings.kafka, registry, topic, count, partitions)
    click.echo(f"1. produced {count} web-analytics events to {topic!r} ({partitions} partitions, "
               f"schema id {schema_id}, keys = session ids, headers source/trace-id)")
    summary = Daemon(settings, once=True).run()
    click.echo(f"2. archiver run --once: {summary.records_out} records in {summary.files} Parquet files, "
               f"{summary.bytes_in / 1e6:.2f} MB Avro -> {summary.bytes_out / 1e6:.2f} MB Parquet "
               f"in {summary.seconds:.1f}s")
    archive = Archive(open_store(settings.archive_url))
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


def _run_options(fn):
    options = [
        click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), envvar="ARCHIVER_CONFIG",
                     help="TOML config file [env ARCHIVER_CONFIG]"),
        kafka_option, registry_option,
        click.option("--archive-url", help="s3://bucket/prefix or file:///path [env ARCHIVER_ARCHIVE_URL]"),
        click.option("--topics", help="Comma-separated topics [env ARCHIVER_TOPICS]"),
        click.option("--topic-pattern", help="Regex of topics, instead of --topics [env ARCHIVER_TOPIC_PATTERN]"),
        click.option("--group-id", help="Consumer group (default archiver) [env ARCHIVER_GROUP_ID]"),
        click.option("--metrics-address", help="host:port for /metrics, /healthz, /readyz [env ARCHIVER_METRICS_ADDRESS]"),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _load(config_path, **flags):
    from archiver.config import load_run_settings

    return load_run_settings(config_path, flags=flags)


@cli.command()
@_run_options
@click.option("--once", is_flag=True, help="Archive up to the end offsets seen at start, commit and exit.")
@_one_line_errors
def run(config_path, once, **flags):
    """Archive topics to Parquet in S3 (or file://), exactly once.

    Streams until SIGTERM/SIGINT (flush, commit, exit 0), or with --once runs as a batch job.
    """
    from archiver.daemon import Daemon

    settings = _load(config_path, **flags)
    _configure_logging(settings.log_format)
    summary = Daemon(settings, once=once).run()
    if once:
        rate = summary.records_in / summary.seconds if summary.seconds else 0.0
        click.echo(f"archived {summary.records_out} records ({summary.dead_lettered} dead-lettered) from "
                   f"{summary.records_in} consumed into {summary.files} files in {summary.commits} commits; "
                   f"{summary.bytes_in / 1e6:.1f} MB Avro -> {summary.bytes_out / 1e6:.1f} MB Parquet; "
                   f"{summary.seconds:.1f}s, {rate:,.0f} records/s")


@cli.command("config")
@_run_options
@_one_line_errors
def show_config(config_path, **flags):
    """Print the resolved configuration (file + environment + flags), secrets masked."""
    import json

    click.echo(json.dumps(_load(config_path, **flags).masked(), indent=2))


def _configure_logging(fmt: str) -> None:
    root = logging.getLogger()
    if root.level > logging.INFO:
        root.setLevel(logging.INFO)
    if fmt == "json":
        from archiver.logs import JsonFormatter

        for handler in root.handlers:
            handler.setFormatter(JsonFormatter())


def main() -> None:
    cli(prog_name="archiver")
