"""The layout the archive records, on the real services: `run` writes it and refuses another one,
`query` and `ddl` read it (no configuration), and a field-partitioned topic is queried by value."""

from __future__ import annotations

import collections
import csv
import io
import json
import os

import pyarrow.compute as pc
import pytest

from archiver import demo, layout, layouts
from archiver.archive import Archive
from archiver.store import open_store
from tests.integration.conftest import archive_demo, archiver
from tests.integration.test_catalog import parse_ddl

START_MS = 1_764_000_000_000
FIELD = ('[defaults]\nkey_partitioning = "field"\nkey_field = "country"\nkey_field_values = ["FR", "DE"]\n')




def no_config(env: dict) -> dict:
    return {k: v for k, v in env.items() if k != "ARCHIVER_CONFIG"}


def snapshot(url: str) -> dict[str, int]:
    return dict(open_store(url).list_sizes(""))


@pytest.fixture(scope="module")
def by_country(services, tmp_path_factory):
    """A topic archived with key_partitioning = field (country, FR and DE) by `run --once`."""
    config = tmp_path_factory.mktemp("layouts") / "archiver.toml"
    config.write_text(FIELD)
    return archive_demo(services, f"by-country-{os.urandom(3).hex()}", records=600,
                        config=str(config))


def test_run_records_the_layout_of_the_topic(by_country):
    recorded = json.loads(open_store(by_country.url).get(layout.layout_key(by_country.topic)))
    assert recorded["format"] == layouts.FORMAT
    assert recorded["key"] == {"partitioning": "field", "field": "country", "values": ["DE", "FR"]}
    assert recorded["time"] == {"source": "timestamp"} and recorded["granularity"] == "hour"


def test_query_shows_the_files_values_and_the_directory_as_country_partition(by_country):
    result = archiver(no_config(by_country.env), "query", "--format", "csv",
                      f'SELECT country, country_partition, count(*) AS n FROM "{by_country.topic}" GROUP BY ALL')
    assert result.returncode == 0, result.stderr
    got = {(r["country"], r["country_partition"]): int(r["n"]) for r in csv.DictReader(io.StringIO(result.stdout))}
    table = Archive(open_store(by_country.url)).read_topic(by_country.topic)
    expected = collections.Counter((c, c if c in ("FR", "DE") else "_other") for c in table["country"].to_pylist())
    assert got == dict(expected)
    assert got.get(("GB", "_other")), "GB events are shown as GB, in the _other directory"


def test_query_key_and_ddl_need_no_configuration(by_country):
    env = no_config(by_country.env)
    table = Archive(open_store(by_country.url)).read_topic(by_country.topic)
    key = table["_kafka_key"][0].as_py()
    result = archiver(env, "query", "--topic", by_country.topic, "--key", key.decode(), "--format", "jsonl")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == pc.sum(pc.equal(table["_kafka_key"], key)).as_py() > 0
    assert {r["country"] for r in rows} == {table["country"][0].as_py()}

    ddl = archiver(env, "ddl", "--topic", by_country.topic)
    assert ddl.returncode == 0, ddl.stderr
    _, partitions, location, props = parse_ddl(ddl.stdout)
    assert partitions == ["dt", "hour", "country_partition"]
    assert props["projection.country_partition.values"] == "DE,FR,_other,_null"


@pytest.mark.parametrize("config, message", [
    (FIELD.replace('["FR", "DE"]', '["FR", "DE", "GB"]'),
     'defaults.key_field_values: the archive of {t} was written with ["DE", "FR"], the configuration says '
     '["DE", "FR", "GB"]'),
    ('[defaults]\nkey_partitioning = "hash"\nkey_buckets = 8\n',
     "defaults.key_partitioning: the archive of {t} was written with field, the configuration says hash"),
])
def test_run_with_a_conflicting_layout_exits_2_with_one_line_and_writes_nothing(services, kafka, registry,
                                                                                 by_country, tmp_path, config,
                                                                                 message):
    demo.produce(kafka, registry, by_country.topic, 50, partitions=by_country.partitions, start_ms=START_MS,
                 span_ms=1000)
    conflicting = tmp_path / "conflicting.toml"
    conflicting.write_text(config)
    before = snapshot(by_country.url)
    result = archiver(by_country.env | {"ARCHIVER_CONFIG": str(conflicting)}, "run", "--once",
                      "--topics", by_country.topic)
    assert result.returncode == 2
    # the last line: third-party INFO lines may precede it
    assert result.stderr.splitlines()[-1] == (f"archiver: error: {message.format(t=by_country.topic)} "
                                              f"(see README: changing a topic's layout)")
    assert "Traceback" not in result.stderr
    assert snapshot(by_country.url) == before


def test_a_topic_found_by_pattern_is_refused_when_assigned(services, kafka, registry, archive_env, unique,
                                                            tmp_path):
    topic = f"{unique}-p"
    demo.produce(kafka, registry, topic, 40, partitions=2, start_ms=START_MS, span_ms=1000)
    url = archive_env["ARCHIVER_ARCHIVE_URL"]
    layouts.record(open_store(url), topic, layouts.TopicLayout(key_buckets=4))
    before = snapshot(url)
    result = archiver(archive_env | {"ARCHIVER_TOPIC_PATTERN": f"^{unique}-.*"}, "run", "--once")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"archiver: error: defaults.key_buckets: the archive of {topic} was written with 4, the configuration "
        f"says 16 (see README: changing a topic's layout)")
    assert snapshot(url) == before
