import re

import pytest

from archiver.config import KafkaSettings, RegistrySettings, load_run_settings
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


def _run_env(**extra):
    return {"ARCHIVER_KAFKA_BOOTSTRAP_SERVERS": "b:9092", "ARCHIVER_ARCHIVE_URL": "file:///tmp/a",
            "ARCHIVER_SCHEMA_REGISTRY_URL": "http://r", "ARCHIVER_TOPICS": "a,b"} | extra


def test_run_settings_layer_file_environment_and_flags(tmp_path):
    from archiver.config import load_run_settings

    path = tmp_path / "c.toml"
    path.write_text('[run]\ngroup_id = "file"\nmax_buffer_bytes = "32MiB"\n[defaults]\nkey_buckets = 8\n'
                    '[topics.b]\nkey_partitioning = "none"\n')
    s = load_run_settings(str(path), _run_env(ARCHIVER_GROUP_ID="env"), flags={"topics": "b"})
    assert (s.group_id, s.max_buffer_bytes, s.topics) == ("env", 32 * 1024 * 1024, ("b",))
    assert s.for_topic("a").key_buckets == 8 and s.for_topic("a").key_partitioning == "hash"
    assert s.for_topic("b").key_buckets == 8 and s.for_topic("b").key_partitioning == "none"


@pytest.mark.parametrize("text,message", [
    ("[run]\nbogus = 1\n", "run.bogus: unknown setting"),
    ('[topics.t]\nkey_bucketz = 3\n', 'topics."t".key_bucketz: unknown setting'),
    ("[defaults]\nkey_buckets = 0\n", "defaults.key_buckets: expected 1..4096, got 0"),
    ('[defaults]\nkey_buckets = "many"\n', "defaults.key_buckets: expected int, got 'many'"),
    ('[defaults]\nkey_partitioning = "field"\n', "defaults.key_field and defaults.key_field_values are required"),
    ('[defaults]\nvalue_format = "raw"\n', "defaults.value_schema_file is required"),
    ('[run]\ntopic_pattern = "("\n', "run.topic_pattern: invalid regular expression"),
    ("[kafka\n", "config file"),
])
def test_bad_config_names_the_key(tmp_path, text, message):
    from archiver.config import load_run_settings

    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_run_settings(str(path), _run_env())


def test_topics_or_pattern_and_archive_url_are_required():
    from archiver.config import load_run_settings

    with pytest.raises(ConfigError, match="run.topics is empty"):
        load_run_settings(None, _run_env(ARCHIVER_TOPICS=""))
    with pytest.raises(ConfigError, match="archive.url is not set"):
        load_run_settings(None, _run_env(ARCHIVER_ARCHIVE_URL=""))


def test_commands_that_only_read_the_layout_need_no_connection_settings(tmp_path):
    config = tmp_path / "archiver.toml"
    config.write_text('[defaults]\nkey_buckets = 32\nvalue_format = "confluent"\n')
    settings = load_run_settings(str(config), env={}, needs=frozenset())
    assert settings.for_topic("t").key_buckets == 32 and settings.kafka.bootstrap_servers == ""
    with pytest.raises(ConfigError, match="archive.url is not set"):
        load_run_settings(str(config), env={}, needs=frozenset({"archive"}))
    with pytest.raises(ConfigError, match="kafka.bootstrap_servers is not set"):
        load_run_settings(str(config), env={"ARCHIVER_ARCHIVE_URL": "file:///a"}, needs=frozenset({"kafka"}))
    with pytest.raises(ConfigError, match="schema_registry.url is not set"):
        load_run_settings(str(config), env={"ARCHIVER_ARCHIVE_URL": "file:///a", "ARCHIVER_TOPICS": "t",
                                            "ARCHIVER_KAFKA_BOOTSTRAP_SERVERS": "b:9092"})
