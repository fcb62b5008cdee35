"""The installed command line and infra/services' handling of bad input."""

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.conftest import SERVICES

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


def test_demo_command_produces_and_reads_back(services, unique):
    result = subprocess.run([ARCHIVER, "demo", "--topic", unique, "--count", "200", "--partitions", "2"],
                            capture_output=True, text=True, env=os.environ | services.env)
    assert result.returncode == 0, result.stderr
    assert "consumed 200 events back" in result.stdout


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
