"""Stages (CRDs and Namespaces first), kustomize builds, immutable fields and `force`, depends_on, suspend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conveyor.agent.objects import FORCE_ANNOTATION
from tests.agent.helpers import configmap, get_json, manifest, run_once, saved_status, write_config
from tests.agent.test_agent import data_of, push, sync_for
from tests.forge.helpers import new_repo, unique
from tests.support.clusters import ClusterHandle
from tests.support.server import ServerHandle


def crd(group: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {"spec": {"type": "object", "properties": {"size": {"type": "integer"}}}},
            }}}],
        },
    }


def test_kustomization_with_a_crd_a_namespace_and_their_objects_applies_in_stages(
    cluster: ClusterHandle, forge: ServerHandle, tmp_path: Path
) -> None:
    wc = new_repo(forge, tmp_path, kind="gitops")
    group, ns, name = f"{unique('g')}.example.com", unique("staged"), unique("s")
    widget = {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": ns},
              "spec": {"size": 3}}
    wc.commit_file("deploy/crd.yaml", manifest(crd(group)))
    wc.commit_file("deploy/ns.yaml", manifest({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
    cm = configmap("c", k="v")
    cm["metadata"]["namespace"] = ns
    wc.commit_file("deploy/objects.yaml", manifest(widget, cm))
    wc.commit_file("deploy/kustomization.yaml", manifest({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": ["crd.yaml", "ns.yaml", "objects.yaml"],
        "labels": [{"pairs": {"built-by": "kustomize"}}],
    }))
    push(wc)
    sync = sync_for(wc, name, ns)
    del sync["target_namespace"]
    cfg = write_config(tmp_path / "agent.yaml", forge, cluster, [sync])
    p = run_once(cfg)
    assert p.returncode == 0, p.stdout + p.stderr
    live = get_json(cluster, f"widgets.{group}", "w", "-n", ns)
    assert live["spec"] == {"size": 3}
    assert live["metadata"]["labels"] == {"built-by": "kustomize"}
    assert data_of(cluster, ns, "c") == {"k": "v"}

    # a CR the API server rejects (size must be an integer) fails the revision and applies nothing of it
    widget["spec"]["size"] = "three"
    cm["data"] = {"k": "changed"}
    wc.commit_file("deploy/objects.yaml", manifest(widget, cm))
    push(wc)
    p = run_once(cfg)
    assert p.returncode == 1
    st = saved_status(cfg, name)
    assert st["reason"] == "ValidationFailed" and f"Widget/{ns}/w" in st["message"]
    assert data_of(cluster, ns, "c") == {"k": "v"}


def test_immutable_field_is_reported_and_force_recreates(
    cluster: ClusterHandle, forge: ServerHandle, tmp_path: Path
) -> None:
    wc = new_repo(forge, tmp_path, kind="gitops")
    ns, name = unique("immutable"), unique("s")
    frozen = {**configmap("frozen", v="1"), "immutable": True}
    wc.commit_file("deploy/a.yaml", manifest(frozen))
    push(wc)
    cfg = write_config(tmp_path / "agent.yaml", forge, cluster, [sync_for(wc, name, ns)])
    assert run_once(cfg).returncode == 0
    uid = get_json(cluster, "configmap", "frozen", "-n", ns)["metadata"]["uid"]

    wc.commit_file("deploy/a.yaml", manifest({**frozen, "data": {"v": "2"}}))
    push(wc)
    assert run_once(cfg).returncode == 1
    st = saved_status(cfg, name)
    assert st["reason"] == "ValidationFailed"
    assert f"ConfigMap/{ns}/frozen" in st["message"] and "immutable" in st["message"]
    assert FORCE_ANNOTATION in st["message"]
    assert data_of(cluster, ns, "frozen") == {"v": "1"}

    forced = configmap("frozen", annotations={FORCE_ANNOTATION: "true"}, v="2")
    wc.commit_file("deploy/a.yaml", manifest({**forced, "immutable": True}))
    push(wc)
    p = run_once(cfg)
    assert p.returncode == 0, p.stdout + p.stderr
    live = get_json(cluster, "configmap", "frozen", "-n", ns)
    assert live["data"] == {"v": "2"} and live["metadata"]["uid"] != uid


def test_depends_on_waits_for_ready_and_suspend_applies_nothing(
    cluster: ClusterHandle, forge: ServerHandle, tmp_path: Path
) -> None:
    wc = new_repo(forge, tmp_path, kind="gitops")
    ns_base, ns_app, ns_off = unique("base"), unique("app"), unique("off")
    bad = configmap("base")
    bad["metadata"]["name"] = "Not_A_Valid_Name"
    wc.commit_file("deploy/a.yaml", manifest(bad))
    push(wc)
    syncs = [
        sync_for(wc, "app", ns_app, depends_on=["base"]),
        sync_for(wc, "base", ns_base),
        sync_for(wc, "off", ns_off, suspend=True),
    ]
    cfg = write_config(tmp_path / "agent.yaml", forge, cluster, syncs)
    assert run_once(cfg).returncode == 1
    assert saved_status(cfg, "base")["reason"] == "ValidationFailed"
    app = saved_status(cfg, "app")
    assert app["reason"] == "DependencyNotReady" and "base" in app["message"]
    assert app["last_attempted_revision"] is None
    assert saved_status(cfg, "off")["state"] == "Suspended"
    for ns in (ns_base, ns_app, ns_off):
        names = {o["metadata"]["name"] for o in get_json(cluster, "configmaps", "-n", ns)["items"]}
        assert names <= {"kube-root-ca.crt"}

    wc.commit_file("deploy/a.yaml", manifest(configmap("base", k="v")))
    push(wc)
    p = run_once(cfg)
    assert p.returncode == 0, p.stdout + p.stderr
    assert data_of(cluster, ns_app, "base") == {"k": "v"}
    assert data_of(cluster, ns_off, "base") is None


def test_create_namespaces_makes_the_namespaces_a_revision_uses_but_does_not_define(
    cluster: ClusterHandle, forge: ServerHandle, tmp_path: Path
) -> None:
    """An environment's first Secret arrives before the app that brings its Namespace (issue 19):
    without `create_namespaces` the revision is refused; with it the namespace is made, not inventoried."""
    wc = new_repo(forge, tmp_path, kind="gitops")
    ns, name = unique("made"), unique("s")
    cm = configmap("first", k="v")
    cm["metadata"]["namespace"] = ns
    wc.commit_file("deploy/a.yaml", manifest(cm))
    push(wc)
    sync = sync_for(wc, name, ns)
    del sync["target_namespace"]
    cfg = write_config(tmp_path / "agent.yaml", forge, cluster, [sync])
    assert run_once(cfg).returncode == 1  # namespace not found
    cfg = write_config(tmp_path / "agent.yaml", forge, cluster, [{**sync, "create_namespaces": True}])
    p = run_once(cfg)
    assert p.returncode == 0, p.stdout + p.stderr
    assert data_of(cluster, ns, "first") == {"k": "v"}
    assert saved_status(cfg, name)["inventory"] == [f"ConfigMap/{ns}/first"]
