"""The agent inside its cluster, installed by `conveyor agent install`: its own image from Conveyor's
registry, the forge reached at host.conveyor.internal, its inventory in the cluster (so a new pod
carries on where a deleted one stopped)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.agent import helpers
from tests.agent.helpers import commit_statuses, configmap, get_json, manifest
from tests.forge.helpers import WorkingCopy, new_repo, unique
from tests.support.clusters import ClusterHandle
from tests.support.server import ServerHandle

NS = "conveyor-system"


@pytest.fixture
def installed(cluster: ClusterHandle, forge: ServerHandle) -> Iterator[None]:
    """Registers the cluster; afterwards removes the in-cluster agent and forgets the token the install
    rotated (the host-run agents of other tests then get a fresh one)."""
    helpers.agent_token(forge, cluster.name)
    yield
    cluster.kubectl("-n", NS, "delete", "deployment", "conveyor-agent", "--wait=true", check=False)
    helpers._agent_tokens.pop((forge.url, cluster.name), None)


def install(cluster: ClusterHandle, forge: ServerHandle, sync: str, *options: str) -> subprocess.CompletedProcess[str]:
    env = forge.env()
    env["CONVEYOR_DATA_DIR"] = str(cluster.data_dir)  # the cluster's data dir; the server by URL
    return subprocess.run(
        [sys.executable, "-m", "conveyor", "agent", "install", cluster.name, "--sync", sync, *(options or
                                                                                             ("--interval", "3s"))],
        capture_output=True, text=True, timeout=1800, env=env,
    )


def applied_revision(status_url: str, sync: str) -> str | None:
    doc = httpx.get(status_url, timeout=5).json()
    return next((s.get("last_applied_revision") for s in doc["syncs"] if s["name"] == sync), None)


def deployed(forge: ServerHandle, wc: WorkingCopy, sha: str, context: str) -> bool:
    status = commit_statuses(forge, wc.repo, sha).get(context)
    return bool(status and status["state"] == "success")


def agent_pods(cluster: ClusterHandle) -> list[dict[str, object]]:
    pods = get_json(cluster, "pods", "-n", NS, "-l", "app=conveyor-agent")
    return [] if pods is None else list(pods["items"])


def test_in_cluster_agent_applies_reports_and_survives_its_pod(
    cluster: ClusterHandle, forge: ServerHandle, installed: None, tmp_path: Path
) -> None:
    wc = new_repo(forge, tmp_path, kind="gitops")
    ns, name = unique("incluster"), unique("s")
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
    first = manifest(namespace, {**configmap("settings", mode="blue"), "metadata": {"name": "settings",
                                                                                  "namespace": ns}},
                     {**configmap("other", k="v"), "metadata": {"name": "other", "namespace": ns}})
    wc.commit_file("deploy/app.yaml", first)
    code, out = wc.push("main")
    assert code == 0, out
    sha1 = wc.head()

    started = time.monotonic()
    p = install(cluster, forge, f"{name}={wc.repo}@main:deploy")
    assert p.returncode == 0, p.stdout + p.stderr
    installed_at = time.monotonic()
    context = f"conveyor/deploy/{cluster.name}/{name}"
    cluster.wait_for("the in-cluster agent's success status on the commit",
                     lambda: deployed(forge, wc, sha1, context), timeout=180)
    timings = [line for line in (p.stdout + p.stderr).splitlines() if "s)" in line or "ready after" in line]
    print(f"install {installed_at - started:.1f}s (image, push, apply, pod ready), then first success status "
          f"{time.monotonic() - installed_at:.1f}s later; install -> first apply {time.monotonic() - started:.1f}s",
          *timings, sep="\n")
    status = commit_statuses(forge, wc.repo, sha1)[context]
    assert status["target_url"] == f"http://conveyor-agent.{NS}.svc:9797/status"
    assert get_json(cluster, "configmap", "settings", "-n", ns)["data"] == {"mode": "blue"}

    (old,) = agent_pods(cluster)
    cluster.kubectl("-n", NS, "delete", "pod", str(old["metadata"]["name"]), "--wait=true")  # type: ignore[index]
    second = manifest(namespace, {**configmap("settings", mode="green"), "metadata": {"name": "settings",
                                                                                    "namespace": ns}})
    wc.commit_file("deploy/app.yaml", second)
    code, out = wc.push("main")
    assert code == 0, out
    sha2 = wc.head()
    cluster.wait_for("the new pod's success status on the new commit",
                     lambda: deployed(forge, wc, sha2, context), timeout=180)
    (new,) = agent_pods(cluster)
    assert new["metadata"]["uid"] != old["metadata"]["uid"]  # type: ignore[index]
    assert get_json(cluster, "configmap", "settings", "-n", ns)["data"] == {"mode": "green"}
    # pruned by the new pod: it knew of "other" only from the inventory the old pod kept in the cluster
    assert get_json(cluster, "configmap", "other", "-n", ns) is None

    # Installing again (the image cached, a new token) rolls the pod, which carries on too. With
    # --webhooks and polls ten minutes apart, a push is applied at once: the forge's push webhook reaches
    # the agent through its NodePort on the node's address (which the admin allows webhooks to).
    forge.allow_outbound(*forge.outbound_allow, cluster.spec.node_ip)
    started = time.monotonic()
    p = install(cluster, forge, f"{name}={wc.repo}@main:deploy", "--interval", "10m", "--webhooks")
    assert p.returncode == 0, p.stdout + p.stderr
    status_url = next(ln.split()[-1] for ln in p.stdout.splitlines() if ln.startswith("agent status at "))
    assert status_url.startswith(f"http://{cluster.spec.node_ip}:")
    (hook,) = forge.api().get(f"/api/v1/repos/{wc.repo}/hooks").json()
    assert hook["url"] == status_url.removesuffix("/status") + f"/hooks/{name}" and hook["events"] == ["push"]
    # the new pod's first reconcile (at its start) is done before the push, so only the webhook can tell it
    cluster.wait_for("the reinstalled agent's first apply", lambda: applied_revision(status_url, name) == sha2,
                     timeout=120)
    third = manifest(namespace, {**configmap("settings", mode="red"), "metadata": {"name": "settings",
                                                                                 "namespace": ns}})
    wc.commit_file("deploy/app.yaml", third)
    code, out = wc.push("main")
    assert code == 0, out
    sha3 = wc.head()
    pushed = time.monotonic()
    # (the agent would poll again only 10 minutes after its start)
    cluster.wait_for("the webhook-told agent's status", lambda: deployed(forge, wc, sha3, context), timeout=180)
    print(f"reinstall (image cached) -> applied {pushed - started:.1f}s; push -> applied by webhook "
          f"{time.monotonic() - pushed:.1f}s")
    (again,) = agent_pods(cluster)
    assert again["metadata"]["uid"] not in (old["metadata"]["uid"], new["metadata"]["uid"])  # type: ignore[index]
    assert get_json(cluster, "configmap", "settings", "-n", ns)["data"] == {"mode": "red"}
    deliveries = forge.api().get(f"/api/v1/repos/{wc.repo}/hooks/{hook['id']}/deliveries").json()
    assert any(d["status"] == "delivered" and d["last_status_code"] == 202 for d in deliveries), deliveries
    forge.allow_outbound(*forge.outbound_allow)
