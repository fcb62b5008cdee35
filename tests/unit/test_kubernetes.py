"""The Helm chart (deploy/helm/archiver) and the plain manifests rendered from it: `helm lint`,
kubeconform against Kubernetes' schema, and what the rendered objects promise an operator."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

import archiver
from tests.kubeschema import write_schemas

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "archiver"
MANIFESTS = REPO / "deploy" / "kubernetes"
TOOLS = Path(os.environ.get("ARCHIVER_TOOLS_DIR", Path.home() / ".cache" / "archiver" / "tools"))
SWAGGER = TOOLS / "kubernetes-v1.37.2-swagger.json"
SERVICEMONITOR_CRD = TOOLS / "servicemonitor-crd-v0.85.0.yaml"
ARCHIVER = str(Path(sys.executable).parent / "archiver")

# Every optional part switched on: a chart-made secret, IRSA, the ServiceMonitor, both CronJobs.
FULL = {
    "secret": {"stringData": {"ARCHIVER_KAFKA_SASL_PASSWORD": "s3cret-pw",
                              "ARCHIVER_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": "archiver:reg-pw"}},
    "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/archiver"}},
    "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    "cronJobs": {"compact": {"enabled": True}, "publish": {"enabled": True}},
    "metrics": {"port": 9500},
}


def tool(name: str) -> str:
    path = TOOLS / name
    if not path.exists():
        pytest.skip(f"{name} is not in {TOOLS} (infra/tools fetches it)")
    return str(path)


def helm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([tool("helm"), *args], capture_output=True, text=True, check=False)


def render_text(tmp_path: Path, values: dict | None = None, *files: Path) -> str:
    args = ["template", "archiver", str(CHART), "--namespace", "archiver"]
    for f in files:
        args += ["-f", str(f)]
    if values:
        path = tmp_path / f"values-{hashlib.sha1(repr(values).encode()).hexdigest()[:8]}.yaml"
        path.write_text(yaml.safe_dump(values))
        args += ["-f", str(path)]
    result = helm(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def render(tmp_path: Path, values: dict | None = None) -> list[dict]:
    return [d for d in yaml.safe_load_all(render_text(tmp_path, values)) if d]


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def kubeconform(tmp_path: Path, manifest: Path) -> subprocess.CompletedProcess:
    """kubeconform -strict with schemas made from Kubernetes' OpenAPI for the kinds in `manifest`."""
    if not SWAGGER.exists() or not SERVICEMONITOR_CRD.exists():
        pytest.skip(f"Kubernetes' OpenAPI or the ServiceMonitor CRD is not in {TOOLS} (infra/tools fetches them)")
    docs = [d for d in yaml.safe_load_all(manifest.read_text()) if d]
    schemas = tmp_path / "schemas"
    missing = write_schemas(SWAGGER, [SERVICEMONITOR_CRD], {(d["apiVersion"], d["kind"]) for d in docs}, schemas)
    assert missing == []
    return subprocess.run([tool("kubeconform"), "-strict", "-summary", "-schema-location",
                           f"{schemas}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json", str(manifest)],
                          capture_output=True, text=True, check=False)


def test_the_chart_lints_clean(tmp_path):
    result = helm("lint", "--strict", str(CHART))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout
    for values in (FULL, {"secret": {"existingSecret": "mine"}, "serviceAccount": {"create": False, "name": "x"}}):
        path = tmp_path / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        result = helm("lint", "--strict", str(CHART), "-f", str(path))
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("values", [None, FULL], ids=["defaults", "everything on"])
def test_rendered_objects_are_valid_against_the_kubernetes_schema(tmp_path, values):
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(render_text(tmp_path, values))
    count = len([d for d in yaml.safe_load_all(manifest.read_text()) if d])
    result = kubeconform(tmp_path, manifest)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Valid: {count}, Invalid: 0, Errors: 0, Skipped: 0" in result.stdout


@pytest.mark.parametrize(("mistake", "found"), [
    ("containerPort: 9500", "containerPorts: 9500"),          # an unknown field
    ("maxUnavailable: 1", "maxUnavailable: [1]"),             # a wrong type
    ("interval: 30s", "intervall: 30s"),                      # in the ServiceMonitor (its CRD)
])
def test_kubeconform_with_these_schemas_refuses_a_mistake(tmp_path, mistake, found):
    """The generated schemas are strict: what they accept above is not accepted by default."""
    text = render_text(tmp_path, FULL)
    assert mistake in text
    manifest = tmp_path / "broken.yaml"
    manifest.write_text(text.replace(mistake, found, 1))
    result = kubeconform(tmp_path, manifest)
    assert result.returncode != 0
    assert "Invalid: 1" in result.stdout


def test_the_plain_manifests_are_the_chart_rendered(tmp_path):
    header = (MANIFESTS / "archiver.yaml").read_text().splitlines(keepends=True)[0]
    rendered = header + render_text(tmp_path, None, MANIFESTS / "values.yaml")
    assert (MANIFESTS / "archiver.yaml").read_text() == rendered, "deploy/kubernetes is stale: run make manifests"
    result = kubeconform(tmp_path, MANIFESTS / "archiver.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_pod_is_a_static_group_member_named_after_itself(tmp_path):
    sts = one(render(tmp_path, FULL), "StatefulSet")
    container = sts["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["ARCHIVER_GROUP_INSTANCE_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert container["args"] == ["run"]
    assert sts["spec"]["serviceName"] == one(render(tmp_path, FULL), "Service")["metadata"]["name"]


def test_probes_and_metrics_use_the_port_archiver_serves_them_on(tmp_path):
    docs = render(tmp_path, FULL)
    sts = one(docs, "StatefulSet")
    container = sts["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    port = int(env["ARCHIVER_METRICS_ADDRESS"].rsplit(":", 1)[1])
    assert port == 9500 and container["ports"] == [{"name": "metrics", "containerPort": 9500}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    service, monitor = one(docs, "Service"), one(docs, "ServiceMonitor")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["metadata"]["labels"]["release"] == "prometheus"


def test_the_disruption_budget_and_service_select_the_daemon_not_the_jobs(tmp_path):
    docs = render(tmp_path, FULL)
    daemon = one(docs, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    jobs = [d["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"] for d in docs if d["kind"] == "CronJob"]
    assert len(jobs) == 2
    for selector in (one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
                     one(docs, "Service")["spec"]["selector"]):
        assert selector.items() <= daemon.items()
        assert not any(selector.items() <= labels.items() for labels in jobs)
    assert one(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_the_config_map_is_a_config_file_archiver_reads(tmp_path):
    """`archiver config` in the pod's environment: the mounted file, the container's variables
    (the pod name as ARCHIVER_GROUP_INSTANCE_ID) and the secret's, resolved as the daemon would."""
    docs = render(tmp_path, FULL)
    text = one(docs, "ConfigMap")["data"]["archiver.toml"]
    tomllib.loads(text)
    pod = one(docs, "StatefulSet")["spec"]["template"]["spec"]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "config")
    container_env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert container_env["ARCHIVER_CONFIG"] == f"{mount['mountPath']}/archiver.toml"
    path = tmp_path / "archiver.toml"
    path.write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVER_")}
    env |= {k: v for k, v in container_env.items() if v is not None} | one(docs, "Secret")["stringData"]
    env |= {"ARCHIVER_CONFIG": str(path), "ARCHIVER_GROUP_INSTANCE_ID": "archiver-0"}
    shown = subprocess.run([ARCHIVER, "config"], capture_output=True, text=True, env=env, check=False)
    assert shown.returncode == 0, shown.stderr
    resolved = json.loads(shown.stdout)
    assert resolved["kafka"]["bootstrap_servers"] == "kafka:9092"
    assert resolved["run"]["topics"] == ["web-events"] and resolved["run"]["group_id"] == "archiver"
    assert resolved["run"]["group_instance_id"] == "archiver-0"
    assert (resolved["run"]["metrics_address"], resolved["run"]["log_format"]) == ("0.0.0.0:9500", "json")
    assert resolved["kafka"]["sasl_password"] == "****"  # set from the secret, never shown
    assert resolved["schema_registry"]["basic_auth_user_info"] == "****"


def test_secrets_stay_out_of_the_config_map_and_a_config_change_rolls_the_pods(tmp_path):
    docs = render(tmp_path, FULL)
    assert "s3cret-pw" not in yaml.safe_dump(one(docs, "ConfigMap"))
    container = one(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": one(docs, "Secret")["metadata"]["name"]}}]
    changed = FULL | {"config": '[kafka]\nbootstrap_servers = "other:9092"\n'}
    annotation = "checksum/config"
    before = one(docs, "StatefulSet")["spec"]["template"]["metadata"]["annotations"][annotation]
    after = one(render(tmp_path, changed), "StatefulSet")["spec"]["template"]["metadata"]["annotations"][annotation]
    assert before != after
    existing = render(tmp_path, {"secret": {"existingSecret": "archiver-credentials"}})
    assert not [d for d in existing if d["kind"] == "Secret"]
    assert one(existing, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]["envFrom"] == [
        {"secretRef": {"name": "archiver-credentials"}}]


def test_pods_run_as_the_images_unprivileged_user_with_the_irsa_service_account(tmp_path):
    docs = render(tmp_path, FULL)
    uid = re.search(r"^USER (\d+):", (REPO / "infra" / "Dockerfile").read_text(), re.MULTILINE).group(1)
    account = one(docs, "ServiceAccount")
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    pods = [one(docs, "StatefulSet")["spec"]["template"]["spec"]]
    pods += [d["spec"]["jobTemplate"]["spec"]["template"]["spec"] for d in docs if d["kind"] == "CronJob"]
    for pod in pods:
        assert pod["serviceAccountName"] == account["metadata"]["name"]
        assert pod["securityContext"]["runAsUser"] == int(uid)
        security = pod["containers"][0]["securityContext"]
        assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
        assert not security["allowPrivilegeEscalation"]
        assert any(m["mountPath"] == "/tmp" for m in pod["containers"][0]["volumeMounts"])


def test_shutdown_has_time_to_commit(tmp_path):
    """SIGTERM commits the buffers within run.shutdown_timeout_s; the grace period must outlast it."""
    from archiver.config import RunSettings

    sts = one(render(tmp_path), "StatefulSet")
    assert sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > RunSettings.shutdown_timeout_s


def test_the_cron_jobs_run_real_archiver_commands_one_at_a_time(tmp_path):
    jobs = [d for d in render(tmp_path, FULL) if d["kind"] == "CronJob"]
    assert {tuple(j["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]) for j in jobs} == {
        ("compact",), ("catalog", "publish")}
    for job in jobs:
        assert job["spec"]["concurrencyPolicy"] == "Forbid"
        args = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
        assert subprocess.run([ARCHIVER, *args, "--help"], capture_output=True, check=False).returncode == 0


def test_the_chart_version_follows_archiver():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == archiver.__version__
