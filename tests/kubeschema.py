"""kubeconform's JSON schemas, made from Kubernetes' own OpenAPI document and CRDs.

kubeconform fetches its schemas from GitHub at run time; here they are generated from the
swagger.json of the k8s.io/kubernetes module and the prometheus-operator CRD that `infra/tools`
caches, the way kubeconform's schemas are made: every `$ref` inlined ("standalone"), objects closed
to unknown fields ("strict"), int-or-string and quantities accepting both, and null accepted where a
template leaves a value empty. Only the kinds a test renders are generated.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

INT_OR_STRING = {"oneOf": [{"type": ["string", "null"]}, {"type": "integer"}]}
QUANTITY = {"oneOf": [{"type": ["string", "null"]}, {"type": "number"}]}


def filename(api_version: str, kind: str) -> str:
    """As kubeconform's `{{ .ResourceKind }}{{ .KindSuffix }}.json`: statefulset-apps-v1.json."""
    group, _, version = api_version.rpartition("/")
    suffix = f"-{group.split('.')[0]}-{version}" if group else f"-{version}"
    return f"{kind.lower()}{suffix.lower()}.json"


def _strict(schema: Any) -> Any:
    """Close every object with properties to unknown fields and let typed values be null."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {k: _strict(v) for k, v in schema["properties"].items()}
        if "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), dict):
            out[key] = _strict(out[key])
    for key in ("oneOf", "anyOf", "allOf"):
        if key in out:
            out[key] = [_strict(s) for s in out[key]]
    if isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def _inline(schema: Any, definitions: dict, stack: tuple[str, ...] = ()) -> Any:
    if isinstance(schema, list):
        return [_inline(s, definitions, stack) for s in schema]
    if not isinstance(schema, dict):
        return schema
    ref = schema.get("$ref")
    if ref is not None:
        name = ref.removeprefix("#/definitions/")
        if name.endswith("intstr.IntOrString"):
            return INT_OR_STRING
        if name.endswith("resource.Quantity"):
            return QUANTITY
        if name in stack:  # a recursive type (JSONSchemaProps): accept anything below
            return {}
        return _inline(definitions[name], definitions, (*stack, name))
    if schema.get("format") == "int-or-string":
        return INT_OR_STRING
    return {k: _inline(v, definitions, stack) if k != "enum" else v for k, v in schema.items()}


def write_schemas(swagger: Path, crds: list[Path], kinds: set[tuple[str, str]], out: Path) -> list[str]:
    """Write the schema of each (apiVersion, kind) in `kinds` into `out`; returns the kinds found
    in neither source (kubeconform then reports them missing)."""
    doc = json.loads(swagger.read_text())
    definitions = doc["definitions"]
    by_kind: dict[tuple[str, str], Any] = {}
    for name, definition in definitions.items():
        for gvk in definition.get("x-kubernetes-group-version-kind", []):
            api_version = f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]
            if (api_version, gvk["kind"]) in kinds:
                by_kind[(api_version, gvk["kind"])] = _inline(definition, definitions, (name,))
    for crd_path in crds:
        crd = yaml.safe_load(crd_path.read_text())
        spec = crd["spec"]
        for version in spec["versions"]:
            key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
            if key in kinds:
                by_kind[key] = version["schema"]["openAPIV3Schema"]
    out.mkdir(parents=True, exist_ok=True)
    for (api_version, kind), schema in by_kind.items():
        (out / filename(api_version, kind)).write_text(json.dumps(_strict(schema)))
    return sorted(f"{a} {k}" for a, k in kinds - set(by_kind))
