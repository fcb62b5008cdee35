"""Packaging metadata: one version, a license file that matches the declared license."""

import importlib.metadata
import tomllib

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
