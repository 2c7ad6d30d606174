"""Application secrets at the agent, against the real local cluster and a real `conveyor up`.

The cluster's age key is installed in the cluster (only its public half reaches the server); a
revision's SOPS-encrypted Secret is decrypted in memory, applied, read from inside a pod, and pruned
when it leaves; a document this cluster's key cannot open refuses the whole revision, naming the
Secret. A plaintext scan of the server's data dir, the agent's state dir and its output shows the
value is in none of them (and that the same scan finds a planted canary).
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from conveyor.agent import agekey, sops
from tests.agent.helpers import commit_statuses, configmap, get_json, manifest, run_once, saved_status, write_config
from tests.forge.helpers import WorkingCopy, new_repo, unique
from tests.support.clusters import ClusterHandle, busybox, shell_pod
from tests.support.server import ServerHandle


def plaintext_hits(roots: list[Path], needle: str) -> list[str]:
    """Every file under ``roots`` whose bytes contain ``needle`` (SQLite files and WAL included)."""
    raw = needle.encode()
    hits = []
    for root in roots:
        for f in [root] if root.is_file() else root.rglob("*"):
            if f.is_file() and not f.is_symlink():
                try:
                    if raw in f.read_bytes():
                        hits.append(str(f))
                except OSError:
                    continue
    return hits


def secret_doc(name: str, **values: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {"name": name},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}}


def sync_for(wc: WorkingCopy, name: str, namespace: str) -> dict[str, Any]:
    return {"name": name, "url": f"{wc.server.url}/git/{wc.repo}.git", "branch": "main", "path": "deploy",
            "target_namespace": namespace, "retry_interval": "1s"}


def push(wc: WorkingCopy) -> str:
    code, out = wc.push("main")
    assert code == 0, out
    return wc.head()


def test_the_key_stays_in_the_cluster_and_only_its_public_half_is_registered(
    cluster: ClusterHandle, forge: ServerHandle, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path / "agent.yaml", forge, cluster, [])
    runs = [subprocess.run([sys.executable, "-m", "conveyor", "agent", "key", "install", "--config", str(cfg)],
                           capture_output=True, text=True, timeout=120) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    recipient = runs[0].stdout.strip()
    assert runs[1].stdout.strip() == recipient  # a second install keeps the key secrets are encrypted to
    assert sops.check_recipient(recipient)
    kept = get_json(cluster, "secret", agekey.KEY_SECRET, "-n", "conveyor-system")
    private = base64.b64decode(kept["data"][agekey.KEY_FIELD]).decode().strip()
    assert private.startswith("AGE-SECRET-KEY-1") and sops.recipient_of(private) == recipient

    api = forge.api()
    r = api.put(f"/api/v1/clusters/{cluster.name}/age-recipient", json={"age_recipient": "age1nope"})
    assert r.status_code == 400 and r.json()["rule"] == "cluster.age-recipient", r.text
    r = api.put(f"/api/v1/clusters/{cluster.name}/age-recipient", json={"age_recipient": recipient})
    assert r.status_code == 200, r.text
    assert api.get(f"/api/v1/clusters/{cluster.name}").json()["age_recipient"] == recipient

    # the scan finds what the server stores (a planted canary) but not the private key
    canary = unique("canary-in-the-db")
    assert api.post("/api/v1/repos", json={"name": unique("c"), "description": canary}).status_code == 201
    assert plaintext_hits([forge.data_dir], canary)
    assert plaintext_hits([forge.data_dir], private) == []


def test_an_encrypted_secret_is_applied_read_in_a_pod_refused_with_another_key_and_pruned(
    cluster: ClusterHandle, forge: ServerHandle, hello_image: str, tmp_path: Path
) -> None:
    recipient = agekey.install_with(cluster.kubeconfig)
    value = unique("s3cret-value")
    wc = new_repo(forge, tmp_path, kind="gitops")
    ns, name = unique("secrets"), unique("s")
    pod = shell_pod("reader", hello_image)
    pod["spec"]["containers"][0]["env"] = [
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "PASSWORD"}}}]
    wc.commit_file("deploy/db.sops.yaml", sops.encrypt(secret_doc("db", PASSWORD=value), [recipient]))
    wc.commit_file("deploy/app.yaml", manifest(configmap("settings", x="1"), pod))
    push(wc)
    cfg = write_config(tmp_path / "agent.yaml", forge, cluster, [sync_for(wc, name, ns)])

    p = run_once(cfg)
    assert p.returncode == 0, p.stdout + p.stderr
    live = get_json(cluster, "secret", "db", "-n", ns)
    assert base64.b64decode(live["data"]["PASSWORD"]).decode() == value
    assert "sops" not in live
    cluster.wait_for("the reader pod", lambda: get_json(cluster, "pod", "reader", "-n", ns)["status"]
                     .get("phase") == "Running")
    seen = busybox(cluster, "reader", "sh", "-c", 'echo "$PASSWORD"', namespace=ns)
    assert seen.returncode == 0 and seen.stdout.strip() == value, seen.stderr

    # a document for another cluster's key: the whole revision is refused, the Secret named
    _, other = sops.new_identity()
    wc.commit_file("deploy/other.sops.yaml", sops.encrypt(secret_doc("other", TOKEN=value + "-2"), [other]))
    wc.commit_file("deploy/app.yaml", manifest(configmap("settings", x="2"), pod))
    refused = push(wc)
    p = run_once(cfg)
    assert p.returncode == 1, p.stdout + p.stderr
    st = saved_status(cfg, name)
    assert st["reason"] == "DecryptionFailed" and "Secret other" in st["message"], st
    assert value not in st["message"]
    status = commit_statuses(forge, wc.repo, refused)[f"conveyor/deploy/{cluster.name}/{name}"]
    assert status["state"] == "failure" and "Secret other" in status["description"], status
    assert get_json(cluster, "configmap", "settings", "-n", ns)["data"] == {"x": "1"}  # nothing applied
    assert get_json(cluster, "secret", "other", "-n", ns) is None

    # removed from the revision: pruned like any object
    wc.git("rm", "-q", "deploy/other.sops.yaml", "deploy/db.sops.yaml")
    wc.git("commit", "-q", "-m", "remove the secrets")
    push(wc)
    p = run_once(cfg)
    assert p.returncode == 0, p.stdout + p.stderr
    assert get_json(cluster, "secret", "db", "-n", ns) is None

    state_dir = tmp_path / "agent-state"
    assert state_dir.is_dir()
    for needle in (value, base64.b64encode(value.encode()).decode()):
        assert plaintext_hits([forge.data_dir, state_dir, forge.data_dir.parent / f"{forge.data_dir.name}.log"],
                              needle) == []
        assert needle not in p.stdout + p.stderr


# --- through the GitOps repository: set, deploy, read back, rotate, remove ---------------------------

def _merge(forge: ServerHandle, repo: str, number: int, approver: str) -> None:
    """Approve as ``approver`` (not the author), then merge as admin once delivery's checks are there."""
    api = forge.api()
    pr = api.get(f"/api/v1/repos/{repo}/pulls/{number}").json()
    r = forge.api(approver).post(f"/api/v1/repos/{repo}/pulls/{number}/reviews", json={"state": "approve"})
    assert r.status_code == 201, r.text
    deadline = time.monotonic() + 120
    while True:  # delivery posts conveyor/diff with the PR and the gate once it has seen the PR's event
        r = api.post(f"/api/v1/repos/{repo}/pulls/{number}/merge", json={"method": "merge"})
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert r.status_code == 200, (r.text, api.get(f"/api/v1/repos/{repo}/statuses/{pr['head_sha']}").json())


def _write_rendered(forge: ServerHandle, repo: str, app: str, text: str | None, message: str) -> None:
    """Stands in for a promotion: commits ``rendered/<app>.yaml`` on env/dev the way delivery's own
    write does (git plumbing on the bare repository). The promotion path itself (render, PR, merge) is
    delivery's tests'; a person's PR to an environment branch cannot get the delivery-owned
    `conveyor/diff` check, by design, so this test cannot take that road for the workload."""
    bare = str(forge.data_dir / "repos" / f"{repo}.git")
    index = forge.data_dir.parent / unique("index")

    def git(*args: str, stdin: str | None = None) -> str:
        env = {**os.environ, "GIT_INDEX_FILE": str(index), "GIT_AUTHOR_NAME": "conveyor-delivery",
               "GIT_AUTHOR_EMAIL": "delivery@conveyor.invalid", "GIT_COMMITTER_NAME": "conveyor-delivery",
               "GIT_COMMITTER_EMAIL": "delivery@conveyor.invalid"}
        return subprocess.run(["git", "--git-dir", bare, *args], input=stdin, capture_output=True, text=True,
                              check=True, env=env).stdout.strip()

    tip = git("rev-parse", "refs/heads/env/dev")
    git("read-tree", tip)
    if text is None:
        git("update-index", "--index-info", stdin=f"0 {'0' * 40}\trendered/{app}.yaml\n")  # mode 0: drop it
    else:
        blob = git("hash-object", "-w", "--stdin", stdin=text)
        git("update-index", "--add", "--cacheinfo", f"100644,{blob},rendered/{app}.yaml")
    commit = git("commit-tree", git("write-tree"), "-p", tip, "-m", message)
    git("update-ref", "refs/heads/env/dev", commit, tip)
    index.unlink(missing_ok=True)


def _secret_cli(forge: ServerHandle, token: str, *args: str, stdin: str | None = None
                ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "conveyor", "env", "secret", *args], input=stdin,
                          capture_output=True, text=True, env=forge.env(token), timeout=120)


def _pr_number(p: subprocess.CompletedProcess[str]) -> int:
    assert p.returncode == 0, p.stdout + p.stderr
    return int(p.stdout.split("PR #", 1)[1].split()[0])


def _reader_value(cluster: ClusterHandle, ns: str) -> tuple[str, str]:
    pods = [p for p in cluster.get(f"/api/v1/namespaces/{ns}/pods?labelSelector=app=web")["items"]
            if not p["metadata"].get("deletionTimestamp") and p["status"].get("phase") == "Running"]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    name = pods[0]["metadata"]["name"]
    seen = busybox(cluster, name, "sh", "-c", 'echo "$PASSWORD"', namespace=ns)
    assert seen.returncode == 0, seen.stderr
    return name, seen.stdout.strip()


def test_set_deploy_read_rotate_and_remove_through_reviewed_gitops_prs(
    cluster: ClusterHandle, forge: ServerHandle, hello_image: str, tmp_path: Path
) -> None:
    from tests.agent.helpers import agent_token
    from tests.support.clusters import deployment

    agent_token(forge, cluster.name)  # registered
    api = forge.api()
    recipient = agekey.install_with(cluster.kubeconfig)
    assert api.put(f"/api/v1/clusters/{cluster.name}/age-recipient",
                   json={"age_recipient": recipient}).status_code == 200
    repo, app = unique("gops"), unique("app")
    envs = {"dev": {"cluster": cluster.name, "namespace": "{app}-dev",
                    "approvals": {"required": 0, "approver_roles": ["reviewer"]}}}
    r = api.post("/api/v1/gitops", json={"repo": repo, "environments": envs})
    assert r.status_code == 201, r.text
    dana_name = unique("dana")
    dana = forge.create_user(dana_name, "developer")
    reviewer = forge.create_user(unique("theo"), "reviewer")
    ns = f"{app}-dev"

    value, rotated = unique("first-pw"), unique("second-pw")
    p = _secret_cli(forge, dana, "set", app, "dev", "db", "--key", "PASSWORD", "--gitops", repo, stdin=value + "\n")
    first_pr = _pr_number(p)
    pr = api.get(f"/api/v1/repos/{repo}/pulls/{first_pr}").json()
    assert pr["author"] == dana_name  # the person's PR (so another person approves it), not delivery's
    assert "PASSWORD" in pr["body"] and "hmac-sha256:" in pr["body"] and value not in pr["body"]
    _merge(forge, repo, first_pr, reviewer)
    listed = api.get(f"/api/v1/apps/{app}/envs/dev/secrets", params={"gitops": repo}).json()
    assert list(listed) == ["db"] and list(listed["db"]) == ["PASSWORD"]

    # the workload (as a promotion would render it): a Deployment reading the secret, plus a planted canary
    canary = unique("canary-in-git")
    web = deployment("web", hello_image, env=[{"name": "PASSWORD",
                                               "valueFrom": {"secretKeyRef": {"name": "db", "key": "PASSWORD"}}}])
    web["metadata"]["namespace"] = ns
    objects = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}, web,
               {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "canary", "namespace": ns},
                "data": {"c": canary}}]
    from conveyor.delivery import secret_refs

    git = subprocess.run(["git", "-C", str(forge.data_dir / "repos" / f"{repo}.git"), "show",
                          f"env/dev:rendered/secrets/{app}/db.sops.yaml"], capture_output=True, check=True)
    stamped = secret_refs.stamp(manifest(*objects), {"db": git.stdout}, env="dev")
    _write_rendered(forge, repo, app, stamped, "deploy web")

    sync = {"name": unique("s"), "url": f"{forge.url}/git/{repo}.git", "branch": "env/dev", "path": "rendered",
            "retry_interval": "1s", "wait": True, "timeout": "3m"}
    cfg = write_config(tmp_path / "agent.yaml", forge, cluster, [sync])
    p = run_once(cfg)
    assert p.returncode == 0, p.stdout + p.stderr
    first_pod, seen = _reader_value(cluster, ns)
    assert seen == value

    # rotate: the PR carries the new document and the re-stamped workload, so the pod is replaced
    p = _secret_cli(forge, dana, "set", app, "dev", "db", "--key", "PASSWORD", "--gitops", repo, stdin=rotated)
    rotate_pr = _pr_number(p)
    assert "PASSWORD changed" in p.stdout
    _merge(forge, repo, rotate_pr, reviewer)
    p = run_once(cfg)
    assert p.returncode == 0, p.stdout + p.stderr
    cluster.wait_for("the old pod to go", lambda: _reader_value(cluster, ns)[0] != first_pod)
    assert _reader_value(cluster, ns)[1] == rotated

    # removal: refused while a workload uses it; after the workload goes, pruned by the agent
    p = _secret_cli(forge, dana, "remove", app, "dev", "db", "--gitops", repo)
    assert p.returncode != 0 and "still used by Deployment/web" in p.stdout + p.stderr, p.stdout + p.stderr
    _write_rendered(forge, repo, app, None, "remove web")
    _merge(forge, repo, _pr_number(_secret_cli(forge, dana, "remove", app, "dev", "db", "--gitops", repo)), reviewer)
    p = run_once(cfg)
    assert p.returncode == 0, p.stdout + p.stderr
    assert get_json(cluster, "secret", "db", "-n", ns) is None

    # the scan: the canary is found in git history, the values nowhere (DB, server log, agent state, git)
    history = subprocess.run(["git", "-C", str(forge.data_dir / "repos" / f"{repo}.git"), "log", "-p", "--all"],
                             capture_output=True, text=True, check=True).stdout
    assert canary in history
    roots = [forge.data_dir, forge.data_dir.parent / f"{forge.data_dir.name}.log", tmp_path / "agent-state"]
    for secret_value in (value, rotated):
        for needle in (secret_value, base64.b64encode(secret_value.encode()).decode()):
            assert needle not in history
            assert plaintext_hits(roots, needle) == []
