"""How commands end: exit codes, Ctrl-C, closed pipes, an archive URL with nothing under it, progress."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from archiver import terminal
from archiver.archive import Archive
from archiver.cli import cli
from archiver.errors import ConfigError
from archiver.store import open_store
from tests.terminal import on_a_terminal
from tests.unit.test_audit import Builder, T

ARCHIVER = str(Path(sys.executable).parent / "archiver")


@pytest.fixture
def built(tmp_path) -> Builder:
    """Partition 0: offsets 0..99 in two commits of two files each; partition 1: 0..9 in one file."""
    b = Builder(open_store(f"file://{tmp_path}"))
    b.entry(0, 0, 50, [b.file(0, list(range(0, 50, 2)), "0"), b.file(0, list(range(1, 50, 2)), "1")])
    b.entry(0, 50, 100, [b.file(0, list(range(50, 100, 2)), "0"), b.file(0, list(range(51, 100, 2)), "1")])
    b.entry(1, 0, 10, [b.file(1, list(range(10)), "0")])
    return b


@pytest.fixture
def url(tmp_path, built) -> str:
    return f"file://{tmp_path}"


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([ARCHIVER, *args], capture_output=True, text=True, timeout=120, env=env, check=False)


# --- Ctrl-C ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("command,target", [
    (["verify"], "archiver.audit.verify"),
    (["compact"], "archiver.compact.compact"),
    (["query", "SELECT 1"], "archiver.query.Engine.prepare"),
])
def test_ctrl_c_exits_130_with_one_line_and_no_traceback(monkeypatch, url, command, target):
    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(target, interrupted)
    result = CliRunner().invoke(cli, [*command, "--archive-url", url])
    assert result.exit_code == 130
    assert result.output == "archiver: interrupted\n"  # not click's "Aborted!" with exit 1


# --- closed pipes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["verify"], ["verify", "--format", "json"], ["query", f'SELECT * FROM "{T}"']])
def test_a_closed_output_pipe_ends_quietly_with_exit_0(url, args):
    read, write = os.pipe()
    proc = subprocess.Popen([ARCHIVER, *args, "--archive-url", url], stdout=write, stderr=subprocess.PIPE)
    os.close(write)
    os.close(read)  # the reader is gone before archiver writes a byte, as `| head -0` would be
    _, stderr = proc.communicate(timeout=120)
    assert (proc.returncode, stderr) == (0, b"")


# --- an archive URL with nothing under it -----------------------------------------------------------


@pytest.mark.parametrize("command", [["verify"], ["compact"], ["status", "--bootstrap-servers", "127.0.0.1:1"]])
def test_a_url_with_no_archive_under_it_is_bad_input_naming_the_url(tmp_path, built, command):
    mistyped = f"file://{tmp_path}/archvie"
    result = CliRunner().invoke(cli, [*command, "--archive-url", mistyped])
    assert result.exit_code == 2
    assert result.output.splitlines() == [(f"archiver: error: no archive at {mistyped}/: nothing under _ledger/ "
                                           "or topic=*/ (a mistyped bucket or prefix?)")]


def test_a_ledger_or_data_alone_make_an_archive(built):
    Archive(built.store).require()
    for key in list(built.store.list("_ledger/")):
        built.store.delete(key)
    Archive(built.store).require()  # data without a ledger: verify then reports orphans
    for key in list(built.store.list()):
        built.store.delete(key)
    with pytest.raises(ConfigError, match="no archive at file://"):
        Archive(built.store).require()


# --- verify --format json ---------------------------------------------------------------------------


def test_verify_json_is_one_document_with_problems_orphans_counts_and_verdict(url, built):
    built.store.put(f"topic={T}/stray.parquet", b"x")
    ok = CliRunner().invoke(cli, ["verify", "--archive-url", url, "--format", "json"])
    doc = json.loads(ok.output)
    assert ok.exit_code == 0 and doc["ok"] is True and doc["problems"] == []
    assert doc["orphans"] == [{"topic": T, "key": f"topic={T}/stray.parquet"}]
    assert doc["summary"] == {"topics": 1, "partitions": 2, "entries": 3, "files": 5, "rows": 110,
                              "bytes": doc["summary"]["bytes"], "problems": 0, "orphans": 1}
    strict = CliRunner().invoke(cli, ["verify", "--archive-url", url, "--format", "json", "--strict"])
    assert strict.exit_code == 1 and json.loads(strict.output)["ok"] is False

    built.entry(1, 20, 30, [])
    failed = CliRunner().invoke(cli, ["verify", "--archive-url", url, "--format", "json", "--quick"])
    doc = json.loads(failed.output)
    assert failed.exit_code == 1 and doc["ok"] is False and doc["quick"] is True
    (gap,) = doc["problems"]
    assert gap["kind"] == "gap" and gap["partition"] == 1 and gap["where"] == "offsets 10..19"
    assert gap["message"].startswith(f"{T}[1] offsets 10..19: gap")


# --- progress on a terminal -----------------------------------------------------------------------------


def test_verify_and_compact_show_progress_on_a_terminal_only(url):
    code, out, shown = on_a_terminal([ARCHIVER, "verify", "--archive-url", url])
    assert code == 0 and "\rchecked 5 files of 2 partition(s)" in shown and "checked" not in out
    code, out, shown = on_a_terminal([ARCHIVER, "compact", "--archive-url", url, "--dry-run"])
    assert code == 0 and "\rplanned 2/2 partitions" in shown and "planned" not in out

    for args in (["verify"], ["compact", "--dry-run"]):
        piped = run(*args, "--archive-url", url)
        assert piped.returncode == 0 and piped.stderr == ""


def test_progress_draws_only_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty, file = Tty(), io.StringIO()
    for stream in (tty, file):
        progress = terminal.Progress(stream, every_s=0)
        progress.show("checked 1 files")
        progress.show("checked 2 files")
        progress.close()
    assert tty.getvalue() == "\rchecked 1 files \rchecked 2 files \n"
    assert file.getvalue() == ""
