"""Fixtures of the integration tier: clients and an archive prefix on the real services."""

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from archiver import demo
from archiver.codec.registry import Registry
from archiver.config import KafkaSettings, RegistrySettings
from tests.conftest import _free_ports


@pytest.fixture
def kafka(services) -> KafkaSettings:
    return KafkaSettings.from_env(services.env)


@pytest.fixture
def registry(services):
    with Registry(RegistrySettings.from_env(services.env)) as registry:
        yield registry


@pytest.fixture
def archive_env(services, unique) -> dict:
    """Environment for `archiver run` archiving into a fresh prefix of the real bucket."""
    return os.environ | services.env | {"ARCHIVER_ARCHIVE_URL": f"s3://{services.bucket}/{unique}",
                                        "ARCHIVER_GROUP_ID": f"archiver-{unique}"}


@dataclass(frozen=True)
class ArchivedTopic:
    """Demo events produced into a real topic and archived by `archiver run --once` into real S3."""

    topic: str
    records: int
    partitions: int
    start_ms: int
    span_ms: int
    env: dict  # the environment `archiver` was run with (ARCHIVER_ARCHIVE_URL, ...)

    @property
    def url(self) -> str:
        return self.env["ARCHIVER_ARCHIVE_URL"]


ARCHIVER = str(Path(sys.executable).parent / "archiver")


def archiver(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`archiver ARGS` with `env`, its output captured (it may fail: callers check returncode)."""
    return subprocess.run([ARCHIVER, *args], capture_output=True, text=True, env=env, timeout=timeout, check=False)


def archive_demo(services, name: str, records: int = 4000, partitions: int = 3,
                 start_ms: int = 1_764_000_000_000, span_ms: int = 3 * 3600_000,
                 config: str | None = None, env: dict | None = None) -> ArchivedTopic:
    """Produce `records` demo events spread over `span_ms` and archive them; read-only afterwards.
    `env`: more environment for `archiver run`."""
    env = os.environ | services.env | {"ARCHIVER_ARCHIVE_URL": f"s3://{services.bucket}/{name}",
                                       "ARCHIVER_GROUP_ID": f"archiver-{name}"} | (env or {})
    if config:
        env["ARCHIVER_CONFIG"] = config
    kafka = KafkaSettings.from_env(services.env)
    with Registry(RegistrySettings.from_env(services.env)) as registry:
        demo.produce(kafka, registry, name, records, partitions=partitions, start_ms=start_ms, span_ms=span_ms)
    result = subprocess.run([ARCHIVER, "run", "--once", "--topics", name], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return ArchivedTopic(name, records, partitions, start_ms, span_ms, env)


@pytest.fixture(scope="session")
def archived_demo(services) -> ArchivedTopic:
    """One archived demo topic shared by read-only tests (query, ddl, status): do not modify it."""
    return archive_demo(services, f"shared-demo-{os.urandom(3).hex()}")


@contextlib.contextmanager
def http_server(name: str, command: list[str], probe: str, log_path: Path, env: dict | None = None,
                timeout: float = 60) -> Iterator[None]:
    """Run `command` until the block ends, once `probe` (a URL) answers; its output goes to `log_path`."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(probe, timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    raise RuntimeError(f"the {name} did not start: see {log_path}") from None
                time.sleep(0.3)
        try:
            yield
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="session")
def glue(tmp_path_factory) -> str:
    """A moto server (Glue and the rest of AWS, in memory) on a free port: its endpoint URL."""
    url = f"http://127.0.0.1:{_free_ports(1)[0]}"
    with http_server("moto server", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", url.rsplit(":", 1)[1]],
                     f"{url}/moto-api/", tmp_path_factory.mktemp("moto") / "moto.log"):
        yield url


@pytest.fixture(scope="session")
def spark(services):
    """One Spark 4 session (one JVM) for the whole test session, reading the Iceberg tables."""
    from tests.integration.iceberg_readers import spark_session

    session = spark_session(services.env)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def rest_catalog(services, tmp_path_factory) -> str:
    """Apache Iceberg's REST catalog server (Maven Central, one JVM) on a free port, its tables'
    files on the S3 server: its URL."""
    work = tmp_path_factory.mktemp("rest-catalog")
    pom = Path(__file__).parent / "java" / "rest-catalog" / "pom.xml"
    subprocess.run(["mvn", "-q", "-B", "-f", str(pom), "dependency:build-classpath",
                    f"-Dmdep.outputFile={work / 'classpath'}"], check=True, timeout=900)
    port = _free_ports(1)[0]
    env = os.environ | services.env | {
        "CATALOG_REST_PORT": str(port), "CATALOG_WAREHOUSE": f"s3://{services.bucket}/rest-warehouse",
        "CATALOG_IO__IMPL": "org.apache.iceberg.aws.s3.S3FileIO", "CATALOG_S3_ENDPOINT": services.env["AWS_ENDPOINT_URL"],
        "CATALOG_S3_PATH__STYLE__ACCESS": "true", "CATALOG_CLIENT_REGION": services.env["AWS_DEFAULT_REGION"],
        "AWS_REGION": services.env["AWS_DEFAULT_REGION"]}
    url = f"http://127.0.0.1:{port}"
    command = ["java", "-Xmx256m", "-cp", (work / "classpath").read_text().strip(),
               "org.apache.iceberg.rest.RESTCatalogServer"]
    with http_server("REST catalog server", command, f"{url}/v1/config", work / "server.log", env, timeout=120):
        yield url
