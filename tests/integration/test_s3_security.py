"""`[archive]` encryption and bucket-owner settings against the real S3 server (LocalStack, its KMS too)."""

import json
import subprocess

import boto3
import pytest

from archiver.config import KafkaSettings
from archiver.source import kafka as source_kafka
from tests.integration.conftest import ARCHIVER, archive_demo, archiver


def aws(services, service: str):
    env = services.env
    return boto3.client(service, endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"],
                        aws_access_key_id=env.get("AWS_ACCESS_KEY_ID", "test"),
                        aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY", "test"))


def objects(services, prefix: str) -> list[str]:
    pages = aws(services, "s3").get_paginator("list_objects_v2").paginate(Bucket=services.bucket, Prefix=prefix + "/")
    return [o["Key"] for page in pages for o in page.get("Contents", ())]




@pytest.mark.parametrize("sse", ["AES256", "aws:kms"])
def test_every_object_archiver_writes_is_encrypted_as_configured(services, unique, sse):

    extra, key = {"ARCHIVER_ARCHIVE_SSE": sse}, {}
    if sse == "aws:kms":
        key = aws(services, "kms").create_key(Description=f"archive {unique}")["KeyMetadata"]
        extra["ARCHIVER_ARCHIVE_SSE_KMS_KEY_ID"] = key["Arn"]
    topic = archive_demo(services, f"sse-{unique}", records=900, partitions=2, span_ms=2 * 3600_000, env=extra)
    # replay reads the encrypted files back and writes a checkpoint of its own
    source_kafka.ensure_topic(KafkaSettings.from_env(services.env), f"{topic.topic}-copy", 2)
    replayed = archiver(topic.env, "replay", "--topic", topic.topic, "--to-topic", f"{topic.topic}-copy", "--checkpoint", "copy")
    assert replayed.returncode == 0 and json.loads(replayed.stdout)["records"] == 900, replayed.stderr[-2000:]
    keys = objects(services, topic.topic)
    assert any("/_ledger/" in k for k in keys) and any(k.endswith("/_replay/copy.json") for k in keys), keys
    s3 = aws(services, "s3")
    for name in (k for k in keys if "/_iceberg/" not in k):  # pyiceberg's own writes: the bucket's default (README)
        head = s3.head_object(Bucket=services.bucket, Key=name)
        assert head.get("ServerSideEncryption") == sse, name
        if sse == "aws:kms":
            assert head["SSEKMSKeyId"] in (key["Arn"], key["KeyId"]), name
    verified = archiver(topic.env, "verify")  # every file read back and checked against the ledger
    assert verified.returncode == 0, verified.stdout[-2000:] + verified.stderr[-2000:]


def test_a_bucket_another_account_owns_is_refused_and_nothing_is_written(services, unique):
    """Every request names the owner, through obstore and boto3 alike; a bucket of another account
    fails the run with one line before anything is written, and the right account works."""
    from urllib.parse import urlparse

    from tests.integration.faults import OwnerCheckingS3

    s3 = OwnerCheckingS3(urlparse(services.env["AWS_ENDPOINT_URL"]).port, owner="111122223333")
    # no Iceberg table: pyiceberg reads the files it publishes with its own S3 client (README)
    endpoint = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3.port}", "ARCHIVER_CATALOG_TYPE": "",
                "ARCHIVER_CATALOG_URI": ""}
    try:
        with pytest.raises(AssertionError, match="AccessDenied"):
            archive_demo(services, f"owner-{unique}", records=50, partitions=1,
                         env=endpoint | {"ARCHIVER_ARCHIVE_EXPECTED_BUCKET_OWNER": "999999999999"})
        assert objects(services, f"owner-{unique}") == []
        refused = s3.requests
        topic = archive_demo(services, f"owner-ok-{unique}", records=50, partitions=1,
                             env=endpoint | {"ARCHIVER_ARCHIVE_EXPECTED_BUCKET_OWNER": "111122223333"})
        assert objects(services, topic.topic) and s3.requests > refused
        assert not s3.unnamed, f"{len(s3.unnamed)} of {s3.requests} requests did not name the owner: {s3.unnamed[:5]}"
        status = archiver(topic.env | {"ARCHIVER_ARCHIVE_EXPECTED_BUCKET_OWNER": "999999999999"}, "status", "--format", "json")
        assert status.returncode != 0 and "AccessDenied" in status.stderr  # reads are refused too
        assert len(status.stderr.strip().splitlines()) == 1, status.stderr
    finally:
        s3.close()


def test_no_configured_secret_shows_in_logs_metrics_or_config(services, kafka, registry, archive_env, unique, tmp_path):
    """The AWS secret key and the registry's password of a run, at DEBUG (libraries' lines too),
    are in none of its log lines, its /metrics, nor `archiver config`."""
    import signal
    import urllib.request

    from archiver import demo
    from tests.conftest import _free_ports
    from tests.integration.test_run import START_MS, write_config
    from tests.integration.test_run_resilience import _safe, wait_for

    aws_secret, registry_password = f"AWS-SECRET-{unique}", f"REGISTRY-SECRET-{unique}"
    demo.produce(kafka, registry, unique, 200, partitions=2, start_ms=START_MS, span_ms=1000)
    (port,) = _free_ports(1)
    env = archive_env | {"AWS_SECRET_ACCESS_KEY": aws_secret,  # LocalStack takes any key
                         "ARCHIVER_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": f"archiver:{registry_password}",
                         "ARCHIVER_METRICS_ADDRESS": f"127.0.0.1:{port}", "ARCHIVER_TOPICS": unique,
                         "ARCHIVER_CONFIG": write_config(tmp_path, interval_s=0.5)}
    log = tmp_path / "daemon.log"
    with open(log, "w") as f:
        daemon = subprocess.Popen([ARCHIVER, "-vv", "run"], env=env, stdout=f, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _safe(port).get("archiver_records_out_total", 0) >= 200, 90, "the records committed")
        scraped = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
    config = archiver(env, "config")
    assert config.returncode == 0, config.stderr
    assert "archiver:****" in config.stdout or "****" in config.stdout
    text = log.read_text()
    assert "DEBUG" in text and "committed" in text  # the run logged at DEBUG and did its work
    for secret in (aws_secret, registry_password):
        for where, found in (("the log", text), ("/metrics", scraped), ("archiver config", config.stdout + config.stderr)):
            assert secret not in found, f"{secret} shows in {where}"


def without_static_keys(archive_env: dict) -> dict:
    """The environment with no credential source but what a test adds (no keys, no profile, no
    instance metadata): archiver must take its credentials from what the test configures."""
    env = {k: v for k, v in archive_env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                                              "AWS_SESSION_TOKEN", "AWS_PROFILE")}
    return env | {"AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": "/nonexistent",
                  "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}


def run_status_and_verify(env: dict, topic: str) -> None:
    """`run --once` (obstore's PUTs and boto3's conditional writes), then `status` and `verify`."""
    run = archiver(env, "run", "--once", "--topics", topic, "--format", "json", timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout)["records_out"] == 30
    for command in (["status", "--topics", topic], ["verify", "--topics", topic]):
        result = archiver(env, *command, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]


def test_credentials_from_a_named_profile(services, kafka, registry, archive_env, unique, tmp_path):
    from archiver import demo

    demo.produce(kafka, registry, unique, 30, partitions=1, start_ms=1_764_000_000_000, span_ms=1000)
    bare = without_static_keys(archive_env)
    missing = archiver(bare, "status", "--topics", unique)
    assert missing.returncode != 0 and "credentials" in missing.stderr.lower(), missing.stderr[-2000:]

    (tmp_path / "credentials").write_text(f"[archiver-{unique[-6:]}]\naws_access_key_id = test\n"
                                          "aws_secret_access_key = test\n")
    (tmp_path / "config").write_text(f"[profile archiver-{unique[-6:]}]\nregion = us-east-1\n")
    run_status_and_verify(bare | {"AWS_PROFILE": f"archiver-{unique[-6:]}", "AWS_CONFIG_FILE": str(tmp_path / "config"),
                                  "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials")}, unique)


def test_credentials_from_web_identity_as_on_eks_with_irsa(services, kafka, registry, archive_env, unique,
                                                          tmp_path, glue):
    """IRSA: a projected service-account token and a role ARN; the AWS chain exchanges them with
    STS (moto's server here) for temporary credentials, which S3 (LocalStack) then accepts. The
    run publishes to the Iceberg catalog too: with these credentials pyarrow's S3 hung at exit
    until archiver released its filesystems first (`archiver.iceberg_io`)."""
    assert archive_env.get("ARCHIVER_CATALOG_TYPE"), "the session's environment has a catalog"
    from archiver import demo

    demo.produce(kafka, registry, unique, 30, partitions=1, start_ms=1_764_000_000_000, span_ms=1000)
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6YXJjaGl2ZXI6YXJjaGl2ZXIifQ.c2ln")
    env = without_static_keys(archive_env) | {
        "AWS_ROLE_ARN": "arn:aws:iam::000000000000:role/archiver", "AWS_WEB_IDENTITY_TOKEN_FILE": str(token),
        "AWS_ROLE_SESSION_NAME": "archiver-0", "AWS_ENDPOINT_URL_STS": glue}
    run_status_and_verify(env, unique)
    sessions = boto3.client("sts", endpoint_url=glue, region_name="us-east-1", aws_access_key_id="test",
                            aws_secret_access_key="test")
    assert sessions.get_caller_identity()["Account"]  # moto's STS answered (it served the exchange above)
