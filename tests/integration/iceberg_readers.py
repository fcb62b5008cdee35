"""Independent readers of archiver's Iceberg tables: DuckDB's iceberg extension (and pyiceberg)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import duckdb

from archiver.archive import Archive
from archiver.config import load_run_settings
from archiver.store import open_store
from archiver.tables import Publisher, open_catalog


def extension(name: str) -> Path:
    spec = importlib.util.find_spec(f"duckdb_extension_{name}")
    return Path(spec.submodule_search_locations[0]) / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"


def duckdb_connection(env: dict) -> duckdb.DuckDBPyConnection:
    """DuckDB with httpfs, avro and iceberg loaded from their wheels, and a secret for the S3 server."""
    con = duckdb.connect()
    for name in ("httpfs", "avro", "iceberg"):
        con.execute(f"LOAD '{extension(name)}'")
    endpoint = env["AWS_ENDPOINT_URL"].split("://", 1)[1]
    con.execute(f"CREATE SECRET (TYPE s3, KEY_ID '{env['AWS_ACCESS_KEY_ID']}', SECRET '{env['AWS_SECRET_ACCESS_KEY']}', "
                f"REGION '{env['AWS_DEFAULT_REGION']}', ENDPOINT '{endpoint}', URL_STYLE 'path', USE_SSL false)")
    return con


def publisher(env: dict) -> Publisher:
    settings = load_run_settings(None, env, needs=frozenset({"archive"}))
    return Publisher(Archive(open_store(settings.archive_url)), open_catalog(settings.catalog, settings.archive_url),
                     settings.catalog)


def table(env: dict, topic: str):
    return publisher(env).load(topic)


def duckdb_counts(env: dict, metadata_location: str, where: str = "") -> tuple[int, int]:
    """(rows, distinct (partition, offset)) DuckDB reads through the table's metadata."""
    con = duckdb_connection(env)
    sql = (f"SELECT count(*), count(DISTINCT (_kafka_partition, _kafka_offset)) FROM iceberg_scan('{metadata_location}')"
           + (f" WHERE {where}" if where else ""))
    rows, distinct = con.execute(sql).fetchone()
    return rows, distinct


def duckdb_files_read(env: dict, metadata_location: str, where: str) -> int:
    """How many data files DuckDB's iceberg scan opens for a filtered count (its own profile)."""
    con = duckdb_connection(env)
    plan = con.execute(f"EXPLAIN ANALYZE SELECT count(*) FROM iceberg_scan('{metadata_location}') WHERE {where}"
                       ).fetchone()[1]
    match = re.search(r"Total Files Read:\s*([\d,]+)", plan)
    assert match, plan
    return int(match[1].replace(",", ""))


def summary_positions(tbl) -> dict[int, int]:
    raw = tbl.current_snapshot().summary.additional_properties["archiver.ledger"]
    return {int(p): s for p, s in json.loads(raw).items()}
