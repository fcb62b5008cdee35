"""The one settings loader: precedence, environment names, enums, units, librdkafka pass-through, secrets."""

from __future__ import annotations

import itertools
import logging
import re
from pathlib import Path

import pytest

from archiver import configdoc, logs
from archiver.config import KafkaSettings, env_name, load_run_settings
from archiver.errors import ConfigError

BASE_ENV = {"ARCHIVER_KAFKA_BOOTSTRAP_SERVERS": "b:9092", "ARCHIVER_ARCHIVE_URL": "file:///tmp/a",
            "ARCHIVER_SCHEMA_REGISTRY_URL": "http://r", "ARCHIVER_TOPICS": "t"}

# (TOML table, key, flag name, value in the file / environment / flag, how to read it back)
CASES = [
    ("kafka", "bootstrap_servers", "bootstrap_servers", ("file:1", "env:1", "flag:1"),
     lambda s: s.kafka.bootstrap_servers),
    ("schema_registry", "url", "schema_registry_url", ("http://file", "http://env", "http://flag"),
     lambda s: s.registry.url),
    ("archive", "url", "archive_url", ("file:///file", "file:///env", "file:///flag"), lambda s: s.archive_url),
    ("run", "group_id", "group_id", ("file", "env", "flag"), lambda s: s.group_id),
    ("run", "topics", "topics", (["file"], "env", ("flag",)), lambda s: s.topics),
    ("run", "compact_target_bytes", "compact_target_bytes", ("1MB", "2MB", "3MB"), lambda s: s.compact_target_bytes),
    ("target_kafka", "bootstrap_servers", "target_bootstrap_servers", ("file:2", "env:2", "flag:2"),
     lambda s: s.target_kafka.bootstrap_servers),
]
EXPECTED = {"kafka": ("file:1", "env:1", "flag:1"), "schema_registry": ("http://file", "http://env", "http://flag"),
            "archive": ("file:///file", "file:///env", "file:///flag"), "group_id": ("file", "env", "flag"),
            "topics": (("file",), ("env",), ("flag",)), "compact_target_bytes": (10**6, 2 * 10**6, 3 * 10**6),
            "target_kafka": ("file:2", "env:2", "flag:2")}


def _toml(table: str, key: str, value) -> str:
    text = repr(value).replace("'", '"') if not isinstance(value, str) else f'"{value}"'
    return f"[{table}]\n{key} = {text}\n"


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}.{c[1]}" for c in CASES])
@pytest.mark.parametrize("in_file, in_env, in_flag", list(itertools.product([False, True], repeat=3)))
def test_flags_beat_the_environment_which_beats_the_file_which_beats_defaults(tmp_path, case, in_file, in_env,
                                                                            in_flag):
    table, key, flag, (file_value, env_value, flag_value), read = case
    path = tmp_path / "c.toml"
    path.write_text(_toml(table, key, file_value) if in_file else "")
    env = dict(BASE_ENV)
    var = env_name(table, key)
    env.pop(var, None)
    if in_env:
        env[var] = env_value
    flags = {flag: flag_value} if in_flag else {}
    settings = load_run_settings(str(path), env, flags, needs=frozenset())
    winner = 2 if in_flag else 1 if in_env else 0 if in_file else None
    if winner is not None:
        assert read(settings) == EXPECTED[key if table == "run" else table][winner]
    elif table in ("target_kafka", "schema_registry"):
        assert (settings.target_kafka if table == "target_kafka" else settings.registry) is None
    else:
        assert read(settings) == DEFAULTS[key]


DEFAULTS = {"bootstrap_servers": "", "url": "", "group_id": "archiver", "topics": (),
            "compact_target_bytes": 128 * 2**20}


@pytest.mark.parametrize("variable, key", [
    # every variable the README names keeps working
    ("ARCHIVER_KAFKA_BOOTSTRAP_SERVERS", "kafka.bootstrap_servers"),
    ("ARCHIVER_KAFKA_SECURITY_PROTOCOL", "kafka.security_protocol"),
    ("ARCHIVER_KAFKA_SASL_MECHANISM", "kafka.sasl_mechanism"),
    ("ARCHIVER_KAFKA_SASL_USERNAME", "kafka.sasl_username"),
    ("ARCHIVER_KAFKA_SASL_PASSWORD", "kafka.sasl_password"),
    ("ARCHIVER_KAFKA_SSL_CA_LOCATION", "kafka.ssl_ca_location"),
    ("ARCHIVER_SCHEMA_REGISTRY_URL", "schema_registry.url"),
    ("ARCHIVER_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO", "schema_registry.basic_auth_user_info"),
    ("ARCHIVER_SCHEMA_REGISTRY_SSL_CA_LOCATION", "schema_registry.ssl_ca_location"),
    ("ARCHIVER_SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION", "schema_registry.ssl_certificate_location"),
    ("ARCHIVER_SCHEMA_REGISTRY_SSL_KEY_LOCATION", "schema_registry.ssl_key_location"),
    ("ARCHIVER_ARCHIVE_URL", "archive.url"),
    ("ARCHIVER_TOPICS", "run.topics"),
    ("ARCHIVER_TOPIC_PATTERN", "run.topic_pattern"),
    ("ARCHIVER_GROUP_ID", "run.group_id"),
    ("ARCHIVER_GROUP_INSTANCE_ID", "run.group_instance_id"),
    ("ARCHIVER_SESSION_TIMEOUT_MS", "run.session_timeout_ms"),
    ("ARCHIVER_MAX_BUFFER_BYTES", "run.max_buffer_bytes"),
    ("ARCHIVER_SHUTDOWN_TIMEOUT_S", "run.shutdown_timeout_s"),
    ("ARCHIVER_ON_DECODE_ERROR", "run.on_decode_error"),
    ("ARCHIVER_DLQ_TOPIC", "run.dlq_topic"),
    ("ARCHIVER_METRICS_ADDRESS", "run.metrics_address"),
    ("ARCHIVER_LOG_FORMAT", "run.log_format"),
    ("ARCHIVER_DECODER", "run.decoder"),
    ("ARCHIVER_COMPACT_INTERVAL_S", "run.compact_interval_s"),
    ("ARCHIVER_COMPACT_TARGET_BYTES", "run.compact_target_bytes"),
    ("ARCHIVER_COMPACT_CLOSED_AFTER_S", "run.compact_closed_after_s"),
    ("ARCHIVER_COMPACT_GRACE_S", "run.compact_grace_s"),
    ("ARCHIVER_TARGET_KAFKA_BOOTSTRAP_SERVERS", "target_kafka.bootstrap_servers"),
    ("ARCHIVER_TARGET_SCHEMA_REGISTRY_URL", "target_schema_registry.url"),
    ("ARCHIVER_DEFAULTS_KEY_BUCKETS", "defaults.key_buckets"),
    ("ARCHIVER_KAFKA_CLIENT_SSL_KEY_LOCATION", "kafka.client.ssl.key.location"),
    ("ARCHIVER_KAFKA_CLIENT_SOME__PROPERTY", "kafka.client.some_property"),
])
def test_environment_names_derive_from_keys(variable, key):
    if ".client." in key:
        table, name = key.split(".client.")[0] + ".client", key.split(".client.")[1]
    else:
        table, name = key.rsplit(".", 1)
    assert env_name(table, name) == variable
    assert variable in configdoc.reference() or ".client" in table


def test_each_variable_reaches_its_setting():
    env = BASE_ENV | {"ARCHIVER_SESSION_TIMEOUT_MS": "10s", "ARCHIVER_SHUTDOWN_TIMEOUT_S": "2m",
                      "ARCHIVER_MAX_BUFFER_BYTES": "1MiB", "ARCHIVER_ON_DECODE_ERROR": "FAIL",
                      "ARCHIVER_GROUP_INSTANCE_ID": "i-0", "ARCHIVER_DEFAULTS_KEY_BUCKETS": "8",
                      "ARCHIVER_DEFAULTS_INTERVAL_S": "15m", "ARCHIVER_KAFKA_SASL_MECHANISM": "scram-sha-512",
                      "ARCHIVER_TARGET_SCHEMA_REGISTRY_URL": "https://dr"}
    s = load_run_settings(None, env)
    assert (s.session_timeout_ms, s.shutdown_timeout_s, s.max_buffer_bytes) == (10_000, 120.0, 2**20)
    assert (s.on_decode_error, s.group_instance_id, s.kafka.sasl_mechanism) == ("fail", "i-0", "SCRAM-SHA-512")
    assert (s.defaults.key_buckets, s.defaults.interval_s, s.target_registry.url) == (8, 900.0, "https://dr")


@pytest.mark.parametrize("text, env, message", [
    ('[run]\nlog_format = "xml"\n', {}, "run.log_format: expected one of text, json, got 'xml'"),
    ("", {"ARCHIVER_DECODER": "fast"}, "run.decoder: expected one of auto, reference, got 'fast'"),
    ('[defaults]\ncompression = "brotli"\n', {}, "defaults.compression: expected one of zstd, snappy, gzip, lz4, none"),
    ('[topics.t]\ntime_granularity = "week"\n', {}, 'topics."t".time_granularity: expected one of day, hour, minute'),
    ('[defaults]\nkey_partitioning = "range"\n', {}, "defaults.key_partitioning: expected one of hash, field, none"),
    ('[defaults]\nvalue_format = "json"\n', {}, "defaults.value_format: expected one of confluent, raw"),
    ('[defaults]\nkey_format = "int"\n', {}, "defaults.key_format: expected one of bytes, string, avro"),
    ("", {"ARCHIVER_ON_DECODE_ERROR": "skip"}, "run.on_decode_error: expected one of dlq, fail"),
    ("", {"ARCHIVER_KAFKA_CLIENT": "java"}, "run.kafka_client: expected one of auto, native, python, got 'java'"),
    ('[defaults]\nsmall_file_rows = -1\n', {}, "defaults.small_file_rows: must be 0 or more, got -1"),
    ("", {"ARCHIVER_KAFKA_SECURITY_PROTOCOL": "tls"},
     "kafka.security_protocol: expected one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL, got 'tls'"),
    ('[defaults]\nmax_bytes = "128m"\n', {}, "defaults.max_bytes: '128m' is ambiguous: write 128MiB"),
    ("", {"ARCHIVER_DEFAULTS_INTERVAL_S": "soon"}, "defaults.interval_s: expected a duration"),
    ('[kafka]\nclient = "x"\n', {}, "kafka.client: expected a table"),
    ('[archive]\nurl = "s3://b"\nbucket = "b"\n', {}, "archive.bucket: unknown setting"),
])
def test_bad_values_are_one_line_naming_the_key_and_the_allowed_values(tmp_path, text, env, message):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)) as raised:
        load_run_settings(str(path), BASE_ENV | env)
    assert "\n" not in str(raised.value)


def test_sizes_and_durations_in_the_file_take_units(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[run]\nmax_buffer_bytes = "64MB"\nsession_timeout_ms = "30s"\nshutdown_timeout_s = 5\n'
                    'compact_interval_s = "1h"\n[defaults]\nmax_bytes = "128MiB"\ninterval_s = "2m"\n'
                    'compression = "ZSTD"\n')
    s = load_run_settings(str(path), BASE_ENV)
    assert (s.max_buffer_bytes, s.session_timeout_ms, s.shutdown_timeout_s) == (64_000_000, 30_000, 5.0)
    assert (s.compact_interval_s, s.defaults.max_bytes, s.defaults.interval_s) == (3600.0, 128 * 2**20, 120.0)
    assert s.defaults.compression == "zstd"


def test_any_librdkafka_property_reaches_every_client(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[kafka.client]\n"ssl.certificate.location" = "/file.pem"\nssl.key.location = "/file.key"\n'
                    '"enable.ssl.certificate.verification" = false\n"socket.timeout.ms" = 5000\n'
                    '[target_kafka]\nbootstrap_servers = "dr:9092"\n[target_kafka.client]\n"client.id" = "dr"\n')
    env = BASE_ENV | {"ARCHIVER_KAFKA_CLIENT_SSL_KEY_LOCATION": "/env.key",
                      "ARCHIVER_KAFKA_CLIENT_SASL_OAUTHBEARER_METHOD": "oidc",
                      "ARCHIVER_TARGET_KAFKA_CLIENT_SSL_CA_LOCATION": "/dr.ca"}
    s = load_run_settings(str(path), env)
    conf = s.kafka.client_config()
    assert conf["ssl.certificate.location"] == "/file.pem" and conf["ssl.key.location"] == "/env.key"
    assert conf["enable.ssl.certificate.verification"] == "false" and conf["socket.timeout.ms"] == "5000"
    assert conf["sasl.oauthbearer.method"] == "oidc" and conf["bootstrap.servers"] == "b:9092"
    assert isinstance(conf["logger"], logging.Logger) and conf["logger"].name == "librdkafka"
    target = s.target_kafka.client_config()
    assert (target["bootstrap.servers"], target["client.id"], target["ssl.ca.location"]) == ("dr:9092", "dr", "/dr.ca")
    assert "ssl.key.location" not in target  # the source's client properties are not sent to another cluster


def test_replay_targets_the_source_cluster_unless_a_target_is_set():
    s = load_run_settings(None, BASE_ENV | {"ARCHIVER_TARGET_KAFKA_SASL_USERNAME": "dr"})
    assert s.target_kafka is None


SECRETS = {"ARCHIVER_KAFKA_SASL_PASSWORD": "pw-sasl-1", "ARCHIVER_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": "u:pw-reg-2",
           "ARCHIVER_KAFKA_CLIENT_SSL_KEY_PASSWORD": "pw-key-3",
           "ARCHIVER_KAFKA_CLIENT_SASL_OAUTHBEARER_CLIENT_SECRET": "pw-oidc-4",
           "ARCHIVER_KAFKA_CLIENT_SSL_KEY_PEM": "-----BEGIN PRIVATE KEY-----pw-pem-5",
           "ARCHIVER_KAFKA_CLIENT_SASL_OAUTHBEARER_CONFIG": "principal=pw-cfg-6",
           "ARCHIVER_TARGET_KAFKA_BOOTSTRAP_SERVERS": "dr:9092", "ARCHIVER_TARGET_KAFKA_SASL_PASSWORD": "pw-dr-7"}


def test_masked_settings_hold_no_secret():
    s = load_run_settings(None, BASE_ENV | SECRETS)
    text = repr(s.masked()) + repr(s)
    for secret in SECRETS.values():
        if "pw-" in secret:
            assert secret not in text
    assert sorted(s.secrets()) == sorted(v for v in SECRETS.values() if "pw-" in v)
    assert s.masked()["kafka"]["client"]["ssl.key.password"] == "****"


def test_log_lines_and_messages_never_show_a_secret(caplog):
    filt = logs.SecretFilter(["pw-sasl-1"])
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "auth failed for %s", ("user:pw-sasl-1",), None)
    assert filt.filter(record) and record.getMessage() == "auth failed for user:****"
    assert logs.mask("a pw-sasl-1 b", ["pw-sasl-1"]) == "a **** b"


def test_from_env_still_reads_a_cluster_from_the_environment_alone():
    settings = KafkaSettings.from_env({"ARCHIVER_KAFKA_BOOTSTRAP_SERVERS": "env:1",
                                       "ARCHIVER_KAFKA_CLIENT_CLIENT_ID": "me"}, bootstrap_servers=None)
    assert settings.client_config()["client.id"] == "me"


def test_the_configuration_reference_is_generated_and_current():
    doc = Path(__file__).parents[2] / "docs" / "configuration.md"
    assert doc.read_text() == configdoc.reference(), \
        "docs/configuration.md is stale: regenerate it with `archiver config --reference > docs/configuration.md`"


def test_the_reference_documents_every_setting():
    from dataclasses import fields

    from archiver.config import KafkaSettings, RegistrySettings, RunSettings, TopicSettings

    reference = configdoc.reference()
    assert "## `[catalog]`" in reference and "ARCHIVER_CATALOG_S3__ENDPOINT" in reference
    for cls in (KafkaSettings, RegistrySettings, RunSettings, TopicSettings):
        docs = configdoc.field_docs(cls)
        for f in fields(cls):
            if not isinstance(f.default, KafkaSettings | RegistrySettings | TopicSettings) and f.name not in (
                    "kafka", "registry", "overrides", "target_kafka", "target_registry", "client", "catalog"):
                assert docs.get(f.name), f"{cls.__name__}.{f.name} has no docstring"
                assert f"{f.name}` |" in reference or f"`{f.metadata.get('key')}` |" in reference


def test_catalog_takes_pyiceberg_properties_from_toml_and_environment(tmp_path):
    path = tmp_path / "archiver.toml"
    path.write_text('[catalog]\ntype = "rest"\nuri = "https://catalog.example/api"\ncredential = "id:hush"\n'
                    's3.endpoint = "http://file-endpoint"\nnamespace = "lake"\n')
    env = {"ARCHIVER_ARCHIVE_URL": "s3://b/p", "ARCHIVER_CATALOG_S3__ENDPOINT": "http://127.0.0.1:4566",
           "ARCHIVER_CATALOG_S3__ACCESS_KEY_ID": "AKIA", "ARCHIVER_CATALOG_WAREHOUSE": "wh"}
    settings = load_run_settings(str(path), env, needs=frozenset({"archive"}))
    assert settings.catalog.namespace == "lake"
    assert settings.catalog.properties == {"type": "rest", "uri": "https://catalog.example/api", "credential": "id:hush",
                                           "s3.endpoint": "http://127.0.0.1:4566", "s3.access-key-id": "AKIA",
                                           "warehouse": "wh"}
    assert settings.catalog.configured and settings.catalog.kind == "rest"
    shown = settings.masked()["catalog"]
    assert shown["credential"] == "****" and shown["uri"] == "https://catalog.example/api"
    assert "id:hush" in settings.secrets()


def test_no_catalog_unless_a_type_or_uri_is_set_and_a_bad_namespace_is_one_error():
    settings = load_run_settings(None, {"ARCHIVER_ARCHIVE_URL": "s3://b/p"}, needs=frozenset({"archive"}))
    assert not settings.catalog.configured and "catalog" not in settings.masked()
    with pytest.raises(ConfigError, match=r"^catalog.namespace: 'Lake-1' is not a valid namespace"):
        load_run_settings(None, {"ARCHIVER_ARCHIVE_URL": "s3://b/p", "ARCHIVER_CATALOG_NAMESPACE": "Lake-1"},
                          needs=frozenset({"archive"}))
