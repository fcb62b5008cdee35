"""Every command reads -c / ARCHIVER_CONFIG, topics accumulate, repeats of one-value options are refused,
logging options work before and after the subcommand."""

from __future__ import annotations

import json
import logging

import pytest
from click.testing import CliRunner

from archiver import logs
from archiver.cli import cli

COMMANDS = [
    ["run", "--once"], ["config"], ["demo"], ["replay", "--topic", "t", "--to-topic", "u", "--dry-run"],
    ["query", "SELECT 1"], ["ddl"], ["catalog", "sync", "--database", "d"], ["status"], ["verify"], ["compact"],
]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """No ARCHIVER_* variable of the machine leaks in; the root logger is restored afterwards."""
    import os

    for name in list(os.environ):
        if name.startswith("ARCHIVER_"):
            monkeypatch.delenv(name)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:], root.level = handlers, level


def invoke(args, env=None):
    return CliRunner().invoke(cli, args, env=env, catch_exceptions=False)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_every_command_reads_the_config_file(tmp_path, command):
    config = tmp_path / "archiver.toml"
    config.write_text("[run]\nbogus_setting = 1\n")
    for args, env in ((command + ["-c", str(config)], None), (command, {"ARCHIVER_CONFIG": str(config)})):
        result = invoke(args, env)
        assert result.exit_code == 2, result.output
        assert "archiver: error: run.bogus_setting: unknown setting" in result.output


def test_query_takes_the_archive_from_the_config_file(tmp_path):
    config = tmp_path / "archiver.toml"
    config.write_text(f'[archive]\nurl = "file://{tmp_path}/archive"\n')
    (tmp_path / "archive").mkdir()
    result = invoke(["query", "-c", str(config), "SELECT 41 + 1 AS answer", "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["answer", "42"]


def test_repeated_topics_accumulate(tmp_path):
    env = {"ARCHIVER_KAFKA_BOOTSTRAP_SERVERS": "b:9092", "ARCHIVER_ARCHIVE_URL": "file:///a",
           "ARCHIVER_SCHEMA_REGISTRY_URL": "http://r"}
    result = invoke(["config", "--topics", "a", "--topics", "b,c", "--topics", "a"], env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["run"]["topics"] == ["a", "b", "c"]


@pytest.mark.parametrize("args", [
    ["config", "--group-id", "x", "--group-id", "y"],
    ["replay", "--topic", "a", "--topic", "b", "--to-topic", "c"],
    ["verify", "--archive-url", "file:///a", "--archive-url", "file:///b"],
    ["compact", "--target-size", "1MB", "--target-size", "2MB"],
    ["query", "--topic", "a", "--topic", "b"],
])
def test_a_repeated_single_value_option_is_an_error(args):
    result = invoke(args)
    assert result.exit_code == 2
    assert "given more than once" in result.output


def test_compact_sizes_mean_the_same_as_in_the_config(tmp_path, monkeypatch):
    from archiver import compact as compact_mod

    seen = []
    monkeypatch.setattr(compact_mod, "compact", lambda archive, topics, settings, dry_run, **_: (
        seen.append(settings), compact_mod.Report())[1])
    (tmp_path / "a").mkdir()
    archive = ["--archive-url", f"file://{tmp_path}/a"]
    assert invoke(["compact", *archive, "--target-size", "128MB"]).exit_code == 0
    assert seen.pop().target_bytes == 128_000_000
    assert invoke(["compact", *archive], {"ARCHIVER_COMPACT_TARGET_BYTES": "128MiB",
                                          "ARCHIVER_COMPACT_GRACE_S": "1m"}).exit_code == 0
    assert (seen[-1].target_bytes, seen.pop().grace_s) == (128 * 2**20, 60.0)
    result = invoke(["compact", *archive, "--target-size", "128m"])
    assert result.exit_code == 2 and "'128m' is ambiguous" in result.output


@pytest.mark.parametrize("args, level", [
    (["config"], logging.WARNING),
    (["config", "-v"], logging.INFO),
    (["-v", "config"], logging.INFO),
    (["-v", "config", "-v"], logging.DEBUG),
    (["config", "-q"], logging.ERROR),
    (["config", "--log-level", "debug"], logging.DEBUG),
    (["--log-level", "error", "config", "--log-level", "info"], logging.INFO),
])
def test_logging_options_work_before_and_after_the_subcommand(args, level):
    invoke(args + ["--reference"])
    assert logging.getLogger().level == level


@pytest.mark.parametrize("verbose, quiet, level, default, expected", [
    (0, 0, None, logging.INFO, logging.INFO), (1, 0, None, logging.INFO, logging.INFO),
    (2, 0, None, logging.INFO, logging.DEBUG), (0, 1, None, logging.INFO, logging.ERROR),
    (0, 2, None, logging.WARNING, logging.CRITICAL), (5, 0, None, logging.WARNING, logging.DEBUG),
    (2, 0, "error", logging.WARNING, logging.ERROR),
])
def test_levels_are_the_same_for_every_command_once_asked_for(verbose, quiet, level, default, expected):
    assert logs.level_of(verbose, quiet, level, default) == expected


def test_third_party_info_lines_are_off_unless_debugging():
    invoke(["config", "-v", "--reference"])
    assert not logging.getLogger("botocore.credentials").isEnabledFor(logging.INFO)
    assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
    assert logging.getLogger("archiver.sink").isEnabledFor(logging.INFO)
    invoke(["config", "-vv", "--reference"])
    assert logging.getLogger("botocore.credentials").isEnabledFor(logging.DEBUG)


def test_config_output_never_shows_a_configured_secret(tmp_path):
    config = tmp_path / "archiver.toml"
    config.write_text('[kafka]\nsasl_password = "file-secret-1"\n[kafka.client]\n"ssl.key.password" = "file-secret-2"\n'
                      '"sasl.oauthbearer.client.secret" = "file-secret-3"\n')
    env = {"ARCHIVER_KAFKA_BOOTSTRAP_SERVERS": "b:9092", "ARCHIVER_ARCHIVE_URL": "file:///a",
           "ARCHIVER_SCHEMA_REGISTRY_URL": "http://r", "ARCHIVER_TOPICS": "t",
           "ARCHIVER_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": "user:env-secret-4",
           "ARCHIVER_KAFKA_CLIENT_SSL_KEY_PEM": "env-secret-5"}
    result = invoke(["config", "-c", str(config)], env)
    assert result.exit_code == 0, result.output
    assert "secret-" not in result.output
    shown = json.loads(result.output)
    assert shown["kafka"]["client"] == {"ssl.key.password": "****", "sasl.oauthbearer.client.secret": "****",
                                        "ssl.key.pem": "****"}


def test_an_error_message_never_shows_a_configured_secret(tmp_path):
    logs.add_secrets(["err-secret-6"])
    result = invoke(["verify", "--archive-url", "bogus://x/err-secret-6"])
    assert result.exit_code == 2 and "archive url 'bogus://x/****'" in result.output


def test_repeated_log_lines_are_collapsed():
    now = [0.0]
    filt = logs.RepeatFilter(interval_s=60, clock=lambda: now[0])

    def line(message):
        return logging.LogRecord("librdkafka", logging.ERROR, __file__, 1, message, None, None)

    fail = "FAIL [thrd:b:1/bootstrap]: b:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused"
    shown = [filt.filter(line(f"{fail} (after {i}ms in state CONNECT)")) for i in range(100)]
    assert shown.count(True) == 1
    assert filt.filter(line("another line"))
    now[0] = 61.0
    record = line(f"{fail} (after 0ms in state CONNECT)")
    assert filt.filter(record) and "(99 more like it in the last 61s)" in record.getMessage()
