"""The alert rules and the Grafana dashboard of deploy/observability: valid, tested with promtool,
and naming only metrics that archiver's /metrics exports."""

import collections
import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

from archiver import metrics
from archiver.sink import Stats, TopicCounts
from archiver.store import REQUESTS

pytestmark = pytest.mark.unit

HERE = Path(__file__).resolve().parents[2] / "deploy" / "observability"
RULES, RULE_TESTS, DASHBOARD = HERE / "archiver-alerts.yaml", HERE / "archiver-alerts.test.yaml", HERE / "grafana-dashboard.json"


def promtool() -> str:
    found = shutil.which("promtool") or str(Path.home() / ".cache" / "archiver" / "tools" / "promtool")
    if not Path(found).exists():
        pytest.skip("promtool is not installed (infra/tools unpacks Debian's)")
    return found


def test_promtool_checks_the_rules():
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 10 rules found" in result.stdout


def test_the_rules_fire_as_their_unit_tests_say():
    result = subprocess.run([promtool(), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True,
                            check=False, cwd=HERE)
    assert result.returncode == 0, result.stdout + result.stderr


def fake_daemon() -> SimpleNamespace:
    """What DaemonCollector reads of a daemon, with compaction and publishing on: every family."""
    stats = Stats(records_in=10, records_out=8, rotations={"records": 1})
    stats.topics["orders"] = TopicCounts(records_in=10, records_out=8, dead_lettered=1, lost=1)
    stats.upload_latency.observe(0.2)
    REQUESTS.add("put")  # the request counts are the process's
    sink = SimpleNamespace(stats=stats, buffered_bytes=lambda: 1024)
    compaction = SimpleNamespace(runs=1, failures=0, totals=collections.Counter(files_in=4, files_out=1))
    publishing = SimpleNamespace(commits=2, failures=0, last_success=1.7e9, last_seconds=1.5)
    return SimpleNamespace(sink=sink, rebalances=1, outages_started={"store": 1}, waiting=lambda: {"store": 2},
                           paused_partitions=lambda: [("orders", 0)], lag=lambda: {("orders", 0): 5},
                           compaction=compaction, publishing=publishing, consumer=SimpleNamespace(kind="native"))


@pytest.fixture(scope="module")
def exported() -> set[str]:
    """The sample names /metrics serves (counters with _total, histograms with _bucket, ...)."""
    server = metrics.serve("127.0.0.1:0", fake_daemon(), lambda: True, lambda: False)
    try:
        port = server.server_address[1]
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        server.shutdown()
    assert "archiver_ready 0.0" in text  # the readiness gauge follows /readyz
    return {re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line)[0] for line in text.splitlines() if line and line[0] != "#"}


def referenced(exprs: list[str]) -> set[str]:
    return {name for expr in exprs for name in re.findall(r"\b((?:archiver|process)_[a-z_]+)\b", expr)}


def test_every_metric_the_rules_name_is_exported(exported):
    exprs = re.findall(r"expr: (?:>-\n)?((?:.+\n?)+?)\s+(?:for|labels):", RULES.read_text())
    assert len(exprs) == 10
    names = referenced(exprs)
    assert names and names <= exported, f"not exported: {sorted(names - exported)}"


def test_every_metric_the_dashboard_shows_is_exported(exported):
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert all(panel["targets"] for panel in dashboard["panels"])
    names = referenced(exprs)
    assert names <= exported, f"not exported: {sorted(names - exported)}"
    # throughput, lag, upload latency, buffered bytes, dead letters, rebalances, compaction, publishing
    for wanted in ("archiver_records_in_total", "archiver_consumer_lag", "archiver_upload_seconds_bucket",
                   "archiver_buffered_bytes", "archiver_dead_lettered_total", "archiver_rebalances_total",
                   "archiver_compaction_bytes_in_total", "archiver_table_commits_total"):
        assert wanted in names, wanted
