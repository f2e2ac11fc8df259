"""Offline tooling for tests/test_k8s.py: a small kustomize renderer, strict schema validation, pod-template
walking, a NetworkPolicy evaluator and Dockerfile/.dockerignore readers. No kubectl, docker or network.

    docs = render(K8S)                      # what `kubectl apply -k k8s/` would send, as dicts
    schema_errors(docs[0])                  # [] when valid; one line per violation otherwise

The renderer implements only the kustomize features k8s/ uses (resources, components, namespace, images,
configMapGenerator without hash suffix) and raises RenderError on anything else, so a manifest change that
relies on an unimplemented feature fails loudly instead of being checked half-way.
"""
from __future__ import annotations

import configparser
import copy
import hashlib
import json
import os
import re
import shlex
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
SCHEMAS_ENV = "C3DHASH_K8S_SCHEMAS"
CORE_VERSION = "v1.31.0-local-strict"
OBJECT_META = ("https://kubernetes.io/api/_definitions.json"
               "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass",
                  "CustomResourceDefinition", "PriorityClass"}
_KUSTOMIZATION_KEYS = {"apiVersion", "kind", "namespace", "resources", "components", "images",
                       "configMapGenerator"}


class RenderError(Exception):
    """The kustomization uses something this renderer does not implement, or breaks kustomize's rules."""


# --------------------------------------------------------------------------- rendering
def _read_kustomization(kdir: Path, kind: str) -> dict[str, Any]:
    path = kdir / "kustomization.yaml"
    if not path.is_file():
        raise RenderError(f"{kdir}: no kustomization.yaml")
    k = yaml.safe_load(path.read_text()) or {}
    if k.get("kind", "Kustomization") != kind:
        raise RenderError(f"{path}: kind {k.get('kind')!r}, expected {kind}")
    unknown = sorted(set(k) - _KUSTOMIZATION_KEYS)
    if unknown:
        raise RenderError(f"{path}: {', '.join(unknown)} not implemented by tests/k8s_helpers.py; "
                          f"add it there")
    return k


def _inside(kdir: Path, entry: str) -> Path:
    """Kustomize's default load restrictor: files must lie under the kustomization root."""
    target = (kdir / entry).resolve()
    if not target.is_relative_to(kdir.resolve()):
        raise RenderError(f"{kdir}/kustomization.yaml: {entry} is outside the kustomization root "
                          f"(load restrictor)")
    return target


def _load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _config_map(kdir: Path, gen: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(gen) - {"name", "files", "options"})
    if unknown or not (gen.get("options") or {}).get("disableNameSuffixHash"):
        raise RenderError(f"{kdir}: configMapGenerator {gen.get('name')}: only `files` with "
                          f"options.disableNameSuffixHash: true are implemented "
                          f"(got {unknown or 'a hash suffix'})")
    data = {}
    for entry in gen["files"]:
        key, _, rel = entry.rpartition("=") if "=" in entry else (Path(entry).name, "", entry)
        data[key] = _inside(kdir, rel).read_text()
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data}


def _split_image(image: str) -> tuple[str, str]:
    name, sep, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon:] + (sep + digest)
    return name, sep + digest


def _set_images(node: Any, images: list[dict[str, str]]) -> None:
    """Kustomize's legacy image filter: every `containers`/`initContainers` list anywhere (CRs included)."""
    if isinstance(node, list):
        for item in node:
            _set_images(item, images)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key in ("containers", "initContainers") and isinstance(value, list):
            for c in value:
                name, rest = _split_image(c.get("image", ""))
                for img in images:
                    if img["name"] == name:
                        tag = f":{img['newTag']}" if "newTag" in img else rest
                        suffix = f"@{img['digest']}" if "digest" in img else tag
                        c["image"] = img.get("newName", name) + suffix
        _set_images(value, images)


def _transform(k: dict[str, Any], docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        if k.get("namespace") and doc["kind"] not in CLUSTER_SCOPED:
            doc.setdefault("metadata", {})["namespace"] = k["namespace"]
        if k.get("images"):
            _set_images(doc, k["images"])


def render(kdir: Path, kind: str = "Kustomization") -> list[dict[str, Any]]:
    """The documents `kustomize build kdir` would print (for the features listed in the module docstring)."""
    kdir = Path(kdir)
    k = _read_kustomization(kdir, kind)
    docs: list[dict[str, Any]] = []
    for entry in k.get("resources", []):
        target = (kdir / entry).resolve()
        docs += render(target) if target.is_dir() else _load_docs(_inside(kdir, entry))
    docs += [_config_map(kdir, g) for g in k.get("configMapGenerator", [])]
    for comp in k.get("components", []):
        cdir = (kdir / comp).resolve()
        ck = _read_kustomization(cdir, "Component")
        docs += [d for e in ck.get("resources", []) for d in _load_docs(_inside(cdir, e))]
        _transform(ck, docs)
    _transform(k, docs)
    return docs


def kustomizations() -> list[Path]:
    """k8s/ and every overlay below it (a Component is not applied on its own)."""
    dirs = [p.parent for p in sorted(K8S.rglob("kustomization.yaml"))]
    return [d for d in dirs if (yaml.safe_load((d / "kustomization.yaml").read_text()) or {}).get(
        "kind", "Kustomization") == "Kustomization"]


# --------------------------------------------------------------------------- schemas
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
    files = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}
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
    if api == "ray.io/v1" and kind in ("RayCluster", "RayJob"):
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


# --------------------------------------------------------------------------- walking manifests
def ray_cluster_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for d in docs:
        if d["kind"] == "RayCluster":
            yield f"RayCluster/{d['metadata']['name']}", d["spec"]
        elif d["kind"] == "RayJob":
            yield f"RayJob/{d['metadata']['name']}", d["spec"]["rayClusterSpec"]


def pod_templates(docs: list[dict[str, Any]]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(where, role, template) of every pod the manifests create; role: head|worker|submitter|deployment."""
    for d in docs:
        if d["kind"] == "Deployment":
            yield f"Deployment/{d['metadata']['name']}", "deployment", d["spec"]["template"]
        if d["kind"] == "RayJob" and d["spec"].get("submitterPodTemplate"):
            yield f"RayJob/{d['metadata']['name']}/submitter", "submitter", d["spec"]["submitterPodTemplate"]
    for where, spec in ray_cluster_specs(docs):
        yield f"{where}/head", "head", spec["headGroupSpec"]["template"]
        for g in spec.get("workerGroupSpecs", []):
            yield f"{where}/{g['groupName']}", "worker", g["template"]


def containers(template: dict[str, Any]) -> list[dict[str, Any]]:
    spec = template["spec"]
    return list(spec.get("containers", [])) + list(spec.get("initContainers", []))


def mounts_by_path(template: dict[str, Any], container: dict[str, Any]) -> dict[str, tuple[dict, dict]]:
    """mountPath -> (volumeMount, volume) for one container of a pod template."""
    volumes = {v["name"]: v for v in template["spec"].get("volumes", [])}
    return {m["mountPath"]: (m, volumes.get(m["name"], {})) for m in container.get("volumeMounts", [])}


def gpus(container: dict[str, Any]) -> int:
    return int((container.get("resources", {}).get("limits") or {}).get("nvidia.com/gpu", 0))


def cpus(container: dict[str, Any]) -> float:
    value = str((container.get("resources", {}).get("limits") or {}).get("cpu", "0"))
    return float(value[:-1]) / 1000 if value.endswith("m") else float(value)


def shell_words(text: str) -> list[str]:
    """bash-like words; operators (&&, ;, |, ...) come out as their own tokens even without spaces."""
    lex = shlex.shlex(text, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    return list(lex)


def submitted_argv(entrypoint: str) -> list[str]:
    """What `ray job submit -- ...` receives. KubeRay's submitter pastes the entrypoint unquoted into a
    bash line (`ray job submit ... -- <entrypoint> ; ...`): a bare `a && b` runs `b` in the submitter pod."""
    words = shell_words(entrypoint)
    operators = [w for w in words if w and set(w) <= set("&|;<>()")]
    if operators:
        raise AssertionError(f"entrypoint {entrypoint!r}: the submitter's shell would act on {operators}; "
                             f"wrap a chain as bash -c '... && ...'")
    return words


def command_argvs(entrypoint: str) -> list[list[str]]:
    """`bash -c 'c3dhash A ... && c3dhash B ...'` or `c3dhash A ...` -> [["c3dhash", "A", ...], ...]."""
    argv = submitted_argv(entrypoint)
    if argv[:2] != ["bash", "-c"]:
        return [argv]
    if len(argv) != 3:
        raise AssertionError(f"entrypoint {entrypoint!r}: bash -c takes exactly one quoted script")
    chunks: list[list[str]] = [[]]
    for word in shell_words(argv[2]):
        if word == "&&":
            chunks.append([])
        elif set(word) <= set("&|;<>()"):
            raise AssertionError(f"entrypoint {entrypoint!r}: only `&&` chains are expected, not {word!r}")
        else:
            chunks[-1].append(word)
    return chunks


def parse_commands(entrypoint: str) -> list[tuple[str, dict[str, list[str]]]]:
    """`c3dhash A --x 1 --set k=v && c3dhash B ...` -> [("A", {"--x": ["1"], "--set": ["k=v"]}), ...]."""
    out = []
    for argv in command_argvs(entrypoint):
        if len(argv) < 2 or argv[0] != "c3dhash" or len(argv[2:]) % 2:
            raise AssertionError(f"entrypoint part {' '.join(argv)!r}: "
                                 f"expected `c3dhash CMD --opt value ...`")
        opts: dict[str, list[str]] = {}
        for flag, value in zip(argv[2::2], argv[3::2]):
            opts.setdefault(flag, []).append(value)
        out.append((argv[1], opts))
    return out


# --------------------------------------------------------------------------- NetworkPolicy semantics
def selector_matches(sel: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    if sel is None:
        return False
    if any(labels.get(k) != v for k, v in (sel.get("matchLabels") or {}).items()):
        return False
    for e in sel.get("matchExpressions") or []:
        has, value = e["key"] in labels, labels.get(e["key"])
        values = e.get("values", [])
        ok = {"In": has and value in values, "NotIn": not has or value not in values,
              "Exists": has, "DoesNotExist": not has}[e["operator"]]
        if not ok:
            return False
    return True


def _peer_matches(peer: dict[str, Any], policy_ns: str, src: dict[str, Any]) -> bool:
    if "ipBlock" in peer:
        return False  # pod-to-pod traffic is judged by selectors; ipBlock peers are reported by the tests
    if "namespaceSelector" in peer:
        ns_ok = selector_matches(peer["namespaceSelector"], src["namespace_labels"])
    else:
        ns_ok = src["namespace"] == policy_ns
    pod_ok = selector_matches(peer["podSelector"], src["labels"]) if "podSelector" in peer else True
    return ns_ok and pod_ok


def ingress_allowed(policies: list[dict[str, Any]], *, dst_ns: str, dst_labels: dict[str, str],
                    src: dict[str, Any], port: int) -> bool:
    """Kubernetes semantics: a pod selected by an Ingress policy accepts only what some rule of one admits."""
    selecting = [p for p in policies if p["metadata"].get("namespace") == dst_ns
                 and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
                 and selector_matches(p["spec"]["podSelector"], dst_labels)]
    if not selecting:
        return True
    for p in selecting:
        for rule in p["spec"].get("ingress") or []:
            ports = rule.get("ports")
            if ports and not any(pp.get("port") == port and pp.get("protocol", "TCP") == "TCP"
                                 for pp in ports):
                continue
            peers = rule.get("from")
            if not peers or any(_peer_matches(peer, p["metadata"]["namespace"], src) for peer in peers):
                return True
    return False


# --------------------------------------------------------------------------- packaging
def setup_cfg_pins() -> dict[str, str]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    pins = {}
    for line in cfg["options"]["install_requires"].split("\n"):
        if "==" in line:
            name, version = line.strip().split("==")
            pins[re.sub(r"\[.*\]", "", name)] = version
    return pins


def setup_cfg_packages() -> list[str]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return [p.rstrip("*") for p in cfg["options.packages.find"]["include"].split()]


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with comments dropped and `\\` continuations joined."""
    lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
    text = re.sub(r"\\\n", "", "\n".join(lines))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
            for line in text.splitlines() if line.strip()]


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Docker's rules: the last matching pattern wins; a pattern matching a directory matches inside it."""
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        rx = _glob_regex(pattern.lstrip("!").strip("/"))
        parts = path.split("/")
        if any(rx.match("/".join(parts[:k])) for k in range(1, len(parts) + 1)):
            excluded = not negate
    return excluded


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        else:
            out += {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i]))
            i += 1
    return re.compile(out + r"\Z")


def read_dockerignore(path: Path) -> list[str]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]
