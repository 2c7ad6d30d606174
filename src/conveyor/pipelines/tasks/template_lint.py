"""``template-lint``: render the Helm chart or the Kustomization exactly as CD will (``conveyor.templates``:
same release name, namespace rule, image pinning and post-processing), with the test values, and
validate every object against the schemas of the oldest registered cluster's Kubernetes version.

CD renders the same templates with each environment's values and validates them for that
environment's cluster, so a template that lints here fails there only through values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from conveyor.core import ConveyorError
from conveyor.core.yamlspec import VALUES_LIMITS, SpecError, decode, safe_load
from conveyor.pipelines.tasks.context import TaskContext, fail, say
from conveyor.templates import (
    CI_ENVIRONMENT,
    ImageRef,
    TemplateBundle,
    namespace_for,
    render,
    schema_version,
    validate,
)


def _source(ctx: TaskContext) -> tuple[Path, str, Path | None]:
    app = ctx.app
    rel = ctx.params.get("path") or (app.templates_path if app else None)
    kind = ctx.params.get("kind") or (app.templates_kind if app else None)
    if not rel or not kind:
        fail("no templates: set templates {path, kind} in .conveyor/app.yaml or path/kind in with:")
    path = ctx.path(rel, "templates path")
    if not path.is_dir():
        fail(f"templates directory not found: {rel}")
    values_rel = ctx.params.get("values") or (app.test_values if app else None)
    values = ctx.path(values_rel, "values") if values_rel else None
    if values is not None and not values.exists():
        fail(f"test values not found: {values_rel}")
    return path, kind, values


def helm_lint(chart_dir: Path, values: dict[str, Any], strict: bool) -> None:
    import helm_python as helm

    report = helm.lint(chart_dir, values, strict=strict)
    errors = 0
    names = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}
    for m in report.get("messages", []):
        say(f"helm lint: [{names.get(m.get('severity', 0), '?')}] {m.get('path', '')}: {m.get('error', '')}")
        errors += m.get("severity") == 3 or (strict and m.get("severity") == 2)
    if errors:
        fail(f"helm lint found {errors} error(s) in the chart")


def _helm_values(values_file: Path | None) -> dict[str, Any]:
    import helm_python as helm

    if values_file is None:
        return {}
    try:
        text = decode(values_file.read_bytes(), values_file.name)
        safe_load(text, values_file.name, VALUES_LIMITS)  # size, depth and aliases, before Helm sees it
    except SpecError as exc:
        fail(f"invalid values file: {exc}")
    try:
        values: dict[str, Any] = helm.values_from_yaml(text)
    except helm.HelmError as exc:
        fail(f"invalid values file {values_file.name}: {exc}")
    return values


def _kustomize_entry(path: Path, overlay: Path | None) -> str:
    """A test overlay (``test_values`` naming a directory) must lie inside the templates, as CD gets only those."""
    if overlay is None or not overlay.is_dir():
        return ""
    if not overlay.resolve().is_relative_to(path.resolve()):
        fail(f"the kustomize test overlay {overlay.name} must be inside the templates directory")
    return overlay.resolve().relative_to(path.resolve()).as_posix()


def kubernetes_version(ctx: TaskContext) -> str:
    from conveyor.clusters import KUBERNETES_VERSION

    return str(ctx.params.get("kubernetes_version") or ctx.kubernetes_version or KUBERNETES_VERSION)


def report(text: str, version: str, strict: bool) -> int:
    failures = 0
    findings = validate(text, version)
    for f in findings:
        if not f.valid:
            say(f"{f.name}: {f.message}")
            failures += 1
        elif f.schemaless:
            # Custom resources have no schema here (the cluster's dry run checks them); strict refuses them.
            say(f"{f.name}: {'error' if strict else 'warning'}: {f.message}")
            failures += strict
        else:
            say(f"{f.name}: valid for Kubernetes {version}")
    return failures


def main(ctx: TaskContext) -> None:
    path, kind, values_path = _source(ctx)
    strict = bool(ctx.params.get("strict", False))
    version = kubernetes_version(ctx)
    app = ctx.app
    name = app.name if app else ctx.repo.rsplit("/", 1)[-1]
    image = ImageRef(f"{ctx.registry}/{app.image}", f"{app.version}-{ctx.build_number}") if app else None
    try:
        schema_version(version)
        if kind == "helm":
            values = _helm_values(values_path)
            helm_lint(path, values, strict)
            entry = ""
        else:
            values, entry = {}, _kustomize_entry(path, values_path)
            say(f"$ kubectl kustomize {path.name}{'/' + entry if entry else ''}")
        text = render(TemplateBundle.from_directory(path, kind), app=name,
                      namespace=namespace_for(name, CI_ENVIRONMENT), values=values, image=image, entry=entry)
    except ConveyorError as exc:
        fail(exc.detail)
    except yaml.YAMLError as exc:
        fail(f"rendered output is not valid YAML: {exc}")
    failures = report(text, version, strict)
    if failures:
        fail(f"{failures} rendered object(s) failed Kubernetes {version} schema validation")
    say(f"templates in {path.relative_to(ctx.workspace)} rendered and validated ({kind}, Kubernetes {version})")
