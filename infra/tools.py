"""Fetch the tools the tests validate with into ~/.cache/archiver/tools (never system-wide).

Usage: infra/tools [NAME ...]     (default: all of them)

  promtool             Prometheus's rule checker, from Debian's `prometheus` package (the .deb is unpacked)
  nginx                Debian's nginx (unpacked), the HTTPS + basic-auth front of the local registry
  helm                 Helm v4, built from the Go module proxy (`go install`)
  kubeconform          the Kubernetes manifest validator, built from the Go module proxy
  kubernetes-openapi   Kubernetes' OpenAPI (swagger.json) from the k8s.io/kubernetes module, which the
                       tests turn into kubeconform's JSON schemas (kubeconform's own come from GitHub)
  servicemonitor-crd   the prometheus-operator ServiceMonitor CRD, from its Go module

A tool already in the folder is kept. Prints one line per tool fetched; exits 1 when one cannot be
had (no apt-get, no go, no network), naming it: the tests that need it are skipped elsewhere, and
required by .ci/run. Only the standard library is used.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HELM = "helm.sh/helm/v4/cmd/helm@v4.3.2"
KUBECONFORM = "github.com/yannh/kubeconform/cmd/kubeconform@v0.8.0"
KUBERNETES = ("k8s.io/kubernetes", "v1.37.2", "api/openapi-spec/swagger.json")
PROMETHEUS_OPERATOR = ("github.com/prometheus-operator/prometheus-operator", "v0.85.0",
                       "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml")


class ToolError(Exception):
    """A tool could not be had; printed as one line."""


def _run(argv: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(argv, check=False, capture_output=True, text=True, **kwargs)
    except FileNotFoundError:
        raise ToolError(f"{what}: {argv[0]} not found on PATH") from None
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise ToolError(f"{what} failed (exit {result.returncode}): {lines[-1] if lines else ''}")
    return result


def _deb(package: str, member: str, dest: Path) -> None:
    """Copy `member` out of Debian's `package` (apt-get download, dpkg-deb -x)."""
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        raise ToolError(f"{dest.name} comes from Debian's {package} package: needs apt-get and dpkg-deb")
    with tempfile.TemporaryDirectory() as work:
        download = ["apt-get", "download", package]
        if subprocess.run(download, check=False, capture_output=True, cwd=work).returncode != 0:
            if os.getuid() != 0:
                raise ToolError(f"apt-get download {package} failed (run apt-get update as root first)")
            _run(["apt-get", "update", "-qq"], "apt-get update")
            _run(download, f"apt-get download {package}", cwd=work)
        deb = next(Path(work).glob(f"{package}_*.deb"))
        _run(["dpkg-deb", "-x", str(deb), "unpacked"], f"unpacking {deb.name}", cwd=work)
        shutil.copy2(Path(work) / "unpacked" / member, dest)


def _go_install(package: str, dest: Path) -> None:
    if not shutil.which("go"):
        raise ToolError(f"{dest.name} is built with `go install {package}`: go not found on PATH")
    _run(["go", "install", package], f"go install {package}", env=dict(os.environ, GOBIN=str(dest.parent)))


def _go_module_file(module: str, version: str, member: str, dest: Path) -> None:
    if not shutil.which("go"):
        raise ToolError(f"{dest.name} comes from the Go module {module}: go not found on PATH")
    with tempfile.TemporaryDirectory() as work:  # outside any module, so go.mod is not consulted
        info = json.loads(_run(["go", "mod", "download", "-json", f"{module}@{version}"],
                               f"go mod download {module}@{version}", cwd=work).stdout)
    shutil.copyfile(Path(info["Dir"]) / member, dest)


TOOLS = {
    "promtool": ("promtool", lambda d: _deb("prometheus", "usr/bin/promtool", d)),
    "nginx": ("nginx", lambda d: _deb("nginx", "usr/sbin/nginx", d)),
    "helm": ("helm", lambda d: _go_install(HELM, d)),
    "kubeconform": ("kubeconform", lambda d: _go_install(KUBECONFORM, d)),
    "kubernetes-openapi": (f"kubernetes-{KUBERNETES[1]}-swagger.json", lambda d: _go_module_file(*KUBERNETES, d)),
    "servicemonitor-crd": (f"servicemonitor-crd-{PROMETHEUS_OPERATOR[1]}.yaml",
                           lambda d: _go_module_file(*PROMETHEUS_OPERATOR, d)),
}


def main(argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    names = argv or list(TOOLS)
    unknown = [n for n in names if n not in TOOLS]
    if unknown:
        print(f"infra/tools: unknown tool {unknown[0]!r}; choose from {', '.join(TOOLS)}", file=sys.stderr)
        return 2
    home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    folder = Path(os.environ.get("ARCHIVER_TOOLS_DIR", home / "archiver" / "tools"))
    folder.mkdir(parents=True, exist_ok=True)
    failed = 0
    for name in names:
        filename, fetch = TOOLS[name]
        dest = folder / filename
        if dest.exists():
            continue
        try:
            fetch(dest)
        except (ToolError, OSError, StopIteration, KeyError, ValueError) as e:
            print(f"infra/tools: {name}: {e or type(e).__name__}", file=sys.stderr)
            failed = 1
            continue
        print(f"infra/tools: {name} in {dest}", file=sys.stderr)
    return failed


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
