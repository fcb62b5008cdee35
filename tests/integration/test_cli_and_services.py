"""The installed command line and infra/services' handling of bad input."""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from tests.conftest import SERVICES, _free_ports

ARCHIVER = str(Path(sys.executable).parent / "archiver")


def test_archiver_help_lists_commands():
    for argv in ([ARCHIVER, "--help"], [sys.executable, "-m", "archiver", "--help"]):
        result = subprocess.run(argv, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert "Usage: archiver" in result.stdout and "demo" in result.stdout


def test_missing_bootstrap_servers_is_one_line_and_exit_2():
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVER_")}
    result = subprocess.run([ARCHIVER, "demo"], capture_output=True, text=True, env=env)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "kafka.bootstrap_servers is not set" in result.stderr


def test_demo_command_produces_archives_and_shows_the_archive(services, unique):
    env = os.environ | services.env | {"ARCHIVER_ARCHIVE_URL": f"s3://{services.bucket}/{unique}"}
    result = subprocess.run([ARCHIVER, "demo", "--topic", unique, "--count", "600", "--partitions", "3"],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert "archiver run --once: 600 records in" in result.stdout
    assert f"now holds 600 records of {unique!r}" in result.stdout
    assert f"--to-topic {unique}-replay: " in result.stdout and "records re-published" in result.stdout
    assert "6. archiver compact --closed-after 0s: " in result.stdout and "1 per closed directory" in result.stdout
    assert "7. archiver query" in result.stdout and "pruned the rest" in result.stdout
    assert f"8. archiver verify --topics {unique}: " in result.stdout and "0 problem(s)" in result.stdout
    assert "CREATE EXTERNAL TABLE" in result.stdout and "'projection.enabled'='true'" in result.stdout


def test_config_prints_the_resolved_settings_with_secrets_masked(tmp_path):
    config = tmp_path / "archiver.toml"
    config.write_text('[kafka]\nsasl_password = "hunter2"\n[run]\ngroup_id = "from-file"\n'
                      '[defaults]\nkey_buckets = 32\n[topics."orders"]\ntime_granularity = "day"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVER_")} | {
        "ARCHIVER_KAFKA_BOOTSTRAP_SERVERS": "broker:9092", "ARCHIVER_SCHEMA_REGISTRY_URL": "http://registry:8081",
        "ARCHIVER_ARCHIVE_URL": "s3://bucket/prefix", "ARCHIVER_GROUP_ID": "from-env"}
    result = subprocess.run([ARCHIVER, "config", "-c", str(config), "--topics", "orders,clicks"],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout and '"sasl_password": "****"' in result.stdout
    assert '"group_id": "from-env"' in result.stdout  # environment over file
    assert '"topics": [\n      "orders",\n      "clicks"\n    ]' in result.stdout
    assert '"key_buckets": 32' in result.stdout and '"time_granularity": "day"' in result.stdout


def test_bad_config_names_the_key_with_exit_2(tmp_path):
    config = tmp_path / "archiver.toml"
    config.write_text('[defaults]\ntime_granularity = "week"\n')
    env = os.environ | {"ARCHIVER_KAFKA_BOOTSTRAP_SERVERS": "b:9092", "ARCHIVER_ARCHIVE_URL": "file:///tmp/x",
                        "ARCHIVER_TOPICS": "t", "ARCHIVER_SCHEMA_REGISTRY_URL": "http://r"}
    result = subprocess.run([ARCHIVER, "run", "-c", str(config)], capture_output=True, text=True, env=env)
    assert result.returncode == 2
    assert result.stderr == ("archiver: error: defaults.time_granularity: expected one of day, hour, minute, "
                             "got 'week'\n")


def test_services_up_with_a_busy_port_fails_in_one_line_and_starts_nothing(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = os.environ | {"ARCHIVER_STATE_DIR": str(tmp_path), "ARCHIVER_S3_PORT": str(port)}
        result = subprocess.run([SERVICES, "up", "kafka", "s3"], capture_output=True, text=True, env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"infra/services up: s3: port {port} is already in use by another process; "
        "free it or set the ARCHIVER_*_PORT variables (see infra/services env)"
    ] or "kafka: port" in result.stderr
    assert not list(tmp_path.glob("*/pid"))


def test_services_up_without_maven_says_so_in_one_line(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python = subprocess.run(["python3", "-c", "import sys; print(sys.executable)"], capture_output=True,
                            text=True, check=True).stdout.strip()  # the interpreter, not a version-manager shim
    (bin_dir / "python3").symlink_to(python)
    for tool in ("sh", "java"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path), "ARCHIVER_STATE_DIR": str(tmp_path / "state"),
           "ARCHIVER_CACHE_DIR": str(tmp_path / "empty-cache"), "ARCHIVER_KAFKA_PORT": "0"}
    ports = ("ARCHIVER_KAFKA_PORT", "ARCHIVER_KAFKA_CONTROLLER_PORT", "ARCHIVER_KAFKA_SASL_PORT", "ARCHIVER_KAFKA_SSL_PORT")
    env |= dict(zip(ports, map(str, _free_ports(len(ports)))))  # free even where the services run on the defaults
    result = subprocess.run([str(SERVICES), "up", "kafka"], capture_output=True, text=True, env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "infra/services up: Maven (mvn) not found on PATH; it fetches the Kafka jars from Maven Central")
    assert not list((tmp_path / "state").glob("*/pid"))


def test_an_unreachable_broker_is_one_line_not_a_flood_of_client_logs(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVER_")} | {
        "ARCHIVER_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{closed}", "ARCHIVER_ARCHIVE_URL": f"file://{tmp_path}/a",
        "ARCHIVER_SCHEMA_REGISTRY_URL": f"http://127.0.0.1:{closed}", "ARCHIVER_TOPICS": "t"}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    for extra in ([], ["-v"]):
        result = subprocess.run([ARCHIVER, "run", "--once", *extra], capture_output=True, text=True, env=env,
                                timeout=120)
        lines = result.stderr.strip().splitlines()
        assert result.returncode != 0
        assert len(lines) <= 5, result.stderr
        assert any(f"kafka at 127.0.0.1:{closed} unreachable" in line for line in lines), result.stderr
        assert not any(line.startswith("%") for line in lines)  # no raw librdkafka line
