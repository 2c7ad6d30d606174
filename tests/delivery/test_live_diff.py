"""The GitOps PR's `conveyor/diff` check: a server-side dry run against the real cluster."""

from __future__ import annotations

import uuid
from pathlib import Path

import yaml

from conveyor.core import Settings
from conveyor.delivery.live_diff import live_diff
from tests.support.clusters import ClusterHandle


def manifests(ns: str, **configmaps: str) -> str:
    objs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}]
    objs += [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns},
              "data": {"greeting": value}} for name, value in configmaps.items()]
    return yaml.safe_dump_all(objs)


def test_dry_run_diff_against_the_live_cluster(cluster: ClusterHandle, clusters_home: Path) -> None:
    settings = Settings(data_dir=clusters_home)
    ns = f"diff-{uuid.uuid4().hex[:6]}"
    first = manifests(ns, greet="hello", old="bye")
    d = live_diff(settings, cluster.name, first, None)
    assert d.state == "success" and d.summary == f"dry run on {cluster.name}: 3 create"
    assert f"`create` ConfigMap/{ns}/greet" in d.markdown and "+  greeting: hello" in d.markdown
    cluster.kubectl("apply", "--server-side", "--field-manager", "conveyor-agent", "-f", "-", stdin=first)

    second = manifests(ns, greet="hello again")
    d = live_diff(settings, cluster.name, second, first)
    assert d.summary == f"dry run on {cluster.name}: 1 update, 1 delete, 1 unchanged", d.summary
    assert "-  greeting: hello\n+  greeting: hello again" in d.markdown
    assert f"`delete` ConfigMap/{ns}/old" in d.markdown
    assert cluster.kubectl("get", "configmap", "greet", "-n", ns, "-o", "jsonpath={.data.greeting}"
                           ).stdout == "hello"  # nothing was written

    invalid = manifests(ns) + "---\n" + yaml.safe_dump({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": ns},
        "spec": {"ports": [{"port": 70000}]}})
    d = live_diff(settings, cluster.name, invalid, first)
    assert d.state == "failure" and "Service/web" in d.markdown and "70000" in d.markdown


def test_unreachable_cluster_does_not_block(tmp_path: Path) -> None:
    d = live_diff(Settings(data_dir=tmp_path), "nowhere", manifests("x", a="b"), None)
    assert d.state == "success" and "live diff unavailable" in d.summary
