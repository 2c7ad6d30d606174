"""The GitOps repository: created with protected environment branches, kept valid by a required check."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from tests.forge.helpers import WorkingCopy, unique
from tests.support.server import ServerHandle


def wait_status(server: ServerHandle, repo: str, sha: str, context: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for st in server.api().get(f"/api/v1/repos/{repo}/statuses/{sha}").json()["statuses"]:
            if st["context"] == context:
                return dict(st)
        time.sleep(0.2)
    raise AssertionError(f"no {context} status on {sha}")


def test_gitops_init_protects_every_branch_and_checks_environment_changes(
    server: ServerHandle, tmp_path: Path
) -> None:
    repo = unique("gitops")
    dev_token = server.create_user(unique("dev"), "developer")
    ops_name = unique("ops")
    ops_token = server.create_user(ops_name, "cluster-admin")
    r = server.api(dev_token).post("/api/v1/gitops", json={"repo": repo})
    assert r.status_code == 403 and r.json()["rule"] == "role.manage-repo"
    out = server.cli("gitops", "init", repo, token=ops_token).stdout
    assert "prod: cluster prod, branch env/prod after qa" in out

    branches = {b["name"]: b for b in server.api().get(f"/api/v1/repos/{repo}/branches").json()}
    assert set(branches) == {"main", "env/dev", "env/qa", "env/prod"}
    assert all(b["protected"] for b in branches.values())
    rules = {p["branch"]: p for p in server.api().get(f"/api/v1/repos/{repo}/protection").json()}
    assert rules["env/prod"]["approvals"] == 2 and rules["env/prod"]["approver_roles"] == ["cluster-admin"]
    assert rules["env/prod"]["no_self_approval"] and not rules["env/dev"]["no_self_approval"]
    assert sorted(rules["env/dev"]["required_checks"]) == ["conveyor/cd/gate", "conveyor/diff"]
    assert rules["main"]["required_checks"] == ["conveyor/environments"]

    wc = WorkingCopy(server, repo, tmp_path / "gitops", user=ops_name, token=ops_token)
    assert sorted(wc.git("ls-tree", "--name-only", "origin/main", "environments/").split()) == [
        "environments/dev.yaml", "environments/prod.yaml", "environments/qa.yaml"]
    wc.git("checkout", "-q", "-b", "more-approvals", "origin/main")
    qa = yaml.safe_load((wc.path / "environments/qa.yaml").read_text())
    assert qa["after"] == "dev"
    # A direct push to an environment branch is refused at receive time.
    code, msg = wc.push("env/dev", "--force")
    assert code != 0 and "protect.direct-push" in msg

    # A PR with a broken environment file gets a failing check naming file, line and column.
    (wc.path / "environments/qa.yaml").write_text("cluster: nonprod\nafter: dev\napprovals:\n  required: many\n")
    head = wc.commit_file("environments/qa.yaml", (wc.path / "environments/qa.yaml").read_text(), "qa: many")
    assert wc.push("more-approvals")[0] == 0
    number = server.api(ops_token).post(f"/api/v1/repos/{repo}/pulls", json={
        "source": "more-approvals", "target": "main", "title": "More approvals for qa"}).json()["number"]
    st = wait_status(server, repo, head, "conveyor/environments")
    assert st["state"] == "failure" and "environments/qa.yaml:4:13" in st["description"]

    # Fixed: valid files but unknown clusters (none exist on this server) still fail the check.
    qa["approvals"] = {"required": 2, "approver_roles": ["cluster-admin"]}
    head = wc.commit_file("environments/qa.yaml", yaml.safe_dump(qa), "qa: two approvals")
    assert wc.push("more-approvals")[0] == 0
    st = wait_status(server, repo, head, "conveyor/environments")
    assert st["state"] == "failure" and "unknown cluster 'nonprod'" in st["description"]
    pr = server.api().get(f"/api/v1/repos/{repo}/pulls/{number}").json()
    assert "check.failed" in {b["rule"] for b in pr["mergeability"]["blockers"]}
