"""archiver through the broker's secured listeners: SASL_SSL with SCRAM-SHA-512, and SSL with a
client certificate (infra/services starts both, with certificates of a local CA)."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from archiver import demo
from archiver.archive import Archive
from archiver.source import kafka as source_kafka
from archiver.store import open_store
from tests.conftest import SERVICES
from tests.integration.conftest import archiver
from tests.integration.test_outages import commits, dead_letters

START_MS = 1_764_000_000_000


def secure_env(services, kind: str) -> dict[str, str]:
    """The Kafka and registry settings of `infra/services env --secure KIND` for the test
    session's services (not its archive URL or catalog: each test archives into its own)."""
    out = subprocess.run([SERVICES, "env", "--secure", kind], env=services.control_env, capture_output=True,
                         text=True, check=True).stdout
    exports = dict(line.removeprefix("export ").split("=", 1) for line in out.splitlines() if line)
    return {k: v for k, v in exports.items() if k.startswith(("ARCHIVER_KAFKA_", "ARCHIVER_SCHEMA_REGISTRY_"))}




@pytest.mark.parametrize("kind", ["sasl_ssl", "ssl"])
def test_run_replay_status_and_dead_letters_through_a_secured_listener(services, kafka, registry, archive_env,
                                                                       unique, kind):
    demo.produce(kafka, registry, unique, 300, partitions=2, start_ms=START_MS, span_ms=60_000)
    producer = source_kafka.producer(kafka)
    producer.produce(unique, b"\x07not avro", b"bad", partition=0)  # bad magic byte: a dead letter
    source_kafka.flush(producer)
    secure = secure_env(services, kind)
    dlq = f"{unique}-dlq"
    env = archive_env | secure | {"ARCHIVER_DLQ_TOPIC": dlq}
    assert secure["ARCHIVER_KAFKA_BOOTSTRAP_SERVERS"] != services.bootstrap_servers

    run = archiver(env, "run", "--once", "--topics", unique, "--format", "json")
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout)
    assert (summary["records_out"], summary["dead_lettered"]) == (300, 1)
    assert len(dead_letters(kafka, dlq)) == 1

    status = archiver(env, "status", "--topics", unique, "--format", "json")
    assert status.returncode == 0, status.stderr[-2000:]

    target = f"{unique}-copy"
    source_kafka.ensure_topic(kafka, target, 2)
    replay = archiver(env, "replay", "--topic", unique, "--to-topic", target)
    assert replay.returncode == 0, replay.stderr[-2000:]
    assert json.loads(replay.stdout)["records"] == 300
    assert len(demo.consume_back(kafka, registry, target)) == 300


def other_ca(tmp_path) -> str:
    """A CA that signed nothing the broker presents."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=other",
                    "-keyout", str(tmp_path / "other.key"), "-out", str(tmp_path / "other.pem")],
                   check=True, capture_output=True)
    return str(tmp_path / "other.pem")


@pytest.mark.parametrize("case", ["wrong password", "wrong CA", "no client certificate"])
def test_a_refused_connection_is_one_line_a_non_zero_exit_and_no_commit(services, kafka, registry, archive_env,
                                                                        unique, tmp_path, case):
    demo.produce(kafka, registry, unique, 20, partitions=1, start_ms=START_MS, span_ms=1000)
    if case == "wrong password":
        env = secure_env(services, "sasl_ssl") | {"ARCHIVER_KAFKA_SASL_PASSWORD": "not-the-password"}
    elif case == "wrong CA":
        env = secure_env(services, "ssl") | {"ARCHIVER_KAFKA_SSL_CA_LOCATION": other_ca(tmp_path)}
    else:
        env = {k: v for k, v in secure_env(services, "ssl").items() if "CERTIFICATE" not in k and "SSL_KEY" not in k}
    env = {k: v for k, v in archive_env.items() if not k.startswith("ARCHIVER_KAFKA_CLIENT_SSL")} | env
    started = time.monotonic()
    run = archiver(env, "run", "--once", "--topics", unique, timeout=240)
    took = time.monotonic() - started
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("archiver: error: "), run.stderr[-3000:]
    assert took < 120, f"{case}: gave up after {took:.0f}s"
    archive = Archive(open_store(archive_env["ARCHIVER_ARCHIVE_URL"]))
    assert archive.partitions(unique) == [] or commits(archive, unique) == []


def scram(kafka, password: str | None) -> None:
    """Set the SCRAM-SHA-512 password of the listener's user, or delete the user (None), through
    the PLAINTEXT listener."""
    from confluent_kafka.admin import (
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialDeletion,
        UserScramCredentialUpsertion,
    )

    user = "archiver"
    change = (UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_512) if password is None else
              UserScramCredentialUpsertion(user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192),
                                           password.encode()))
    client = source_kafka.admin(kafka)  # alive until the answer: its futures fail once it is freed
    for future in client.alter_user_scram_credentials([change]).values():
        future.result(timeout=30)


def test_credentials_revoked_while_running_make_it_unready_and_then_stop_it(services, kafka, registry, archive_env,
                                                                            unique, tmp_path):
    """The broker refuses the running daemon (its SCRAM user deleted, and the broker restarted,
    so the connections authenticate again): /readyz answers 503 and partitions wait for "kafka";
    once the user is back it carries on; refused for kafka_refused_timeout_s, it commits what it
    holds and stops with the reason, exit 1."""
    from tests.conftest import _free_ports
    from tests.integration.test_run_resilience import _safe, start_daemon, status, wait_for

    secure = secure_env(services, "sasl_ssl")
    password = secure["ARCHIVER_KAFKA_SASL_PASSWORD"]
    (port,) = _free_ports(1)
    env = archive_env | secure | {"ARCHIVER_METRICS_ADDRESS": f"127.0.0.1:{port}", "ARCHIVER_DEFAULTS_INTERVAL_S": "0.5",
                                  "ARCHIVER_KAFKA_REFUSED_TIMEOUT_S": "40"}
    scram(kafka, password)  # as infra/services made it, whatever an earlier test left
    demo.produce(kafka, registry, unique, 100, partitions=2, start_ms=START_MS, span_ms=1000)
    log = tmp_path / "daemon.log"
    daemon = start_daemon(env, unique, log)
    try:
        wait_for(lambda: _safe(port).get("archiver_records_out_total", 0) >= 100, 60, "the first 100")
        scram(kafka, None)
        services.restart("kafka")
        wait_for(lambda: _safe(port).get('archiver_waiting_partitions{dependency="kafka"}', 0) >= 1, 60,
                 "partitions to wait for kafka")
        assert status(port, "/readyz") == 503

        scram(kafka, password)
        wait_for(lambda: status(port, "/readyz") == 200, 35, "ready again")
        demo.produce(kafka, registry, unique, 50, partitions=2, start_ms=START_MS + 2000, span_ms=1000)
        wait_for(lambda: _safe(port).get("archiver_records_out_total", 0) >= 150, 60, "the next 50")

        scram(kafka, None)
        services.restart("kafka")
        started = time.monotonic()
        daemon.wait(timeout=150)
        took = time.monotonic() - started
    finally:
        scram(kafka, password)
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    text = log.read_text()
    assert daemon.returncode == 1, text[-3000:]
    last = text.strip().splitlines()[-1]
    assert last.startswith("archiver: error: kafka at 127.0.0.1:") and "refused this member for 40s" in last, last
    assert "SASL authentication" in last and password not in text
    assert "kafka accepts this member again" in text
    assert took < 120, f"stopped {took:.0f}s after the refusal began"
    archive = Archive(open_store(archive_env["ARCHIVER_ARCHIVE_URL"]))
    assert sum(e.end - e.start for e in commits(archive, unique)) == 150
