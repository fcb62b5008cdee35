"""Independent readers of archiver's Iceberg tables: Spark 4 with Iceberg's runtime, DuckDB's iceberg
extension, and pyiceberg."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import duckdb

from archiver.archive import Archive
from archiver.config import load_run_settings
from archiver.query import extension_path
from archiver.store import open_store
from archiver.tables import Publisher, open_catalog


def duckdb_connection(env: dict) -> duckdb.DuckDBPyConnection:
    """DuckDB with httpfs, avro and iceberg loaded from their wheels, and a secret for the S3 server."""
    con = duckdb.connect()
    for name in ("httpfs", "avro", "iceberg"):
        con.execute(f"LOAD '{extension_path(name)}'")
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


# --- Spark 4 with Iceberg's own runtime (one JVM per test session) ----------------------------------

ICEBERG_VERSION = "1.10.0"
SPARK_JARS = (("org.apache.iceberg", "iceberg-spark-runtime-4.0_2.13", ICEBERG_VERSION),
              ("org.apache.iceberg", "iceberg-aws-bundle", ICEBERG_VERSION),  # S3FileIO
              ("org.xerial", "sqlite-jdbc", "3.50.3.0"))  # Iceberg's JdbcCatalog on the SQLite catalog


def maven_jar(group: str, artifact: str, version: str) -> Path:
    """A jar from Maven Central through the local repository (~/.m2, fetched by mvn once)."""
    path = (Path.home() / ".m2" / "repository" / group.replace(".", "/") / artifact / version
            / f"{artifact}-{version}.jar")
    if not path.is_file():
        subprocess.run(["mvn", "-q", "-B", "dependency:get", f"-Dartifact={group}:{artifact}:{version}",
                        "-Dtransitive=false"], check=True, timeout=900)
    return path


def spark_session(env: dict):
    """Spark 4 reading archiver's SQL catalog as Iceberg's JdbcCatalog named `archiver` (the name
    pyiceberg gives it), data and metadata through Iceberg's S3FileIO."""
    from pyspark.sql import SparkSession

    sqlite = env["ARCHIVER_CATALOG_URI"].removeprefix("sqlite:///")
    c = "spark.sql.catalog.archiver"
    builder = (SparkSession.builder.master("local[2]").appName("archiver-tests")
               .config("spark.jars", ",".join(str(maven_jar(*jar)) for jar in SPARK_JARS))
               .config("spark.sql.extensions", "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions")
               .config(c, "org.apache.iceberg.spark.SparkCatalog")
               .config(f"{c}.catalog-impl", "org.apache.iceberg.jdbc.JdbcCatalog")
               .config(f"{c}.uri", f"jdbc:sqlite:{sqlite}")
               # the catalog tables exist (pyiceberg made them, schema V1); checking for them at start
               # leaves a read lock on the SQLite file that blocks every later commit
               .config(f"{c}.jdbc.init-catalog-tables", "false")
               .config(f"{c}.jdbc.schema-version", "V1")
               .config(f"{c}.warehouse", env["ARCHIVER_ARCHIVE_URL"])
               .config(f"{c}.io-impl", "org.apache.iceberg.aws.s3.S3FileIO")
               .config(f"{c}.s3.endpoint", env["AWS_ENDPOINT_URL"])
               .config(f"{c}.s3.path-style-access", "true")
               .config(f"{c}.client.region", env["AWS_DEFAULT_REGION"])
               .config(f"{c}.cache-enabled", "false")  # every query sees the newest snapshot
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.sql.adaptive.enabled", "false")  # a plain plan to read scan metrics from
               .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
               .config("spark.driver.memory", "1g").config("spark.sql.shuffle.partitions", "2"))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def spark_table(topic: str) -> str:
    return f"archiver.archiver.{topic.lower().replace('-', '_').replace('.', '_')}"


def spark_counts(spark, topic: str, where: str = "") -> tuple[int, int, dict[str, int]]:
    """(rows, distinct (partition, offset), the Iceberg scan's own metrics) Spark reads."""
    df = spark.sql(f"SELECT count(*) AS n, count(DISTINCT _kafka_partition, _kafka_offset) AS d "
                   f"FROM {spark_table(topic)}" + (f" WHERE {where}" if where else ""))
    row = df.collect()[0]
    metrics: dict[str, int] = {}
    leaves = df._jdf.queryExecution().executedPlan().collectLeaves()
    for i in range(leaves.size()):
        leaf_metrics = leaves.apply(i).metrics()
        names = leaf_metrics.keysIterator()
        while names.hasNext():
            name = names.next()
            metrics[name] = metrics.get(name, 0) + int(leaf_metrics.apply(name).value())
    return row["n"], row["d"], metrics
