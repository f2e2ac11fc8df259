"""Strict offline schema validation of manifests: the vendored Kubernetes 1.31 JSON Schemas and KubeRay CRDs
(tests/k8s_schemas), with unknown fields made errors as `kubectl --validate=strict` does.

    schema_errors(doc)                      # [] when valid; one line per violation otherwise
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SCHEMAS_ENV = "C3DHASH_K8S_SCHEMAS"
CORE_VERSION = "v1.31.0-local-strict"
OBJECT_META = ("https://kubernetes.io/api/_definitions.json"
               "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")


def schema_dir() -> Path:
    d = Path(os.environ.get(SCHEMAS_ENV) or Path(__file__).parent / "k8s_schemas")
    if not (d / "kuberay").is_dir() or not (d / "core" / CORE_VERSION).is_dir():
        pytest.fail(f"k8s schemas not found in {d} (need kuberay/ and core/{CORE_VERSION}/); restore "
                    f"tests/k8s_schemas from git or point {SCHEMAS_ENV} at a copy of shared/k8s-schemas")
    return d


def schema_checksum_problems(root: Path) -> list[str]:
    problems = []
    for line in (root / "SHA256SUMS").read_text().splitlines():
        digest, rel = line.split(maxsplit=1)
        path = root / rel
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            problems.append(f"{path}: missing or modified (expected sha256 {digest})")
    return problems


@lru_cache(maxsize=None)
def _core() -> tuple[Registry, dict[tuple[str, str], dict[str, Any]]]:
    resources, index = [], {}
    for f in sorted((schema_dir() / "core" / CORE_VERSION).glob("*.json")):
        schema = json.loads(f.read_text())
        resources.append((schema["$id"], Resource.from_contents(schema, default_specification=DRAFT202012)))
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            api = f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]
            index[(api, gvk["kind"])] = schema
    return Registry().with_resources(resources), index


def strict(schema: Any) -> Any:
    """Make unknown fields errors, as `kubectl --validate=strict` does and plain JSON Schema does not."""
    if isinstance(schema, dict):
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        for value in schema.values():
            strict(value)
    elif isinstance(schema, list):
        for value in schema:
            strict(value)
    return schema


@lru_cache(maxsize=None)
def _crd_schema(kind: str) -> dict[str, Any]:
    files = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml",
             "RayService": "ray.io_rayservices.yaml"}
    crd = yaml.load((schema_dir() / "kuberay" / files[kind]).read_text(), Loader=yaml.CSafeLoader)
    v1 = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema = strict(copy.deepcopy(v1["schema"]["openAPIV3Schema"]))
    # The CRD leaves these open (the API server checks them); hold them to the same standard as core kinds.
    schema["properties"].update(apiVersion={"const": "ray.io/v1"}, kind={"const": kind},
                                metadata={"$ref": OBJECT_META})
    schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
    return schema


@lru_cache(maxsize=None)
def _validator(api: str, kind: str) -> Draft202012Validator | None:
    registry, index = _core()
    if api == "ray.io/v1" and kind in ("RayCluster", "RayJob", "RayService"):
        return Draft202012Validator(_crd_schema(kind), registry=registry)
    return Draft202012Validator(index[(api, kind)], registry=registry) if (api, kind) in index else None


def schema_errors(doc: dict[str, Any]) -> list[str]:
    api, kind = doc.get("apiVersion", ""), doc.get("kind", "")
    name = (doc.get("metadata") or {}).get("name")
    validator = _validator(api, kind)
    if validator is None:
        return [f"{kind}/{name}: no schema for {api} {kind}; add one to tests/k8s_schemas (see its README)"]
    return [f"{kind}/{name}: {'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in validator.iter_errors(doc)]
