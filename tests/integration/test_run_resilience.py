"""`archiver run` under rebalances and an S3 outage: real Kafka, registry and S3."""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request

from archiver import demo
from archiver.archive import Archive
from archiver.store import open_store
from tests.conftest import _free_ports
from tests.integration.faults import Proxy
from tests.integration.test_run import (
    ARCHIVER,
    START_MS,
    assert_exactly_once,
    run_archiver,
    source_offsets,
    write_config,
)


def start_daemon(env: dict, topic: str, log) -> subprocess.Popen:
    with open(log, "w") as f:  # a file, not a pipe: a full pipe would block the daemon
        return subprocess.Popen([ARCHIVER, "-v", "run", "--topics", topic], env=env, stderr=f)


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def metrics(port: int) -> dict[str, float]:
    """Every archiver_* series by name and labels; a labelled family also by its name alone, summed."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"^(archiver_[a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$", line)
        if m:
            out[m[1] + (m[2] or "")] = float(m[3])
            if m[2]:
                out[m[1]] = out.get(m[1], 0.0) + float(m[3])
    return out


def status(port: int, path: str) -> int:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5).status
    except urllib.error.HTTPError as e:
        return e.code


def test_two_daemons_in_one_group_with_rebalances_mid_stream(services, kafka, registry, archive_env, unique,
                                                             tmp_path):
    demo.produce(kafka, registry, unique, 6000, partitions=6, start_ms=START_MS, span_ms=60_000)
    env = archive_env | {"ARCHIVER_CONFIG": write_config(tmp_path, max_records=400, interval_s=0.5)}
    stop = threading.Event()

    def keep_producing():
        batch = 0
        while not stop.is_set():
            batch += 1
            demo.produce(kafka, registry, unique, 300, partitions=6, start_ms=START_MS + batch * 1000, span_ms=1000)
            time.sleep(0.2)

    producer = threading.Thread(target=keep_producing)
    producer.start()
    a = start_daemon(env, unique, tmp_path / "a.log")
    time.sleep(4)
    b = start_daemon(env, unique, tmp_path / "b.log")
    time.sleep(6)
    a.send_signal(signal.SIGTERM)  # clean leave: b takes over a's partitions
    a.wait(timeout=60)
    time.sleep(4)
    stop.set()
    producer.join()
    b.send_signal(signal.SIGTERM)
    b.wait(timeout=60)
    assert a.returncode == 0, (tmp_path / "a.log").read_text()[-2000:]
    assert b.returncode == 0, (tmp_path / "b.log").read_text()[-2000:]

    run_archiver(env, "--once", "--topics", unique)

    archive = Archive(open_store(archive_env["ARCHIVER_ARCHIVE_URL"]))
    assert_exactly_once(archive, unique, source_offsets(kafka, unique))
    writers = {e.writer.split(":")[1] for p in archive.partitions(unique) for e in archive.entries(unique, p)
               if e.kind == "commit"}
    assert {str(a.pid), str(b.pid)} <= writers, "both daemons committed"


def test_s3_outage_pauses_with_bounded_memory_then_catches_up(services, kafka, registry, archive_env, unique,
                                                             tmp_path):
    s3_port = int(services.env["AWS_ENDPOINT_URL"].rsplit(":", 1)[1])
    proxy = Proxy(s3_port)
    (metrics_port,) = _free_ports(1)
    cap = 4 * 1024 * 1024
    env = archive_env | {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}",
                         "ARCHIVER_METRICS_ADDRESS": f"127.0.0.1:{metrics_port}",
                         "ARCHIVER_MAX_BUFFER_BYTES": str(cap),
                         "ARCHIVER_CONFIG": write_config(tmp_path, interval_s=0.5, max_records=2000)}
    demo.produce(kafka, registry, unique, 2000, partitions=3, start_ms=START_MS, span_ms=10_000)
    daemon = start_daemon(env, unique, tmp_path / "daemon.log")
    try:
        wait_for(lambda: _safe(metrics_port).get("archiver_records_out_total", 0) >= 2000, 60, "the first 2000 records")
        assert status(metrics_port, "/readyz") == 200 and status(metrics_port, "/healthz") == 200

        proxy.cut()
        demo.produce(kafka, registry, unique, 30_000, partitions=3, start_ms=START_MS + 20_000, span_ms=60_000)
        wait_for(lambda: _safe(metrics_port).get("archiver_paused_partitions", 0) >= 1, 60, "partitions to pause")
        peak = 0.0
        for _ in range(20):  # S3 stays down for 5 s more while records keep waiting in Kafka
            m = metrics(metrics_port)
            peak = max(peak, m["archiver_buffered_bytes"])
            time.sleep(0.25)
        assert status(metrics_port, "/readyz") == 503
        assert m["archiver_records_out_total"] < 32_000
        assert peak <= cap * 1.5, f"buffered {peak} bytes with a cap of {cap}"

        proxy.restore()
        wait_for(lambda: _safe(metrics_port).get("archiver_records_out_total", 0) >= 32_000, 120, "catching up")
        after = metrics(metrics_port)
        assert after["archiver_paused_partitions"] == 0
        # S3 requests are counted by operation, the refused ones of the outage too
        assert after['archiver_store_requests_total{op="put"}'] > after["archiver_files_total"] > 0
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
        proxy.close()
    assert daemon.returncode == 0, (tmp_path / "daemon.log").read_text()[-2000:]
    archive = Archive(open_store(archive_env["ARCHIVER_ARCHIVE_URL"]))
    assert_exactly_once(archive, unique, source_offsets(kafka, unique))


def _safe(port: int) -> dict[str, float]:
    try:
        return metrics(port)
    except OSError:
        return {}


def test_a_broker_restart_mid_stream_loses_and_duplicates_nothing(services, kafka, registry, archive_env, unique,
                                                                 tmp_path):
    demo.produce(kafka, registry, unique, 3000, partitions=3, start_ms=START_MS, span_ms=10_000)
    env = archive_env | {"ARCHIVER_CONFIG": write_config(tmp_path, interval_s=0.5, max_records=500)}
    daemon = start_daemon(env, unique, tmp_path / "daemon.log")
    try:
        time.sleep(5)
        services.restart("kafka")
        demo.produce(kafka, registry, unique, 3000, partitions=3, start_ms=START_MS + 20_000, span_ms=10_000)
        time.sleep(8)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=90)
    assert daemon.returncode == 0, (tmp_path / "daemon.log").read_text()[-3000:]
    run_archiver(env, "--once", "--topics", unique)
    archive = Archive(open_store(archive_env["ARCHIVER_ARCHIVE_URL"]))
    assert_exactly_once(archive, unique, source_offsets(kafka, unique))
