"""Rendering published templates per environment: the real Helm engine and `kubectl kustomize`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conveyor.delivery.render import RenderError, TemplateBundle, render, validate_rendered

ROOT = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "ab" * 32


def bundle_of(directory: Path, kind: str) -> TemplateBundle:
    files = {p.relative_to(directory).as_posix(): p.read_bytes() for p in directory.rglob("*") if p.is_file()}
    return TemplateBundle(kind=kind, files=files)


def test_helm_chart_rendered_for_an_environment_with_the_image_pinned() -> None:
    bundle = bundle_of(ROOT / "examples/hello/chart", "helm")
    out = render(bundle, app="hello", namespace="hello-qa", image="127.0.0.1:5000/apps/hello", tag="1.0.0-7",
                 digest=DIGEST, values={"replicaCount": 3})
    objs = list(yaml.safe_load_all(out))
    kinds = [o["kind"] for o in objs]
    assert kinds == ["Namespace", "Service", "Deployment"]  # stable order: namespace, services, workloads
    assert objs[0]["metadata"]["name"] == "hello-qa"
    dep = objs[2]
    assert dep["metadata"]["namespace"] == "hello-qa"
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == f"127.0.0.1:5000/apps/hello:1.0.0-7@{DIGEST}"
    assert validate_rendered(out) == []
    again = render(bundle, app="hello", namespace="hello-qa", image="127.0.0.1:5000/apps/hello", tag="1.0.0-7",
                   digest=DIGEST, values={"replicaCount": 3})
    assert again == out


def test_kustomize_rendered_with_namespace_and_image_override(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: [deploy.yaml]\n")
    (tmp_path / "deploy.yaml").write_text(yaml.safe_dump({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "apps/web"}]}}},
    }))
    out = render(bundle_of(tmp_path, "kustomize"), app="web", namespace="web-dev", image="apps/web",
                 tag="2.0.0-1", digest=DIGEST, values={})
    ns, dep = list(yaml.safe_load_all(out))
    assert ns["kind"] == "Namespace" and dep["metadata"]["namespace"] == "web-dev"
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == f"apps/web:2.0.0-1@{DIGEST}"


def test_broken_templates_and_invalid_objects_are_reported(tmp_path: Path) -> None:
    chart = bundle_of(ROOT / "examples/hello/chart", "helm")
    broken = TemplateBundle(kind="helm", files={**chart.files, "templates/broken.yaml": b"{{ .Values.nope.deeper }}"})
    with pytest.raises(RenderError) as exc:
        render(broken, app="hello", namespace="n", image="i", tag="t", digest=DIGEST, values={})
    assert exc.value.rule == "render.helm" and "nope" in exc.value.detail
    invalid = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: not-a-number}]}\n"
    problems = validate_rendered(invalid)
    assert problems and problems[0].startswith("Service/s: invalid at spec.ports.0.port")
