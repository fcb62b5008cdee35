"""Test tiers and the real services the integration tier runs against.

Tests under tests/unit are marked `unit`, those under tests/integration `integration`. The
`services` fixture reuses services already started by `infra/services up` (the default state
folder) or starts its own on free ports and stops them at the end of the session.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SERVICES = REPO / "infra" / "services"


def pytest_collection_modifyitems(items):
    for item in items:
        tier = "integration" if "integration" in item.path.parts else "unit"
        item.add_marker(getattr(pytest.mark, tier))


@dataclass(frozen=True)
class Services:
    """Where the real services answer, as the `infra/services env` variables."""

    env: dict[str, str]
    control_env: dict[str, str]  # the environment infra/services was started with (state folder, ports)

    def restart(self, name: str) -> None:
        """Stop and start one service (its data is kept: Kafka's log dirs survive a restart)."""
        subprocess.run([SERVICES, "down", name], env=self.control_env, check=True)
        subprocess.run([SERVICES, "up", name], env=self.control_env, check=True)

    @property
    def bootstrap_servers(self) -> str:
        return self.env["ARCHIVER_KAFKA_BOOTSTRAP_SERVERS"]

    @property
    def registry_url(self) -> str:
        return self.env["ARCHIVER_SCHEMA_REGISTRY_URL"]

    @property
    def archive_url(self) -> str:
        return self.env["ARCHIVER_ARCHIVE_URL"]

    @property
    def bucket(self) -> str:
        return self.archive_url.removeprefix("s3://").split("/")[0]


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _exports(env: dict[str, str]) -> dict[str, str]:
    out = subprocess.run([SERVICES, "env"], env=env, capture_output=True, text=True, check=True).stdout
    return dict(line.removeprefix("export ").split("=", 1) for line in out.splitlines() if line)


@pytest.fixture(scope="session")
def services() -> Services:
    env = dict(os.environ)
    state = None
    if subprocess.run([SERVICES, "status"], env=env, capture_output=True).returncode != 0:
        state = tempfile.mkdtemp(prefix="archiver-test-services-")
        ports = _free_ports(8)
        env |= {"ARCHIVER_STATE_DIR": state, "ARCHIVER_KAFKA_PORT": str(ports[0]),
                "ARCHIVER_KAFKA_CONTROLLER_PORT": str(ports[1]), "ARCHIVER_S3_PORT": str(ports[2]),
                "ARCHIVER_REGISTRY_PORT": str(ports[3]), "ARCHIVER_REGISTRY_MANAGEMENT_PORT": str(ports[4]),
                "ARCHIVER_KAFKA_SASL_PORT": str(ports[5]), "ARCHIVER_KAFKA_SSL_PORT": str(ports[6]),
                "ARCHIVER_REGISTRY_TLS_PORT": str(ports[7])}
        subprocess.run([SERVICES, "up"], env=env, check=True)
    exports = _exports(env)
    saved = {k: os.environ.get(k) for k in exports}
    os.environ.update(exports)  # boto3 and the CLI read the standard variables
    yield Services(exports, env)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    if state:
        subprocess.run([SERVICES, "down"], env=env, check=False)
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def unique(request) -> str:
    """A name no other test (or earlier run against the same services) uses."""
    return f"{request.node.name.replace('[', '-').replace(']', '').replace('_', '-')[:40]}-{os.urandom(3).hex()}"
