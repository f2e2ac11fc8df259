"""What `kubectl apply -k DIR` sends: `kubectl kustomize` where kubectl is on PATH, else a small renderer.

    docs = render(K8S)                 # the documents, as dicts (kubectl's output when present)
    docs = render_subset(K8S)          # this module's renderer only (tests/test_k8s.py compares it to kubectl)

The subset renderer implements only the kustomize features k8s/ uses (resources, components, namespace,
images, configMapGenerator without hash suffix) and raises RenderError on anything else, so a manifest change
that relies on an unimplemented feature fails loudly instead of being checked half-way. Where kubectl exists
(the Debian package bundles kustomize), a test asserts both give the same documents for every kustomization.
"""
from __future__ import annotations

import shutil
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
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


def render_subset(kdir: Path, kind: str = "Kustomization") -> list[dict[str, Any]]:
    """The documents `kustomize build kdir` would print (for the features listed in the module docstring)."""
    kdir = Path(kdir)
    k = _read_kustomization(kdir, kind)
    docs: list[dict[str, Any]] = []
    for entry in k.get("resources", []):
        target = (kdir / entry).resolve()
        docs += render_subset(target) if target.is_dir() else _load_docs(_inside(kdir, entry))
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


def kubectl() -> str | None:
    return shutil.which("kubectl")


def _kubectl_output(kdir: str) -> str:
    out = subprocess.run([kubectl(), "kustomize", kdir], capture_output=True, text=True, timeout=120)
    if out.returncode:
        raise RenderError(f"kubectl kustomize {kdir}: {out.stderr.strip()}")
    return out.stdout


_cached_output = lru_cache(maxsize=None)(_kubectl_output)  # k8s/ does not change during a test run


def render_kubectl(kdir: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize kdir`, parsed (a fresh copy per call: tests may edit what they get). Folders under
    k8s/ are rendered once per run; others (tests' temporary kustomizations) every time."""
    kdir = Path(kdir).resolve()
    text = (_cached_output if kdir.is_relative_to(K8S.resolve()) else _kubectl_output)(str(kdir))
    return [d for d in yaml.safe_load_all(text) if d]


def render(kdir: Path) -> list[dict[str, Any]]:
    """kubectl's rendering where kubectl is on PATH (what a user applies), else the subset renderer."""
    return render_kubectl(kdir) if kubectl() else render_subset(kdir)


def doc_key(doc: dict[str, Any]) -> tuple[str, str, str, str]:
    meta = doc.get("metadata") or {}
    return doc.get("apiVersion", ""), doc.get("kind", ""), meta.get("namespace", ""), meta.get("name", "")
