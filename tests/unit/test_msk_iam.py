"""OAUTHBEARER tokens for Amazon MSK IAM: the callback librdkafka calls, signed by AWS's signer."""

import base64
import time
from urllib.parse import parse_qs, urlparse

import pytest

from archiver.config import KafkaSettings
from archiver.errors import ConfigError
from archiver.source import native

pytestmark = pytest.mark.unit

MSK = {"ARCHIVER_KAFKA_BOOTSTRAP_SERVERS": "b-1.msk.example:9098", "ARCHIVER_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
       "ARCHIVER_KAFKA_SASL_MECHANISM": "OAUTHBEARER", "ARCHIVER_KAFKA_OAUTHBEARER_PROVIDER": "aws_msk_iam",
       "ARCHIVER_KAFKA_AWS_REGION": "eu-west-1"}


@pytest.fixture
def aws_credentials(monkeypatch):
    for name, value in {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG",
                        "AWS_SESSION_TOKEN": ""}.items():
        monkeypatch.setenv(name, value) if value else monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def test_the_token_is_a_presigned_connect_request_for_the_region_that_expires_in_minutes(aws_credentials):
    conf = KafkaSettings.from_env(MSK).client_config()
    token, expiry = conf["oauth_cb"]("")  # what librdkafka calls, with its sasl.oauthbearer.config
    url = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    parsed, query = urlparse(url), parse_qs(urlparse(url).query)
    assert parsed.netloc == "kafka.eu-west-1.amazonaws.com"
    assert query["Action"] == ["kafka-cluster:Connect"]
    assert query["X-Amz-Credential"][0].startswith("AKIDEXAMPLE/") and "/eu-west-1/kafka-cluster/" in query["X-Amz-Credential"][0]
    assert "wJalrXUtnFEMI" not in url  # signed with the secret, never carrying it
    assert time.time() < expiry <= time.time() + 3600
    assert conf["sasl.mechanism"] == "OAUTHBEARER" and conf["security.protocol"] == "SASL_SSL"


def test_a_token_callback_runs_on_confluent_kafka_with_the_reason(aws_credentials):
    pytest.importorskip("archiver_native")
    conf = KafkaSettings.from_env(MSK).client_config()
    assert native.unsupported(conf) == "the native module takes no Python callbacks (oauth_cb)"


@pytest.mark.parametrize("env, error", [
    ({"ARCHIVER_KAFKA_OAUTHBEARER_PROVIDER": "gcp"}, "kafka.oauthbearer_provider: expected aws_msk_iam, got 'gcp'"),
    ({"ARCHIVER_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512"}, "needs sasl_mechanism = OAUTHBEARER"),
])
def test_misconfigurations_are_one_line(aws_credentials, env, error):
    with pytest.raises(ConfigError, match=error):
        KafkaSettings.from_env(MSK | env).client_config()


def test_without_a_region_anywhere_it_says_so(aws_credentials, monkeypatch):
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    env = {k: v for k, v in MSK.items() if k != "ARCHIVER_KAFKA_AWS_REGION"}
    with pytest.raises(ConfigError, match="no AWS region"):
        KafkaSettings.from_env(env).client_config()
