"""archiver through the registry's HTTPS endpoint with basic auth and a client certificate: nginx
(`infra/services`'s registry-tls) in front of the real Apicurio Registry, with the local CA's
certificates."""

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
from tests.integration.test_secure_kafka import START_MS, other_ca, secure_env

TARGET = "ARCHIVER_TARGET_SCHEMA_REGISTRY_"


@pytest.fixture
def https_registry(services) -> dict[str, str]:
    """The `ARCHIVER_SCHEMA_REGISTRY_*` settings of the HTTPS endpoint (skips without nginx)."""
    status = subprocess.run([SERVICES, "status", "registry-tls"], env=services.control_env, capture_output=True,
                            check=False)
    if status.returncode != 0:
        pytest.skip("the registry's HTTPS endpoint is not running (infra/tools fetches nginx)")
    env = secure_env(services, "registry")
    assert env["ARCHIVER_SCHEMA_REGISTRY_URL"].startswith("https://")
    return {k: v for k, v in env.items() if k.startswith("ARCHIVER_SCHEMA_REGISTRY_")}


def as_target(settings: dict[str, str]) -> dict[str, str]:
    return {k.replace("ARCHIVER_SCHEMA_REGISTRY_", TARGET): v for k, v in settings.items()}


def test_run_status_and_replay_through_the_https_registry_with_basic_auth(services, kafka, registry, archive_env,
                                                                        https_registry, unique):
    demo.produce(kafka, registry, unique, 200, partitions=2, start_ms=START_MS, span_ms=60_000)
    env = archive_env | https_registry

    run = archiver(env, "run", "--once", "--topics", unique, "--format", "json")
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout)["records_out"] == 200

    status = archiver(env, "status", "--topics", unique, "--format", "json")
    assert status.returncode == 0, status.stderr[-2000:]

    # replay registers the writer schema in the target registry, through the same endpoint
    target = f"{unique}-copy"
    source_kafka.ensure_topic(kafka, target, 2)
    replay = archiver(env | as_target(https_registry), "replay", "--topic", unique, "--to-topic", target)
    assert replay.returncode == 0, replay.stderr[-2000:]
    assert json.loads(replay.stdout)["records"] == 200
    back = demo.consume_back(kafka, registry, target)
    assert len(back) == 200
    assert f"{target}-value" in registry._client.get_subjects()


def refused_settings(https_registry: dict[str, str], case: str, tmp_path) -> dict[str, str]:
    if case == "wrong password":
        return https_registry | {"ARCHIVER_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": "archiver:not-the-password"}
    if case == "no credentials":
        return {k: v for k, v in https_registry.items() if "BASIC_AUTH" not in k}
    if case == "no client certificate":
        return {k: v for k, v in https_registry.items() if "SSL_CERTIFICATE" not in k and "SSL_KEY" not in k}
    if case == "wrong CA":
        return https_registry | {"ARCHIVER_SCHEMA_REGISTRY_SSL_CA_LOCATION": other_ca(tmp_path)}
    assert case == "http to the https port"
    return https_registry | {"ARCHIVER_SCHEMA_REGISTRY_URL":
                             https_registry["ARCHIVER_SCHEMA_REGISTRY_URL"].replace("https://", "http://")}


CASES = ["wrong password", "no credentials", "no client certificate", "wrong CA", "http to the https port"]


@pytest.mark.parametrize("case", CASES)
def test_a_refused_registry_is_one_line_a_non_zero_exit_and_no_commit(services, kafka, registry, archive_env,
                                                                      https_registry, unique, tmp_path, case):
    """Not an outage: retrying cannot fix a credential or a certificate, so the run stops at once
    instead of waiting run.outage_timeout_s, and nothing is dead-lettered or committed."""
    demo.produce(kafka, registry, unique, 20, partitions=1, start_ms=START_MS, span_ms=1000)
    env = archive_env | refused_settings(https_registry, case, tmp_path) | {"ARCHIVER_DLQ_TOPIC": f"{unique}-dlq"}
    started = time.monotonic()
    run = archiver(env, "run", "--once", "--topics", unique, timeout=240)
    took = time.monotonic() - started
    assert run.returncode != 0
    errors = [line for line in run.stderr.strip().splitlines() if "archiver: error:" in line]
    assert len(errors) == 1 and errors[0].startswith("archiver: error: schema registry"), run.stderr[-3000:]
    assert "<html" not in errors[0] and "not-the-password" not in run.stderr
    assert took < 60, f"{case}: gave up after {took:.0f}s"
    archive = Archive(open_store(archive_env["ARCHIVER_ARCHIVE_URL"]))
    assert archive.partitions(unique) == [] or commits(archive, unique) == []
    assert dead_letters(kafka, f"{unique}-dlq") == []


@pytest.mark.parametrize("case", ["wrong password", "wrong CA"])
def test_replay_to_a_refusing_target_registry_is_one_line_and_produces_nothing(services, kafka, registry,
                                                                               archive_env, https_registry,
                                                                               unique, tmp_path, case):
    demo.produce(kafka, registry, unique, 20, partitions=1, start_ms=START_MS, span_ms=1000)
    run = archiver(archive_env, "run", "--once", "--topics", unique)
    assert run.returncode == 0, run.stderr[-3000:]
    target = f"{unique}-copy"
    source_kafka.ensure_topic(kafka, target, 1)
    env = archive_env | as_target(refused_settings(https_registry, case, tmp_path))
    replay = archiver(env, "replay", "--topic", unique, "--to-topic", target)
    assert replay.returncode != 0
    lines = replay.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("archiver: error: schema registry"), replay.stderr[-3000:]
    assert list(source_kafka.read_to_end(kafka, target, 10)) == []
