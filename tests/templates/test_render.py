"""Rendering published templates per environment: the real Helm engine and `kubectl kustomize`,
validated for the Kubernetes version of the cluster that will run them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conveyor.clusters import KUBERNETES_VERSION
from conveyor.clusters.spec import ClusterSpec, save
from conveyor.core import Settings
from conveyor.delivery.adapters import cluster_version
from conveyor.pipelines.config import oldest_cluster_version
from conveyor.templates import (
    ImageRef,
    RenderError,
    TemplateBundle,
    namespace_for,
    oldest_version,
    problems,
    release_name,
    render,
    schema_version,
    validate,
)

ROOT = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "ab" * 32
IMAGE = ImageRef("127.0.0.1:5000/apps/hello", "1.0.0-7", DIGEST)

# A pod field added in Kubernetes 1.35: a 1.34 API server rejects it, the newest schema accepts it.
NEWER_THAN_134 = yaml.safe_dump({
    "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "n"},
    "spec": {"containers": [{"name": "c", "image": "i"}], "schedulingGroup": {}},
})
# ClusterTrustBundle is certificates.k8s.io/v1alpha1 in 1.34 and gone from it later.
ONLY_IN_134 = yaml.safe_dump({
    "apiVersion": "certificates.k8s.io/v1alpha1", "kind": "ClusterTrustBundle", "metadata": {"name": "b"},
    "spec": {"trustBundle": "-----BEGIN CERTIFICATE-----", "unexpected": 1},
})


def chart() -> TemplateBundle:
    return TemplateBundle.from_directory(ROOT / "examples/hello/chart", "helm")


def test_helm_chart_rendered_for_an_environment_with_the_image_pinned() -> None:
    out = render(chart(), app="hello", namespace="hello-qa", image=IMAGE, values={"replicaCount": 3})
    objs = list(yaml.safe_load_all(out))
    # hello (NodePort) and its dependency, the counter (ClusterIP), from the same image
    assert [(o["kind"], o["metadata"]["name"]) for o in objs] == [
        ("Namespace", "hello-qa"), ("Service", "hello"), ("Service", "hello-counter"), ("Deployment", "hello"),
        ("Deployment", "hello-counter")]
    assert objs[1]["spec"]["type"] == "NodePort" and objs[2]["spec"]["type"] == "ClusterIP"
    dep, counter = objs[3], objs[4]
    assert dep["metadata"]["namespace"] == "hello-qa" and dep["spec"]["replicas"] == 3
    assert dep["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "conveyor"
    for d in (dep, counter):
        assert d["spec"]["template"]["spec"]["containers"][0]["image"] == f"127.0.0.1:5000/apps/hello:1.0.0-7@{DIGEST}"
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["COUNTER_URL"] == "http://hello-counter.hello-qa.svc.cluster.local:80"  # by its Service's DNS name
    assert counter["spec"]["template"]["spec"]["containers"][0]["command"][:3] == ["python3", "-m", "hello.counter"]
    # hello's Service does not select the counter's pods
    assert objs[1]["spec"]["selector"].items() - counter["spec"]["template"]["metadata"]["labels"].items()
    assert problems(out, KUBERNETES_VERSION) == []
    assert render(chart(), app="hello", namespace="hello-qa", image=IMAGE, values={"replicaCount": 3}) == out


def test_ci_and_cd_share_release_name_and_namespace_rules() -> None:
    assert release_name("hello") == "hello"
    assert namespace_for("hello", "test") == "hello-test" and namespace_for("hello", "qa", "apps-{env}") == "apps-qa"
    lint = render(chart(), app="hello", namespace=namespace_for("hello", "test"), values={},
                  image=ImageRef("r/apps/hello", "1.0.0-7"))
    deploy = render(chart(), app="hello", namespace=namespace_for("hello", "dev"), values={}, image=IMAGE)
    # Same objects, names and image repository; only the namespace and the digest pin differ.
    assert lint.replace("hello-test", "hello-dev").replace("r/apps/hello:1.0.0-7", "") == \
        deploy.replace(f"127.0.0.1:5000/apps/hello:1.0.0-7@{DIGEST}", "")


def test_kustomize_rendered_with_namespace_and_image_override(tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    (tmp_path / "kustomization.yaml").write_text("resources: [base]\n")
    (tmp_path / "base/kustomization.yaml").write_text("resources: [deploy.yaml]\n")
    (tmp_path / "base/deploy.yaml").write_text(yaml.safe_dump({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "apps/web"}]}}},
    }))
    (tmp_path / "overlays/test").mkdir(parents=True)
    (tmp_path / "overlays/test/kustomization.yaml").write_text("resources: [../../base]\nnamePrefix: t-\n")
    bundle = TemplateBundle.from_directory(tmp_path, "kustomize")
    out = render(bundle, app="web", namespace="web-dev", image=ImageRef("apps/web", "2.0.0-1", DIGEST), values={})
    ns, dep = list(yaml.safe_load_all(out))
    assert ns["kind"] == "Namespace" and dep["metadata"]["namespace"] == "web-dev"
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == f"apps/web:2.0.0-1@{DIGEST}"
    overlay = render(bundle, app="web", namespace="web-test", image=None, values={}, entry="overlays/test")
    assert list(yaml.safe_load_all(overlay))[1]["metadata"]["name"] == "t-web"
    with pytest.raises(RenderError) as exc:
        render(bundle, app="web", namespace="n", image=None, values={}, entry="../outside")
    assert exc.value.rule == "render.kustomize"


def test_broken_templates_and_invalid_objects_are_reported() -> None:
    broken = TemplateBundle(kind="helm", files={**chart().files, "templates/broken.yaml": b"{{ .Values.nope.deeper }}"})
    with pytest.raises(RenderError) as exc:
        render(broken, app="hello", namespace="n", image=IMAGE, values={})
    assert exc.value.rule == "render.helm" and "nope" in exc.value.detail
    invalid = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: not-a-number}]}\n"
    found = problems(invalid, KUBERNETES_VERSION)
    assert found and found[0].startswith("Service/s: invalid at spec.ports.0.port")
    with pytest.raises(RenderError) as exc:
        TemplateBundle(kind="jsonnet", files={})
    assert exc.value.rule == "render.kind"


def test_objects_are_judged_by_the_clusters_kubernetes_version() -> None:
    assert KUBERNETES_VERSION.startswith("v1.34.")
    assert problems(NEWER_THAN_134, "v1.37.0") == []
    assert problems(NEWER_THAN_134, KUBERNETES_VERSION) == [
        "Pod/p: invalid at spec: Additional properties are not allowed ('schedulingGroup' was unexpected)"]
    # The reverse: a 1.34-only API is checked against its 1.34 schema, and has none in the newest.
    assert problems(ONLY_IN_134, KUBERNETES_VERSION)[0].startswith("ClusterTrustBundle/b: invalid at spec")
    assert [f.schemaless for f in validate(ONLY_IN_134, "v1.37.0")] == [True]
    assert schema_version("v1.34.4") == "1.34.4"
    with pytest.raises(RenderError) as exc:
        schema_version("v1.99.0")
    assert exc.value.rule == "render.kubernetes-version"


def test_cd_uses_the_target_cluster_and_ci_the_oldest(tmp_path: Path) -> None:
    from conveyor.clusters.models import RegisteredCluster
    from conveyor.core import Database

    settings = Settings(data_dir=tmp_path)
    db = Database(f"sqlite:///{tmp_path / 'conveyor.db'}")
    db.migrate()

    def oldest() -> str:
        with db.session() as s:
            return oldest_cluster_version(s, tmp_path)

    assert cluster_version(settings, "prod") == KUBERNETES_VERSION  # not registered: the pinned release
    assert oldest() == KUBERNETES_VERSION
    save(tmp_path, ClusterSpec(name="prod", version="v1.37.1"))
    save(tmp_path, ClusterSpec(name="nonprod", version="v1.34.4"))
    save(tmp_path, ClusterSpec(name="new", version=""))  # still being created
    assert cluster_version(settings, "prod") == "v1.37.1"
    assert problems(NEWER_THAN_134, cluster_version(settings, "prod")) == []
    assert oldest() == "v1.34.4"
    assert problems(NEWER_THAN_134, oldest())
    with db.session() as s:  # an external cluster the server knows only by its registration counts too
        s.add(RegisteredCluster(name="edge", agent="conveyor", kubernetes_version="v1.33.2", created_by="t"))
    assert oldest() == "v1.33.2"
    assert oldest_version(["v1.36.0", "v1.9.2", "v1.34.4"]) == "v1.9.2"
