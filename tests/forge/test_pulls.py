"""Pull requests end to end with the real git client, the REST API and the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.forge.helpers import WorkingCopy, new_repo, unique
from tests.support.server import ServerHandle, git


class Team:
    """A developer (author), a teammate who reviews, and a cluster admin."""

    def __init__(self, server: ServerHandle) -> None:
        self.server = server
        self.dev, self.rev, self.ops = unique("dev"), unique("rev"), unique("ops")
        self.dev_token = server.create_user(self.dev, "developer")
        self.rev_token = server.create_user(self.rev, "reviewer")
        self.ops_token = server.create_user(self.ops, "cluster-admin")


@pytest.fixture(scope="module")
def team(server: ServerHandle) -> Team:
    return Team(server)


def pr_detail(server: ServerHandle, repo: str, number: int) -> dict[str, Any]:
    r = server.api().get(f"/api/v1/repos/{repo}/pulls/{number}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def blockers(server: ServerHandle, repo: str, number: int) -> set[str]:
    return {b["rule"] for b in pr_detail(server, repo, number)["mergeability"]["blockers"]}


def test_full_review_flow_with_required_check(server: ServerHandle, team: Team, tmp_path: Path) -> None:
    owner = new_repo(server, tmp_path)
    repo = owner.repo
    # An external CI's context (conveyor/* contexts are reserved for Conveyor's own identities).
    server.cli("repo", "protect", repo, "main", "--approvals", "1", "--require-check", "ext-ci/build",
               "--no-self-approval")
    dev = WorkingCopy(server, repo, tmp_path / "dev", user=team.dev, token=team.dev_token)
    dev.git("checkout", "-q", "-b", "feature")
    first = dev.commit_file("app.py", "VERSION = 1\n")
    assert dev.push("feature")[0] == 0

    out = server.cli("pr", "create", repo, "--from", "feature", "--to", "main", "--title", "Add app",
                     "--body", "First version", token=team.dev_token)
    number = int(out.stdout.strip())
    pr = pr_detail(server, repo, number)
    assert pr["head_sha"] == first and pr["state"] == "open"
    assert [c["sha"] for c in pr["commits"]] == [first]
    assert pr["files"] == [{"path": "app.py", "added": 1, "deleted": 0}]
    assert blockers(server, repo, number) == {"review.required-approvals", "check.required"}

    # The author cannot approve; the refusal names the rule.
    p = server.cli("pr", "approve", repo, str(number), token=team.dev_token, check=False)
    assert p.returncode != 0 and "review.no-self-approval" in p.stderr
    server.cli("pr", "approve", repo, str(number), token=team.rev_token)
    assert blockers(server, repo, number) == {"check.required"}

    # A push to the source branch updates the PR and dismisses the approval given on the old head.
    second = dev.commit_file("app.py", "VERSION = 2\n")
    assert dev.push("feature")[0] == 0
    pr = pr_detail(server, repo, number)
    assert pr["head_sha"] == second
    assert [r["dismissed"] for r in pr["reviews"]] == [True]
    assert "review.required-approvals" in blockers(server, repo, number)

    server.cli("pr", "approve", repo, str(number), token=team.rev_token)
    # Required check via the statuses API: pending blocks, failure blocks, success unblocks.
    api = server.api(team.ops_token)
    for state, expect in (("pending", "check.required"), ("failure", "check.failed")):
        r = api.post(f"/api/v1/repos/{repo}/statuses/{second}",
                     json={"state": state, "context": "ext-ci/build", "description": f"run is {state}",
                           "target_url": "http://127.0.0.1/runs/1"})
        assert r.status_code == 201, r.text
        assert expect in blockers(server, repo, number)
        refused = server.cli("pr", "merge", repo, str(number), token=team.dev_token, check=False)
        assert refused.returncode != 0 and expect in refused.stderr
    api.post(f"/api/v1/repos/{repo}/statuses/{second}", json={"state": "success", "context": "ext-ci/build"})
    combined = server.api().get(f"/api/v1/repos/{repo}/commits/feature/status").json()
    assert combined["state"] == "success" and combined["sha"] == second

    out = server.cli("pr", "merge", repo, str(number), "--method", "merge", token=team.dev_token)
    assert "merged" in out.stdout
    pr = pr_detail(server, repo, number)
    assert pr["state"] == "merged" and pr["merged_by"] == team.dev
    owner.git("fetch", "-q", "origin")
    merge_sha = owner.git("rev-parse", "origin/main").strip()
    assert merge_sha == pr["merge_commit_sha"]
    parents = owner.git("log", "-1", "--format=%P", merge_sha).split()
    assert parents[1] == second
    assert owner.git("show", f"{merge_sha}:app.py") == "VERSION = 2\n"

    # Merging again, or merging a closed PR, is refused with the reason.
    again = server.cli("pr", "merge", repo, str(number), check=False)
    assert again.returncode != 0 and "pull request is merged" in again.stderr

    # Revert: opens a PR whose merge restores the old tree.
    revert_number = int(server.cli("pr", "revert", repo, str(number), token=team.dev_token).stdout.strip())
    rpr = pr_detail(server, repo, revert_number)
    assert rpr["reverts_number"] == number and rpr["title"] == 'Revert "Add app"'
    assert rpr["files"] == [{"path": "app.py", "added": 0, "deleted": 1}]
    server.cli("pr", "approve", repo, str(revert_number), token=team.rev_token)
    api.post(f"/api/v1/repos/{repo}/statuses/{rpr['head_sha']}", json={"state": "success", "context": "ext-ci/build"})
    server.cli("pr", "merge", repo, str(revert_number), token=team.rev_token)
    owner.git("fetch", "-q", "origin")
    assert owner.git("ls-tree", "--name-only", "origin/main").split() == ["README.md"]


def _open_pr(server: ServerHandle, wc: WorkingCopy, branch: str, files: dict[str, str], token: str) -> int:
    wc.git("checkout", "-q", "-B", branch, "origin/main")
    for name, content in files.items():
        wc.commit_file(name, content)
    assert wc.push(branch)[0] == 0
    r = server.api(token).post(f"/api/v1/repos/{wc.repo}/pulls",
                               json={"source": branch, "target": "main", "title": f"change {branch}"})
    assert r.status_code == 201, r.text
    return int(r.json()["number"])


@pytest.mark.parametrize("method", ["merge", "squash", "ff"])
def test_merge_methods(server: ServerHandle, team: Team, tmp_path: Path, method: str) -> None:
    owner = new_repo(server, tmp_path)
    number = _open_pr(server, owner, "topic", {"a.txt": "1\n", "b.txt": "2\n"}, team.dev_token)
    head = pr_detail(server, owner.repo, number)["head_sha"]
    base = pr_detail(server, owner.repo, number)["base_sha"]
    r = server.api(team.rev_token).post(f"/api/v1/repos/{owner.repo}/pulls/{number}/merge", json={"method": method})
    assert r.status_code == 200, r.text
    merged = r.json()["merge_commit_sha"]
    owner.git("fetch", "-q", "origin")
    assert owner.git("rev-parse", "origin/main").strip() == merged
    parents = owner.git("log", "-1", "--format=%P", merged).split()
    if method == "ff":
        assert merged == head
    elif method == "squash":
        assert parents == [base]
        assert owner.git("log", "-1", "--format=%s", merged).strip() == f"change topic (#{number})"
    else:
        assert parents == [base, head]
    assert owner.git("show", f"{merged}:b.txt") == "2\n"


def test_refusals_name_their_rule(server: ServerHandle, team: Team, tmp_path: Path) -> None:
    owner = new_repo(server, tmp_path)
    repo = owner.repo
    server.cli("repo", "protect", repo, "main", "--approvals", "1", "--approver-role", "cluster-admin")
    a = _open_pr(server, owner, "left", {"shared.txt": "left\n"}, team.dev_token)
    b = _open_pr(server, owner, "right", {"shared.txt": "right\n"}, team.dev_token)
    rev = server.api(team.rev_token)
    ops = server.api(team.ops_token)

    r = rev.post(f"/api/v1/repos/{repo}/pulls/{a}/reviews", json={"state": "approve"})
    assert r.status_code == 403 and r.json()["rule"] == "review.approver-role"
    assert ops.post(f"/api/v1/repos/{repo}/pulls/{a}/reviews", json={"state": "approve"}).status_code == 201
    assert ops.post(f"/api/v1/repos/{repo}/pulls/{a}/merge", json={}).status_code == 200

    # b now conflicts with main.
    assert ops.post(f"/api/v1/repos/{repo}/pulls/{b}/reviews", json={"state": "approve"}).status_code == 201
    r = ops.post(f"/api/v1/repos/{repo}/pulls/{b}/merge", json={})
    assert r.status_code == 422 and r.json()["rule"] == "merge.conflict"
    assert "shared.txt" in r.json()["detail"]
    r = ops.post(f"/api/v1/repos/{repo}/pulls/{b}/merge", json={"method": "ff"})
    assert r.status_code == 422

    # Changes requested block a merge until that reviewer approves.
    c = _open_pr(server, owner, "third", {"c.txt": "c\n"}, team.dev_token)
    r = rev.post(f"/api/v1/repos/{repo}/pulls/{c}/reviews", json={"state": "request_changes", "body": "rename it"})
    assert r.status_code == 201
    assert ops.post(f"/api/v1/repos/{repo}/pulls/{c}/reviews", json={"state": "approve"}).status_code == 201
    r = ops.post(f"/api/v1/repos/{repo}/pulls/{c}/merge", json={})
    assert r.status_code == 422 and "review.changes-requested" in {x["rule"] for x in r.json()["blockers"]}
    r = rev.post(f"/api/v1/repos/{repo}/pulls/{c}/reviews", json={"state": "request_changes", "body": ""})
    assert r.status_code == 400 and r.json()["rule"] == "review.message"

    # Closed PRs cannot be merged or reviewed.
    assert rev.post(f"/api/v1/repos/{repo}/pulls/{c}/close").status_code == 200
    r = ops.post(f"/api/v1/repos/{repo}/pulls/{c}/merge", json={})
    assert r.status_code == 422 and r.json()["rule"] == "pr.state"
    r = ops.post(f"/api/v1/repos/{repo}/pulls/{c}/reviews", json={"state": "approve"})
    assert r.status_code == 422 and r.json()["rule"] == "review.pr-open"

    # Reverting something that was never merged, unknown PRs, bad input.
    assert rev.post(f"/api/v1/repos/{repo}/pulls/{b}/revert").json()["rule"] == "revert.merged"
    assert rev.get(f"/api/v1/repos/{repo}/pulls/9999").status_code == 404
    r = rev.post(f"/api/v1/repos/{repo}/pulls", json={"source": "../x", "target": "main", "title": "t"})
    assert r.status_code == 400 and r.json()["rule"] == "name.branch"
    r = rev.post(f"/api/v1/repos/{repo}/pulls", json={"source": "nope", "target": "main", "title": "t"})
    assert r.status_code == 404 and r.json()["rule"] == "pr.source-exists"
    r = rev.post(f"/api/v1/repos/{repo}/pulls", json={"source": "right", "target": "main", "title": "dup"})
    assert r.status_code == 409 and r.json()["rule"] == "pr.one-open-per-branch-pair"

    # Roles: a developer cannot change protection or delete repositories.
    dev = server.api(team.dev_token)
    r = dev.put(f"/api/v1/repos/{repo}/protection/main", json={"approvals": 0})
    assert r.status_code == 403 and r.json()["rule"] == "role.manage-repo"
    assert dev.delete(f"/api/v1/repos/{repo}").status_code == 403


def test_pushing_a_deleted_source_branch_closes_the_pr(server: ServerHandle, team: Team, tmp_path: Path) -> None:
    owner = new_repo(server, tmp_path)
    n = _open_pr(server, owner, "gone", {"g.txt": "g\n"}, team.dev_token)
    owner.run("push", "origin", ":gone")
    assert pr_detail(server, owner.repo, n)["state"] == "closed"


def test_repo_lifecycle_and_name_validation(server: ServerHandle, tmp_path: Path) -> None:
    api = server.api()
    for bad in ("../etc", "a/b", ".hidden", "x.git", "", "a" * 101, "sp ace"):
        r = api.post("/api/v1/repos", json={"name": bad})
        assert r.status_code in (400, 404, 405, 422), (bad, r.status_code)
    name = unique("life")
    assert api.post("/api/v1/repos", json={"name": name}).status_code == 201
    r = api.post("/api/v1/repos", json={"name": name})
    assert r.status_code == 409 and r.json()["rule"] == "repo.unique-name"
    listed = server.cli("repo", "list").stdout
    assert name in listed
    server.cli("repo", "delete", name, "--yes")
    assert api.get(f"/api/v1/repos/{name}").status_code == 404
    assert not (server.data_dir / "repos" / f"{name}.git").exists()
    p = git("ls-remote", server.git_url(name), check=False)
    assert p.returncode != 0
