"""The agent against a real local cluster and a real forge: the issue's "done when" list."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from conveyor.agent.objects import PRUNE_ANNOTATION
from conveyor.agent.server import SIGNATURE_HEADER, sign
from tests.agent.helpers import (
    AgentProcess,
    TcpProxy,
    commit_statuses,
    configmap,
    get_json,
    manifest,
    run_once,
    saved_status,
    status_history,
    write_config,
)
from tests.forge.helpers import WorkingCopy, new_repo, unique
from tests.support.clusters import ClusterHandle, deployment, service
from tests.support.server import ServerHandle


def sync_for(wc: WorkingCopy, name: str, namespace: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "url": f"{wc.server.url}/git/{wc.repo}.git", "branch": "main", "path": "deploy",
            "target_namespace": namespace, "retry_interval": "1s", **extra}


def push(wc: WorkingCopy) -> str:
    code, out = wc.push("main")
    assert code == 0, out
    return wc.head()


def data_of(cluster: ClusterHandle, namespace: str, name: str) -> dict[str, str] | None:
    cm = get_json(cluster, "configmap", name, "-n", namespace)
    return None if cm is None else dict(cm.get("data") or {})


def inventory(cluster: ClusterHandle, sync: str) -> list[str]:
    cm = get_json(cluster, "configmap", f"conveyor-inventory-{sync}", "-n", "conveyor-system")
    return sorted(cm["data"]["entries"].splitlines())


def test_revision_applies_changes_and_prunes_exactly_what_left(
    cluster: ClusterHandle, forge: ServerHandle, tmp_path: Path
) -> None:
    wc = new_repo(forge, tmp_path, kind="gitops")
    ns, name = unique("apply"), unique("s")
    wc.commit_file("deploy/a.yaml", manifest(configmap("a", x="1"), service("web")))
    wc.commit_file("deploy/b.yaml", manifest(configmap("b", y="1"),
                                             configmap("kept", annotations={PRUNE_ANNOTATION: "disabled"})))
    first = push(wc)
    cfg = write_config(tmp_path / "agent.yaml", forge, cluster, [sync_for(wc, name, ns)])

    p = run_once(cfg)
    assert p.returncode == 0, p.stdout + p.stderr
    assert data_of(cluster, ns, "a") == {"x": "1"}
    assert data_of(cluster, ns, "b") == {"y": "1"}
    assert get_json(cluster, "service", "web", "-n", ns) is not None
    uid = get_json(cluster, "configmap", "a", "-n", ns)["metadata"]["uid"]
    live = cluster.get(f"/api/v1/namespaces/{ns}/configmaps/a")
    managers = {m["manager"] for m in live["metadata"]["managedFields"]}
    assert managers == {"conveyor-agent"}
    st = saved_status(cfg, name)
    assert (st["state"], st["last_applied_revision"], st["last_attempted_revision"]) == ("Ready", first, first)
    assert inventory(cluster, name) == sorted([f"v1|ConfigMap|{ns}|a", f"v1|ConfigMap|{ns}|b",
                                               f"v1|ConfigMap|{ns}|kept", f"v1|Service|{ns}|web"])
    # an object the agent never applied, in the same namespace
    cluster.kubectl("create", "configmap", "bystander", "-n", ns, "--from-literal=z=1")

    wc.commit_file("deploy/a.yaml", manifest(configmap("a", x="2"), service("web")))
    second = push(wc)
    p = run_once(cfg)
    assert p.returncode == 0, p.stdout + p.stderr
    assert data_of(cluster, ns, "a") == {"x": "2"}
    assert get_json(cluster, "configmap", "a", "-n", ns)["metadata"]["uid"] == uid  # updated in place
    assert saved_status(cfg, name)["last_applied_revision"] == second

    wc.git("rm", "-q", "deploy/b.yaml")
    wc.git("commit", "-q", "-m", "drop b")
    push(wc)
    p = run_once(cfg)
    assert p.returncode == 0, p.stdout + p.stderr
    assert data_of(cluster, ns, "b") is None  # pruned
    assert data_of(cluster, ns, "kept") == {}  # opted out of pruning
    assert data_of(cluster, ns, "a") == {"x": "2"}
    assert data_of(cluster, ns, "bystander") == {"z": "1"}  # not in the inventory: never touched
    assert inventory(cluster, name) == sorted([f"v1|ConfigMap|{ns}|a", f"v1|Service|{ns}|web"])


def test_an_invalid_object_applies_nothing_of_its_revision(
    cluster: ClusterHandle, forge: ServerHandle, tmp_path: Path
) -> None:
    wc = new_repo(forge, tmp_path, kind="gitops")
    ns, name = unique("invalid"), unique("s")
    wc.commit_file("deploy/a.yaml", manifest(configmap("a", x="1")))
    good = push(wc)
    cfg = write_config(tmp_path / "agent.yaml", forge, cluster, [sync_for(wc, name, ns)])
    assert run_once(cfg).returncode == 0

    broken_service = service("broken")
    broken_service["spec"]["ports"][0]["port"] = 70000  # out of range: only the API server says so
    wc.commit_file("deploy/a.yaml", manifest(configmap("a", x="2"), configmap("new", y="1")))
    wc.commit_file("deploy/z.yaml", manifest(broken_service))
    bad = push(wc)
    p = run_once(cfg)
    assert p.returncode == 1, p.stdout + p.stderr

    assert data_of(cluster, ns, "a") == {"x": "1"}
    assert data_of(cluster, ns, "new") is None
    assert get_json(cluster, "service", "broken", "-n", ns) is None
    st = saved_status(cfg, name)
    assert st["state"] == "Stalled" and st["reason"] == "ValidationFailed"
    assert f"Service/{ns}/broken" in st["message"] and "70000" in st["message"]
    assert (st["last_applied_revision"], st["last_attempted_revision"]) == (good, bad)
    assert inventory(cluster, name) == [f"v1|ConfigMap|{ns}|a"]
    failure = commit_statuses(forge, wc.repo, bad)[f"conveyor/deploy/{cluster.name}/{name}"]
    assert failure["state"] == "failure"
    assert f"Service/{ns}/broken" in failure["description"]


def test_missing_image_fails_fast_with_image_pull_backoff(
    cluster: ClusterHandle, forge: ServerHandle, registry_host: str, tmp_path: Path
) -> None:
    wc = new_repo(forge, tmp_path, kind="gitops")
    ns, name = unique("noimage"), unique("s")
    wc.commit_file("deploy/app.yaml", manifest(deployment("ghost", f"{registry_host}/demo/does-not-exist:1")))
    sha = push(wc)
    # a timeout far longer than the test's own limit: only fail-fast can end this run in time
    cfg = write_config(tmp_path / "agent.yaml", forge, cluster, [sync_for(wc, name, ns, wait=True, timeout="2h")])
    p = run_once(cfg)
    assert p.returncode == 1, p.stdout + p.stderr
    st = saved_status(cfg, name)
    assert st["state"] == "Stalled" and st["reason"] == "HealthCheckFailed"
    assert f"Deployment/{ns}/ghost" in st["message"] and "ImagePullBackOff" in st["message"]
    status = commit_statuses(forge, wc.repo, sha)[f"conveyor/deploy/{cluster.name}/{name}"]
    assert status["state"] == "failure"
    assert "ImagePullBackOff" in status["description"] and f"Deployment/{ns}/ghost" in status["description"]


def test_healthy_revision_reports_pending_then_success_on_the_commit(
    cluster: ClusterHandle, forge: ServerHandle, hello_image: str, tmp_path: Path
) -> None:
    wc = new_repo(forge, tmp_path, kind="gitops")
    ns, name = unique("healthy"), unique("s")
    wc.commit_file("deploy/app.yaml", manifest(deployment("hello", hello_image), service("hello")))
    sha = push(wc)
    cfg = write_config(tmp_path / "agent.yaml", forge, cluster, [sync_for(wc, name, ns, wait=True, timeout="10m")])
    p = run_once(cfg)
    assert p.returncode == 0, p.stdout + p.stderr
    context = f"conveyor/deploy/{cluster.name}/{name}"
    status = commit_statuses(forge, wc.repo, sha)[context]
    assert status["state"] == "success"
    assert status["target_url"].endswith("/status")
    assert status_history(forge, wc.repo, sha, context) == ["pending", "success"]
    dep = get_json(cluster, "deployment", "hello", "-n", ns)
    assert dep["status"]["availableReplicas"] == 1


def test_drift_is_reverted_on_the_next_interval(cluster: ClusterHandle, forge: ServerHandle, tmp_path: Path) -> None:
    wc = new_repo(forge, tmp_path, kind="gitops")
    ns, name = unique("drift"), unique("s")
    wc.commit_file("deploy/a.yaml", manifest(configmap("settings", mode="blue"), configmap("other", k="v")))
    sha = push(wc)
    cfg = write_config(tmp_path / "agent.yaml", forge, cluster, [sync_for(wc, name, ns, interval="2s")])
    agent = AgentProcess(cfg).start()
    try:
        agent.wait_for("first apply", lambda: agent.sync(name)["last_applied_revision"] == sha)
        cli = subprocess.run([sys.executable, "-m", "conveyor", "agent", "status", "--config", str(cfg), "--json"],
                             capture_output=True, text=True, timeout=60)
        assert cli.returncode == 0, cli.stderr
        row = next(s for s in json.loads(cli.stdout)["syncs"] if s["name"] == name)
        assert (row["state"], row["last_applied_revision"]) == ("Ready", sha)
        assert sorted(row["inventory"]) == [f"ConfigMap/{ns}/other", f"ConfigMap/{ns}/settings"]
        # what `kubectl edit` does: another field manager changes a field the agent owns
        patched = cluster.kubectl("patch", "configmap", "settings", "-n", ns, "--type=merge", "-p",
                                  '{"data":{"mode":"red"}}', "-o", "json")
        assert json.loads(patched.stdout)["data"] == {"mode": "red"}  # (the agent may revert it at once)
        agent.wait_for("drift reverted", lambda: data_of(cluster, ns, "settings") == {"mode": "blue"}, timeout=120)
        events = agent.wait_for("the drift event", lambda: [
            e for e in agent.status()["events"] if e["sync"] == name and e["reason"] == "DriftCorrected"])
        assert f"ConfigMap/{ns}/settings" in events[0]["message"]
        assert f"ConfigMap/{ns}/other" not in events[0]["message"]
        samples = {(s.name, frozenset(s.labels.items())): s.value
                   for family in text_string_to_metric_families(agent.metrics()) for s in family.samples}
        assert samples[("conveyor_agent_drift_corrections_total", frozenset({("sync", name)}))] == 1
        assert samples[("conveyor_agent_reconcile_duration_seconds_count",
                        frozenset({("sync", name), ("result", "success")}))] >= 1
    finally:
        agent.stop()


def test_push_webhook_triggers_a_reconcile_without_waiting_for_the_poll(
    cluster: ClusterHandle, forge: ServerHandle, tmp_path: Path
) -> None:
    wc = new_repo(forge, tmp_path, kind="gitops")
    ns, name, secret = unique("hook"), unique("s"), unique("secret")
    wc.commit_file("deploy/a.yaml", manifest(configmap("a", v="1")))
    first = push(wc)
    cfg = write_config(tmp_path / "agent.yaml", forge, cluster,
                       [sync_for(wc, name, ns, interval="1h", webhook_secret=secret)])
    agent = AgentProcess(cfg).start()
    try:
        agent.wait_for("first apply", lambda: agent.sync(name)["last_applied_revision"] == first)
        body = json.dumps({"repo": wc.repo, "ref": "refs/heads/main", "branch": "main"}).encode()
        unsigned = httpx.post(f"{agent.url}/hooks/{name}", content=body, headers={SIGNATURE_HEADER: "sha256=00"})
        assert unsigned.status_code == 401
        r = forge.api().post(f"/api/v1/repos/{wc.repo}/hooks",
                             json={"url": f"{agent.url}/hooks/{name}", "secret": secret, "events": ["push"]})
        assert r.status_code == 201, r.text
        wc.commit_file("deploy/a.yaml", manifest(configmap("a", v="2")))
        second = push(wc)
        # the poll interval is an hour: only the webhook can bring this in
        agent.wait_for("the pushed revision", lambda: agent.sync(name)["last_applied_revision"] == second)
        assert data_of(cluster, ns, "a") == {"v": "2"}
        assert any(e["reason"] == "WebhookReceived" for e in agent.status()["events"] if e["sync"] == name)
        signed = httpx.post(f"{agent.url}/hooks/{name}", content=body, headers={SIGNATURE_HEADER: sign(secret, body)})
        assert signed.status_code == 202 and signed.json() == {"triggered": True}
    finally:
        agent.stop()


def test_kill_9_at_any_moment_then_restart_converges_without_orphans(
    cluster: ClusterHandle, forge: ServerHandle, tmp_path: Path
) -> None:
    wc = new_repo(forge, tmp_path, kind="gitops")
    ns, name = unique("crash"), unique("s")
    wc.commit_file("deploy/a.yaml", manifest(*[configmap(f"old-{i}", i=str(i)) for i in range(20)]))
    push(wc)
    cfg = write_config(tmp_path / "agent.yaml", forge, cluster, [sync_for(wc, name, ns, interval="1s")])
    assert run_once(cfg).returncode == 0

    wc.commit_file("deploy/a.yaml", manifest(*[configmap(f"new-{i}", i=str(i)) for i in range(20)]))
    second = push(wc)
    agent = AgentProcess(cfg).start()
    # killed while the new revision is being applied (or just after: both must converge)
    agent.wait_for("the new revision to start", lambda: agent.sync(name)["last_attempted_revision"] == second)
    agent.kill()

    wc.commit_file("deploy/a.yaml", manifest(configmap("new-0", i="0")))
    third = push(wc)
    agent = AgentProcess(cfg).start()
    try:
        agent.wait_for("the last revision", lambda: agent.sync(name)["last_applied_revision"] == third)
    finally:
        agent.stop()
    names = sorted(o["metadata"]["name"] for o in get_json(cluster, "configmaps", "-n", ns)["items"])
    assert names == ["kube-root-ca.crt", "new-0"]
    assert inventory(cluster, name) == [f"v1|ConfigMap|{ns}|new-0"]


def test_unreachable_git_keeps_the_cluster_and_recovers_without_restart(
    cluster: ClusterHandle, forge: ServerHandle, tmp_path: Path
) -> None:
    origin = tmp_path / "origin.git"
    wc = new_repo(forge, tmp_path, kind="gitops")
    wc.commit_file("deploy/a.yaml", manifest(configmap("a", v="1")))
    first = push(wc)
    assert wc.run("clone", "-q", "--bare", str(wc.path), str(origin))[0] == 0
    ns, name = unique("outage"), unique("s")
    sync = {"name": name, "url": f"file://{origin}", "path": "deploy", "target_namespace": ns,
            "interval": "1s", "retry_interval": "1s"}
    cfg = write_config(tmp_path / "agent.yaml", forge, cluster, [sync])
    agent = AgentProcess(cfg).start()
    try:
        agent.wait_for("first apply", lambda: agent.sync(name)["last_applied_revision"] == first)
        hidden = tmp_path / "hidden.git"
        origin.rename(hidden)
        st = agent.wait_for("the outage in the status", lambda: (s := agent.sync(name))["state"] == "Stalled" and s)
        assert st["reason"] == "GitOperationFailed" and st["last_applied_revision"] == first
        assert data_of(cluster, ns, "a") == {"v": "1"}
        hidden.rename(origin)
        agent.wait_for("recovery", lambda: agent.sync(name)["state"] == "Ready")
    finally:
        agent.stop()


def test_a_newer_revision_cancels_the_wait_on_the_older_one(
    cluster: ClusterHandle, forge: ServerHandle, hello_image: str, tmp_path: Path
) -> None:
    wc = new_repo(forge, tmp_path, kind="gitops")
    ns, name, secret = unique("cancel"), unique("s"), unique("secret")
    never_ready = deployment("slow", hello_image)
    never_ready["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"] = "/missing"
    wc.commit_file("deploy/app.yaml", manifest(never_ready))
    old = push(wc)
    cfg = write_config(tmp_path / "agent.yaml", forge, cluster, [
        sync_for(wc, name, ns, wait=True, timeout="2h", interval="1h", webhook_secret=secret)])
    agent = AgentProcess(cfg).start()
    try:
        agent.wait_for("the wait on the old revision", lambda: (s := agent.sync(name))["last_attempted_revision"] == old
                       and s["message"].startswith("waiting for"))
        wc.commit_file("deploy/app.yaml", manifest(deployment("slow", hello_image)))
        new = push(wc)
        body = json.dumps({"repo": wc.repo, "ref": "refs/heads/main", "branch": "main", "after": new}).encode()
        r = httpx.post(f"{agent.url}/hooks/{name}", content=body, headers={SIGNATURE_HEADER: sign(secret, body)})
        assert r.status_code == 202
        agent.wait_for("the new revision Ready", lambda: (s := agent.sync(name))["state"] == "Ready"
                       and s["last_applied_revision"] == new)
        assert any(e["reason"] == "Superseded" and old[:12] in e["message"]
                   for e in agent.status()["events"] if e["sync"] == name)
    finally:
        agent.stop()
    context = f"conveyor/deploy/{cluster.name}/{name}"
    assert commit_statuses(forge, wc.repo, old)[context]["state"] == "error"
    assert commit_statuses(forge, wc.repo, new)[context]["state"] == "success"


def test_unreachable_api_server_is_reported_and_the_agent_recovers_without_restart(
    cluster: ClusterHandle, forge: ServerHandle, tmp_path: Path
) -> None:
    api = urlsplit(cluster.spec.api_url)
    proxy = TcpProxy((api.hostname or "127.0.0.1", api.port or 443)).start()
    kubeconfig = yaml.safe_load(cluster.kubeconfig.read_text())
    for c in kubeconfig["clusters"]:
        c["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
    via_proxy = tmp_path / "kubeconfig"
    via_proxy.write_text(yaml.safe_dump(kubeconfig))

    wc = new_repo(forge, tmp_path, kind="gitops")
    ns, name = unique("apioutage"), unique("s")
    wc.commit_file("deploy/a.yaml", manifest(configmap("a", v="1")))
    first = push(wc)
    cfg = write_config(tmp_path / "agent.yaml", forge, cluster, [sync_for(wc, name, ns, interval="1s")])
    doc = yaml.safe_load(cfg.read_text())
    doc["cluster"]["kubeconfig"] = str(via_proxy)
    cfg.write_text(yaml.safe_dump(doc))
    agent = AgentProcess(cfg).start()
    try:
        agent.wait_for("first apply", lambda: agent.sync(name)["last_applied_revision"] == first)
        proxy.stop()
        wc.commit_file("deploy/a.yaml", manifest(configmap("a", v="2")))
        second = push(wc)
        st = agent.wait_for("the outage in the status", lambda: (s := agent.sync(name))["state"] == "Stalled"
                            and s["last_attempted_revision"] == second and s)
        assert st["reason"] == "ClusterUnreachable" and st["last_applied_revision"] == first
        assert st["last_attempted_revision"] == second
        assert data_of(cluster, ns, "a") == {"v": "1"}
        proxy.start()
        agent.wait_for("recovery", lambda: (s := agent.sync(name))["state"] == "Ready"
                       and s["last_applied_revision"] == second)
        assert data_of(cluster, ns, "a") == {"v": "2"}
    finally:
        agent.stop()
        proxy.stop()


def test_rolling_back_from_a_crashing_revision_succeeds_while_old_pods_still_crash(
    cluster: ClusterHandle, forge: ServerHandle, hello_image: str, tmp_path: Path
) -> None:
    wc = new_repo(forge, tmp_path, kind="gitops")
    ns, name = unique("rollback"), unique("s")
    good = manifest(deployment("hello", hello_image), service("hello"))
    wc.commit_file("deploy/app.yaml", good)
    push(wc)
    cfg = write_config(tmp_path / "agent.yaml", forge, cluster, [sync_for(wc, name, ns, wait=True, timeout="10m")])
    assert run_once(cfg).returncode == 0
    wc.commit_file("deploy/app.yaml", manifest(deployment("hello", hello_image, command=["/bin/false"]),
                                               service("hello")))
    push(wc)
    p = run_once(cfg)
    assert p.returncode == 1 and "CrashLoopBackOff" in saved_status(cfg, name)["message"], p.stdout
    wc.commit_file("deploy/app.yaml", good)
    sha = push(wc)
    # The crashing pods of the bad revision are still around while the good one rolls out again:
    # they belong to the old ReplicaSet and must not fail the rollback.
    p = run_once(cfg)
    assert p.returncode == 0, p.stdout + p.stderr
    assert commit_statuses(forge, wc.repo, sha)[f"conveyor/deploy/{cluster.name}/{name}"]["state"] == "success"
