"""The stop switch through the API and CLI, its gate on environment PRs, and the environment schema's
governance fields checked by `conveyor/environments` with file:line:col."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.delivery.test_gitops import wait_status
from tests.forge.helpers import WorkingCopy, unique
from tests.support.server import ServerHandle

GATE = "conveyor/cd/gate"


def blockers(server: ServerHandle, repo: str, number: int) -> list[str]:
    pr = server.api().get(f"/api/v1/repos/{repo}/pulls/{number}").json()
    return [b["message"] for b in pr["mergeability"]["blockers"]]


def test_freeze_commands_and_their_gate_on_environment_prs(server: ServerHandle, tmp_path: Path) -> None:
    repo, env = unique("gitops"), unique("e")
    dev_token = server.create_user(unique("dev"), "developer")
    ops_name = unique("ops")
    ops_token = server.create_user(ops_name, "cluster-admin")
    envs = {env: {"cluster": "nonprod", "approvals": {"required": 0}}}
    assert server.api(ops_token).post("/api/v1/gitops", json={"repo": repo, "environments": envs}).status_code == 201
    rules = {p["branch"]: p for p in server.api().get(f"/api/v1/repos/{repo}/protection").json()}
    assert sorted(rules[f"env/{env}"]["required_checks"]) == [GATE, "conveyor/diff"]

    # A person's PR to the environment branch gets the gate check.
    wc = WorkingCopy(server, repo, tmp_path / "gitops", user=ops_name, token=ops_token)
    wc.git("checkout", "-q", "-b", "hotfix", f"origin/env/{env}")
    head = wc.commit_file("rendered/extra.yaml", "kind: ConfigMap\n", "by hand")
    assert wc.push("hotfix")[0] == 0
    number = server.api(ops_token).post(f"/api/v1/repos/{repo}/pulls", json={
        "source": "hotfix", "target": f"env/{env}", "title": "by hand"}).json()["number"]
    assert wait_status(server, repo, head, GATE)["state"] == "success"

    r = server.api(dev_token).post("/api/v1/freezes", json={"env": env, "reason": "incident"})
    assert r.status_code == 403 and r.json()["rule"] == "role.manage-repo"
    r = server.api(ops_token).post("/api/v1/freezes", json={"env": env, "reason": ""})
    assert r.status_code == 422
    out = server.cli("freeze", "start", "--env", env, "--reason", "INC-9: payments down", token=ops_token).stdout
    assert f"frozen: {env} by {ops_name}: INC-9: payments down" in out
    # At once: the gate turned pending in the same transaction, so the merge is refused now.
    statuses = server.api().get(f"/api/v1/repos/{repo}/statuses/{head}").json()["statuses"]
    gate = next(s for s in statuses if s["context"] == GATE)
    assert gate["state"] == "pending" and f"deployments halted by {ops_name}" in gate["description"]
    assert f"required check '{GATE}' is pending" in blockers(server, repo, number)
    r = server.api(ops_token).post("/api/v1/freezes", json={"env": env, "reason": "again"})
    assert r.status_code == 409 and r.json()["rule"] == "freeze.active"
    listed = server.api().get("/api/v1/freezes").json()
    assert any(f["env"] == env and f["started_by"] == ops_name and f["ended_at"] is None for f in listed)
    assert "INC-9" in server.cli("freeze", "list", token=ops_token).stdout

    out = server.cli("freeze", "end", "--env", env, "--reason", "recovered", token=ops_token).stdout
    assert f"freeze of {env} ended by {ops_name}" in out
    assert wait_status(server, repo, head, GATE)["state"] == "success"
    assert f"required check '{GATE}' is pending" not in blockers(server, repo, number)
    r = server.api(ops_token).post("/api/v1/freezes/end", json={"env": env})
    assert r.status_code == 404 and r.json()["rule"] == "freeze.exists"
    audit = server.api().get("/api/v1/audit", params={"limit": 500}).json()
    done = [(e["action"], e["actor"]) for e in audit
            if e["target"] == env and e["action"].startswith("delivery.freeze")]
    assert ("delivery.freeze.started", ops_name) in done and ("delivery.freeze.ended", ops_name) in done


def test_governance_fields_are_checked_with_their_position(server: ServerHandle, tmp_path: Path) -> None:
    repo = unique("gitops")
    ops_name = unique("ops")
    ops_token = server.create_user(ops_name, "cluster-admin")
    assert server.api(ops_token).post("/api/v1/gitops", json={"repo": repo}).status_code == 201
    wc = WorkingCopy(server, repo, tmp_path / "gitops", user=ops_name, token=ops_token)
    wc.git("checkout", "-q", "-b", "freeze-prod", "origin/main")
    prod = yaml.safe_load((wc.path / "environments/prod.yaml").read_text())
    prod["freeze"] = {"windows": [{"cron": "0 18 * * FRI", "duration": "62h", "timezone": "Europe/Berlin",
                                   "reason": "weekend"}]}
    prod["soak"] = {"duration": "30m"}
    prod["risk"] = {"extra_approvals": 1}
    prod["approvals"]["expire_after"] = "3d"
    text = yaml.safe_dump(prod, sort_keys=False).replace("0 18 * * FRI", "0 18 * * FRIDAY-ISH")
    head = wc.commit_file("environments/prod.yaml", text, "freeze prod on weekends")
    assert wc.push("freeze-prod")[0] == 0
    server.api(ops_token).post(f"/api/v1/repos/{repo}/pulls", json={
        "source": "freeze-prod", "target": "main", "title": "Weekend freeze"})
    st = wait_status(server, repo, head, "conveyor/environments")
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if "FRIDAY-ISH" in ln)
    ln = text.splitlines()[line - 1]
    col = len(ln) - len(ln.split("cron: ", 1)[1]) + 1
    assert st["state"] == "failure", st
    assert f"environments/prod.yaml:{line}:{col}: '0 18 * * FRIDAY-ISH' is not a 5-field cron expression" in \
        st["description"]
    head = wc.commit_file("environments/prod.yaml", text.replace("FRIDAY-ISH", "FRI").replace("3d", "soon"), "fix")
    assert wc.push("freeze-prod")[0] == 0
    st = wait_status(server, repo, head, "conveyor/environments")
    assert st["state"] == "failure" and "'soon' does not match" in st["description"]
