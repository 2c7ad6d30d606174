"""What users see (issue 14): the agent reports each sync's objects as a tree with health, sync state,
events and pod log lines, and the server keeps it for the dashboard."""

from __future__ import annotations

from pathlib import Path

from tests.agent.helpers import manifest, run_once, write_config
from tests.agent.test_agent import push, sync_for
from tests.forge.helpers import new_repo, unique
from tests.support.clusters import ClusterHandle, deployment, service
from tests.support.server import ServerHandle


def test_reported_tree_has_deployment_replicaset_pod_with_health_events_and_logs(
    cluster: ClusterHandle, forge: ServerHandle, hello_image: str, tmp_path: Path
) -> None:
    wc = new_repo(forge, tmp_path, kind="gitops")
    ns, name = unique("tree"), unique("s")
    wc.commit_file("deploy/app.yaml", manifest(deployment("hello", hello_image), service("hello")))
    push(wc)
    cfg = write_config(tmp_path / "agent.yaml", forge, cluster, [sync_for(wc, name, ns, wait=True, timeout="10m")])
    p = run_once(cfg)
    assert p.returncode == 0, p.stdout + p.stderr

    r = forge.api().get(f"/api/v1/clusters/{cluster.name}/agent-status")  # what the server keeps
    assert r.status_code == 200, r.text
    sync = next(s for s in r.json()["syncs"] if s["name"] == name)
    objects = {o["id"]: o for o in sync["objects"]}
    dep, svc = objects[f"Deployment/{ns}/hello"], objects[f"Service/{ns}/hello"]
    assert (dep["parent"], dep["health"], dep["sync"]) == (None, "Current", "Synced"), dep
    assert (svc["parent"], svc["health"], svc["sync"]) == (None, "Current", "Synced"), svc
    [rs] = [o for o in objects.values() if o["kind"] == "ReplicaSet"]
    assert (rs["parent"], rs["health"], rs["sync"]) == (dep["id"], "Current", None), rs
    [pod] = [o for o in objects.values() if o["kind"] == "Pod"]
    assert (pod["parent"], pod["health"], pod["message"]) == (rs["id"], "Current", "pod ready"), pod
    assert pod["name"].startswith(rs["name"] + "-")
    assert {"Scheduled", "Started"} <= {e["reason"] for e in pod["events"]}, pod["events"]
    assert any(e["reason"] == "SuccessfulCreate" for e in rs["events"]), rs["events"]
    assert any(e["reason"] == "ScalingReplicaSet" for e in dep["events"]), dep["events"]
    # busybox httpd -v logs each readiness probe's request: the pod's newest lines are there
    assert pod["logs"]["container"] == "app" and pod["logs"]["lines"], pod["logs"]
    assert len(pod["logs"]["lines"]) <= 20, pod["logs"]
    assert any(line.endswith("response:200") for line in pod["logs"]["lines"]), pod["logs"]
