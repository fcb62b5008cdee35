import pytest

from archiver.config import KafkaSettings, RegistrySettings
from archiver.errors import ConfigError


def test_flags_override_environment():
    env = {"ARCHIVER_KAFKA_BOOTSTRAP_SERVERS": "env:9092", "ARCHIVER_KAFKA_SASL_PASSWORD": "s3cret"}
    settings = KafkaSettings.from_env(env, bootstrap_servers="flag:9092")
    assert settings.bootstrap_servers == "flag:9092"
    assert settings.client_config()["sasl.password"] == "s3cret"
    assert "s3cret" not in repr(settings)


def test_missing_bootstrap_servers_names_the_key_and_both_ways_to_set_it():
    with pytest.raises(ConfigError, match="kafka.bootstrap_servers.*--bootstrap-servers.*ARCHIVER_KAFKA_BOOTSTRAP"):
        KafkaSettings.from_env({})


def test_unknown_security_protocol_is_rejected():
    with pytest.raises(ConfigError, match="kafka.security_protocol"):
        KafkaSettings.from_env({"ARCHIVER_KAFKA_BOOTSTRAP_SERVERS": "x:1", "ARCHIVER_KAFKA_SECURITY_PROTOCOL": "tls"})


def test_registry_url_must_be_http():
    with pytest.raises(ConfigError, match="schema_registry.url"):
        RegistrySettings.from_env({"ARCHIVER_SCHEMA_REGISTRY_URL": "ftp://registry"})
    auth = RegistrySettings.from_env({"ARCHIVER_SCHEMA_REGISTRY_URL": "https://r", 
                                      "ARCHIVER_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": "u:p"})
    assert auth.client_config()["basic.auth.user.info"] == "u:p"
    assert "u:p" not in repr(auth)
