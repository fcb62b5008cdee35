"""An outage is never bad data: the registry and the dead-letter topic out, on the real services.

Only records that can never decode go to the dead-letter topic. A registry that cannot answer
(unreachable, 503) pauses the partitions that need it, nothing is committed past them, and the
archive is exactly once after it recovers.
"""

from __future__ import annotations

import json
import signal
import time
from urllib.parse import urlparse

from archiver import demo
from archiver.archive import Archive
from archiver.codec import wire
from archiver.source import kafka as source_kafka
from archiver.store import open_store
from tests.conftest import _free_ports
from tests.integration.conftest import ARCHIVER
from tests.integration.faults import Proxy
from tests.integration.test_run import (
    START_MS,
    assert_exactly_once,
    run_archiver,
    source_offsets,
    write_config,
)
from tests.integration.test_run_resilience import _safe, metrics, start_daemon, status, wait_for

V1 = {"type": "record", "name": "Reading", "fields": [{"name": "n", "type": "long"}]}
V2 = {"type": "record", "name": "Reading", "fields": [{"name": "n", "type": "long"},
                                                        {"name": "unit", "type": "string", "default": "C"}]}


def produce(kafka, topic: str, schema_id: int, first: int, count: int, partitions: int = 3,
            v2: bool = False) -> None:
    """Records `first`.. of the small schema (V2 adds `unit`), spread over the partitions."""
    producer = source_kafka.producer(kafka)
    for n in range(first, first + count):
        datum = _long(n) + (b"\x02C" if v2 else b"")
        producer.produce(topic, wire.frame(schema_id, datum), f"k{n}".encode(), partition=n % partitions,
                         timestamp=START_MS + n)
        producer.poll(0)
    source_kafka.flush(producer)


def _long(n: int) -> bytes:
    """Avro's zig-zag varint of a long."""
    z, out = (n << 1) ^ (n >> 63), bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def registry_port(services) -> int:
    return urlparse(services.registry_url).port


def dead_letters(kafka, topic: str) -> list:
    return list(source_kafka.read_to_end(kafka, topic)) if topic in source_kafka.list_topics(kafka) else []


def commits(archive: Archive, topic: str) -> list:
    return [e for p in archive.partitions(topic) for e in archive.entries(topic, p) if e.kind == "commit"]


def test_a_registry_outage_mid_stream_pauses_dead_letters_nothing_and_catches_up(
        services, kafka, registry, archive_env, unique, tmp_path):
    source_kafka.ensure_topic(kafka, unique, 3)
    v1 = registry.register(f"{unique}-value", V1)
    produce(kafka, unique, v1, 0, 300)
    proxy = Proxy(registry_port(services))
    (metrics_port,) = _free_ports(1)
    dlq = f"{unique}-dlq"
    env = archive_env | {"ARCHIVER_SCHEMA_REGISTRY_URL": services.registry_url.replace(
                             f":{registry_port(services)}", f":{proxy.port}"),
                         "ARCHIVER_METRICS_ADDRESS": f"127.0.0.1:{metrics_port}", "ARCHIVER_DLQ_TOPIC": dlq,
                         "ARCHIVER_CONFIG": write_config(tmp_path, interval_s=0.5)}
    daemon = start_daemon(env, unique, tmp_path / "daemon.log")
    try:
        wait_for(lambda: _safe(metrics_port).get("archiver_records_out_total", 0) >= 300, 60, "the first 300")
        proxy.cut()
        v2 = registry.register(f"{unique}-value", V2)  # a new writer schema the daemon must look up
        produce(kafka, unique, v2, 300, 300, v2=True)
        wait_for(lambda: _safe(metrics_port).get('archiver_waiting_partitions{dependency="registry"}', 0) >= 1,
                 60, "partitions to wait for the registry")
        assert status(metrics_port, "/readyz") == 503
        time.sleep(3)
        proxy.answer(503)  # reachable again, but overloaded: still an outage
        time.sleep(4)
        m = metrics(metrics_port)
        assert m["archiver_records_out_total"] == 300, "nothing committed past the outage"
        assert m["archiver_dead_lettered_total"] == 0
        assert m['archiver_outages_total{dependency="registry"}'] >= 1
        assert status(metrics_port, "/readyz") == 503

        proxy.restore()
        wait_for(lambda: _safe(metrics_port).get("archiver_records_out_total", 0) >= 600, 90, "catching up")
        wait_for(lambda: status(metrics_port, "/readyz") == 200, 30, "ready again")
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
        proxy.close()
    log = (tmp_path / "daemon.log").read_text()
    assert daemon.returncode == 0, log[-2000:]
    assert "waiting for the schema registry" in log
    assert dead_letters(kafka, dlq) == []
    archive = Archive(open_store(archive_env["ARCHIVER_ARCHIVE_URL"]))
    assert_exactly_once(archive, unique, source_offsets(kafka, unique))
    assert archive.read_topic(unique)["unit"].to_pylist().count("C") == 300


def test_run_once_with_the_registry_down_at_start_gives_up_commits_nothing_then_archives(
        services, kafka, registry, archive_env, unique):
    source_kafka.ensure_topic(kafka, unique, 2)
    produce(kafka, unique, registry.register(f"{unique}-value", V1), 0, 200, partitions=2)
    (closed,) = _free_ports(1)  # nothing listens there
    dlq = f"{unique}-dlq"
    env = archive_env | {"ARCHIVER_DLQ_TOPIC": dlq, "ARCHIVER_OUTAGE_TIMEOUT_S": "4",
                         "ARCHIVER_SCHEMA_REGISTRY_URL": f"http://127.0.0.1:{closed}/apis/ccompat/v7"}
    started = time.monotonic()
    result = run_archiver(env, "--once", "--topics", unique, check=False, timeout=120)
    assert result.returncode == 1, result.stderr[-2000:]
    assert time.monotonic() - started < 60
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("archiver: error: gave up after waiting 4s for the schema registry"), last
    archive = Archive(open_store(archive_env["ARCHIVER_ARCHIVE_URL"]))
    assert commits(archive, unique) == [], "nothing committed"
    assert dead_letters(kafka, dlq) == []

    result = run_archiver(archive_env | {"ARCHIVER_DLQ_TOPIC": dlq}, "--once", "--topics", unique)
    assert "archived 200 records (0 dead-lettered)" in result.stdout
    assert_exactly_once(archive, unique, source_offsets(kafka, unique))


def test_a_missing_dead_letter_topic_is_created_at_start_with_the_configured_partitions(
        services, kafka, registry, archive_env, unique):
    demo.produce(kafka, registry, unique, 10, partitions=1, start_ms=START_MS, span_ms=1000)
    dlq = f"{unique}-dlq"
    result = run_archiver(archive_env | {"ARCHIVER_DLQ_TOPIC": dlq, "ARCHIVER_DLQ_PARTITIONS": "2"},
                          "--once", "--topics", unique)
    assert "archived 10 records" in result.stdout
    assert source_kafka.list_topics(kafka)[dlq] == 2


def test_a_missing_dead_letter_topic_that_may_not_be_created_stops_before_consuming(
        services, kafka, registry, archive_env, unique):
    demo.produce(kafka, registry, unique, 10, partitions=1, start_ms=START_MS, span_ms=1000)
    dlq = f"{unique}-dlq"
    refused = {"ARCHIVER_DLQ_CREATE": "false"}
    too_many_replicas = {"ARCHIVER_DLQ_REPLICATION_FACTOR": "3"}  # one broker: the broker refuses it
    for extra, why in ((refused, "run.dlq_create is off"), (too_many_replicas, "could not be created")):
        started = time.monotonic()
        result = run_archiver(archive_env | {"ARCHIVER_DLQ_TOPIC": dlq} | extra, "--once", "--topics", unique,
                              check=False, timeout=120)
        assert result.returncode == 1, result.stderr[-2000:]
        assert time.monotonic() - started < 60
        errors = [line for line in result.stderr.splitlines() if line.startswith("archiver: error:")]
        assert len(errors) == 1 and f"dead-letter topic {dlq!r} does not exist" in errors[0] and why in errors[0]
        assert "Traceback" not in result.stderr
    archive = Archive(open_store(archive_env["ARCHIVER_ARCHIVE_URL"]))
    assert archive.partitions(unique) == [] or commits(archive, unique) == []
    assert dlq not in source_kafka.list_topics(kafka)


def test_metrics_endpoints_answer_head_and_show_build_and_process_info(services, kafka, registry, archive_env,
                                                                      unique, tmp_path):
    import urllib.request

    demo.produce(kafka, registry, unique, 50, partitions=1, start_ms=START_MS, span_ms=1000)
    (metrics_port,) = _free_ports(1)
    env = archive_env | {"ARCHIVER_METRICS_ADDRESS": f"127.0.0.1:{metrics_port}",
                         "ARCHIVER_CONFIG": write_config(tmp_path, interval_s=60)}
    daemon = start_daemon(env, unique, tmp_path / "daemon.log")
    try:
        wait_for(lambda: _safe(metrics_port).get("archiver_records_in_total", 0) >= 50, 60, "consuming")
        m = metrics(metrics_port)
        assert m[f'archiver_records_in_total{{topic="{unique}"}}'] == 50
        # buffered, not committed (interval 60 s): still lag
        lag = f'archiver_consumer_lag{{partition="0",topic="{unique}"}}'
        wait_for(lambda: lag in _safe(metrics_port), 30, "the lag gauge")
        assert metrics(metrics_port)[lag] == 50
        assert any(k.startswith("archiver_build_info{") for k in m)
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        assert "process_resident_memory_bytes" in text
        for path in ("/healthz", "/readyz", "/metrics"):
            request = urllib.request.Request(f"http://127.0.0.1:{metrics_port}{path}", method="HEAD")
            with urllib.request.urlopen(request, timeout=5) as response:
                assert response.status == 200 and response.read() == b""
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
    assert daemon.returncode == 0


def test_run_once_shows_progress_on_a_terminal_and_a_json_summary(services, kafka, registry, archive_env, unique):
    from tests.terminal import on_a_terminal

    demo.produce(kafka, registry, unique, 3000, partitions=2, start_ms=START_MS, span_ms=1000)
    code, out, shown = on_a_terminal([ARCHIVER, "run", "--once", "--topics", unique, "--format", "json", "-q"],
                                     archive_env)
    assert code == 0, shown[-2000:]
    summary = json.loads(out)
    assert (summary["records_out"], summary["lost"], summary["dead_lettered"]) == (3000, 0, 0)
    assert "\rarchived " in shown and "records consumed" in shown
