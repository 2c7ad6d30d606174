"""Issue 12's attacker: a developer with an ordinary token tries every way past a gate, and is refused.

Each refusal is a 4xx problem detail (or git's or the registry's own refusal) naming its rule, and
the attempt leaves nothing behind (``snapshot`` before and after is the same; the audit log may
grow). Every test also shows the allowed neighbour of what it refuses — the owner, a second person,
a cluster-admin — so that a refusal cannot come from a broken setup. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import BACKENDS
from tests.forge.helpers import WorkingCopy, new_repo, unique
from tests.pipelines.helpers import wait_for_run
from tests.registry.helpers import Registry, make_image
from tests.security.attack import (
    Person,
    RunnerSide,
    person,
    refused,
    registry_denied,
    snapshot,
)
from tests.support.server import ServerHandle


@dataclass
class World:
    server: ServerHandle
    dev: Person
    dev2: Person
    reviewer: Person
    ops: Person  # a cluster-admin

    @property
    def admin(self) -> httpx.Client:
        return self.server.api()


@pytest.fixture(scope="module", params=BACKENDS)
def world(request: pytest.FixtureRequest, server_factory: Callable[..., ServerHandle]) -> World:
    server = server_factory(request.param, CONVEYOR_PIPELINE_WORKERS="0")
    return World(server, person(server, "developer", "dev"), person(server, "developer", "dev"),
                 person(server, "reviewer"), person(server, "cluster-admin", "ops"))


def app_repo(w: World, tmp: Path, protect: dict[str, object] | None = None) -> WorkingCopy:
    wc = new_repo(w.server, tmp)
    if protect is not None:
        r = w.admin.put(f"/api/v1/repos/{wc.repo}/protection/main", json=protect)
        assert r.status_code == 200, r.text
    return wc


def branch_with_commit(wc: WorkingCopy, branch: str, name: str = "change.txt") -> str:
    wc.git("checkout", "-q", "-B", branch, "origin/main")
    sha = wc.commit_file(name, f"{branch} {unique('x')}\n")
    code, out = wc.push(branch)
    assert code == 0, out
    return sha


def open_pr(p: Person, repo: str, source: str, target: str = "main") -> int:
    r = p.api.post(f"/api/v1/repos/{repo}/pulls", json={"source": source, "target": target, "title": "change"})
    assert r.status_code == 201, r.text
    return int(r.json()["number"])


# --- 1. reserved status contexts ----------------------------------------------------------------
RESERVED = ["conveyor/pr", "conveyor/ci", "conveyor/diff", "conveyor/environments", "conveyor/cd/gate",
            "conveyor/cd/prod", "conveyor/deploy/nonprod/app-dev", "conveyor/deploy/nonprod", "conveyor/deploy//x",
            "conveyor/other", "conveyor/ci/extra", "conveyor//ci",
            # lookalikes of the reserved prefix: refused too, so no one dresses a check up as Conveyor's
            "Conveyor/ci", "CONVEYOR/pr", "conveyoR/deploy/nonprod/app-dev"]


def test_reserved_contexts_are_posted_by_their_owners_only(world: World, tmp_path: Path) -> None:
    w = world
    wc = app_repo(w, tmp_path)
    sha = wc.head()
    before = snapshot(w.server, [wc.repo])
    for who in (w.dev, w.reviewer, w.ops):
        for context in RESERVED:
            for state in ("success", "pending"):
                r = who.api.post(f"/api/v1/repos/{wc.repo}/statuses/{sha}", json={"state": state, "context": context})
                refused(r, 403, "status.reserved-context")
    for context in RESERVED:  # admins included
        refused(w.admin.post(f"/api/v1/repos/{wc.repo}/statuses/{sha}", json={"state": "success", "context": context}),
                403, "status.reserved-context")
    assert snapshot(w.server, [wc.repo]) == before
    # The neighbour: an unreserved context is anyone's with write permission.
    r = w.dev.api.post(f"/api/v1/repos/{wc.repo}/statuses/{sha}", json={"state": "success", "context": "lint"})
    assert r.status_code == 201, r.text


# --- 2. protected main --------------------------------------------------------------------------
def test_protected_main_is_not_merged_into_or_pushed_to_without_its_checks(world: World, tmp_path: Path) -> None:
    w = world
    wc = app_repo(w, tmp_path, {"approvals": 1, "no_self_approval": True, "required_checks": ["conveyor/ci"]})
    mine = w.dev.clone(wc.repo, tmp_path)
    head = branch_with_commit(mine, "feature")
    number = open_pr(w.dev, wc.repo, "feature")
    base = f"/api/v1/repos/{wc.repo}"
    before = snapshot(w.server, [wc.repo])

    refused(w.dev.api.post(f"{base}/pulls/{number}/reviews", json={"state": "approve"}), 403, "review.no-self-approval")
    refused(w.dev.api.post(f"{base}/statuses/{head}", json={"state": "success", "context": "conveyor/ci"}),
            403, "status.reserved-context")
    refused(w.dev.api.post(f"{base}/pulls/{number}/merge", json={"method": "merge"}), 422,
            "review.required-approvals")
    refused(w.dev.api.put(f"{base}/protection/main", json={"approvals": 0}), 403, "role.manage-repo")
    refused(w.dev.api.delete(f"{base}/protection/main"), 403, "role.manage-repo")
    code, out = mine.push("main")
    assert code != 0 and "rule: protect.direct-push" in out, out
    code, out = mine.run("push", "origin", ":refs/heads/main")
    assert code != 0 and "rule: protect.delete" in out, out
    assert snapshot(w.server, [wc.repo]) == before

    # A second person's approval leaves exactly the check, which only a pipeline run can give.
    assert w.dev2.api.post(f"{base}/pulls/{number}/reviews", json={"state": "approve"}).status_code == 201
    body = refused(w.dev.api.post(f"{base}/pulls/{number}/merge", json={"method": "merge"}), 422, "check.required")
    assert [b["rule"] for b in body["blockers"]] == ["check.required"], body


# --- 3 and 4. GitOps environment branches -------------------------------------------------------
@pytest.fixture(scope="module")
def gitops(world: World) -> str:
    name = unique("gitops")
    r = world.admin.post("/api/v1/gitops", json={"repo": name})
    assert r.status_code == 201, r.text
    return name


def test_one_person_alone_does_not_change_an_environment(world: World, gitops: str, tmp_path: Path) -> None:
    w = world
    mine = w.dev.clone(gitops, tmp_path)
    mine.git("checkout", "-q", "-B", "evil", "origin/env/dev")
    mine.commit_file("rendered/evil.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: evil}\n")
    assert mine.push("evil")[0] == 0
    number = open_pr(w.dev, gitops, "evil", "env/dev")  # dev auto-merges delivery's PRs, not this one
    base = f"/api/v1/repos/{gitops}"
    head = mine.head()
    before = snapshot(w.server, [gitops])
    refused(w.dev.api.post(f"{base}/pulls/{number}/reviews", json={"state": "approve"}), 403, "review.no-self-approval")
    for context in ("conveyor/diff", "conveyor/cd/gate", "conveyor/deploy/nonprod/evil"):
        refused(w.dev.api.post(f"{base}/statuses/{head}", json={"state": "success", "context": context}),
                403, "status.reserved-context")
    refused(w.dev.api.post(f"{base}/pulls/{number}/merge", json={"method": "merge"}), 422, "review.second-person")
    assert snapshot(w.server, [gitops]) == before
    # The second person is what was missing: their approval removes exactly that blocker.
    assert w.dev2.api.post(f"{base}/pulls/{number}/reviews", json={"state": "approve"}).status_code == 201
    rules = {b["rule"] for b in w.dev.api.get(f"{base}/pulls/{number}").json()["mergeability"]["blockers"]}
    assert "review.second-person" not in rules and "check.required" in rules  # delivery's gate check

    # Environment definitions (main) need a cluster-admin's approval.
    mine.git("checkout", "-q", "-B", "defs", "origin/main")
    mine.commit_file("environments/dev.yaml", "cluster: elsewhere\n")
    assert mine.push("defs")[0] == 0
    defs = open_pr(w.dev, gitops, "defs", "main")
    refused(w.dev2.api.post(f"{base}/pulls/{defs}/reviews", json={"state": "approve"}), 403, "review.approver-role")
    refused(w.dev.api.post(f"{base}/pulls/{defs}/merge", json={"method": "merge"}), 422, "review.required-approvals")


def test_deploy_and_env_branches_are_not_pushed_to(world: World, gitops: str, tmp_path: Path) -> None:
    w = world
    mine = w.dev.clone(gitops, tmp_path)
    before = snapshot(w.server, [gitops])
    mine.git("checkout", "-q", "-B", "x", "origin/env/dev")
    mine.commit_file("rendered/x.yaml", "kind: Namespace\n")
    admin = WorkingCopy(w.server, gitops, tmp_path / "admin-copy")
    admin.git("checkout", "-q", "-B", "x", "origin/env/dev")
    admin.commit_file("rendered/x.yaml", "kind: Namespace\n")
    attempts = [(mine, "deploy/app/1.0/dev", "push.server-only"), (mine, "env/dev", "protect.direct-push"),
                (mine, "env/prod", "protect.direct-push"),
                # a new environment branch, waiting for an environment of that name to be defined
                (mine, "env/staging", "push.env-branch"), (mine, "env/dev/x", "push.env-branch"),
                # an admin is refused too: deploy/* is delivery's, and defined environments change by PR
                (admin, "deploy/app/1.0/dev", "push.server-only"), (admin, "env/dev", "protect.direct-push")]
    for wc, ref, rule in attempts:
        code, out = wc.push(ref, "--force")
        assert code != 0 and f"rule: {rule}" in out, (ref, out)
    for wc in (mine, admin):
        code, out = wc.run("push", "origin", ":refs/heads/env/dev")
        assert code != 0 and "rule: protect.delete" in out, out
    assert snapshot(w.server, [gitops]) == before
    assert mine.push("feature-x")[0] == 0  # other branches of the GitOps repository are for PRs


# --- 5. CI runs of unreviewed refs --------------------------------------------------------------
APP = "name: {name}\nversion: '1.0.0'\nimage: apps/{name}\ntemplates: {{path: chart, kind: helm}}\n"


def test_a_ci_run_of_an_unreviewed_ref_is_never_deployable(world: World, tmp_path: Path) -> None:
    w = world
    wc = new_repo(w.server, tmp_path)
    app = unique("app")
    wc.commit_file(".conveyor/app.yaml", APP.format(name=app))
    wc.commit_file(".conveyor/pipeline.yaml", "ci:\n  - {name: build, run: 'true'}\n")
    assert wc.push("main")[0] == 0
    repo = wc.repo
    assert w.admin.put(f"/api/v1/repos/{repo}/protection/main", json={"approvals": 1}).status_code == 200
    assert w.admin.put(f"/api/v1/repos/{repo}/secrets/DEPLOY_KEY", json={"value": "protected-value"}).status_code == 204
    assert w.admin.put(f"/api/v1/repos/{repo}/secrets/PR_KEY",
                       json={"value": "shared-value", "scope": "all"}).status_code == 204
    hosts = w.admin.get("/api/v1/pipelines/host-execution").json()["repos"]
    assert w.admin.put("/api/v1/pipelines/host-execution", json={"repos": [*hosts, repo]}).status_code == 200
    mine = w.dev.clone(repo, tmp_path)
    mine.git("checkout", "-q", "-B", "wip", "origin/main")
    unreviewed = mine.commit_file(".conveyor/pipeline.yaml", "ci:\n  - {name: own, host: true, run: cat /etc/shadow}\n")
    assert mine.push("wip")[0] == 0
    runner = RunnerSide(w.server, repo)
    reg_of = Registry(w.server, "x", "")

    for body in ({"pipeline": "ci", "ref": "wip"}, {"pipeline": "ci", "sha": unreviewed}):
        r = w.dev.api.post(f"/api/v1/repos/{repo}/runs", json=body)
        assert r.status_code == 201, r.text
        run = r.json()
        assert run["deployable"] is False and run["trigger"] == "manual"
        claim = runner.claim(run["id"])
        # Unreviewed code gets no protected secret, no host, and a token that pushes nowhere.
        assert claim["secrets"] == {"PR_KEY": "shared-value"}, claim["secrets"]
        assert claim["host_execution"] is False
        reg_of = Registry(w.server, "conveyor-pipelines", claim["run_token"])
        registry_denied(reg_of.http.post(f"/v2/apps/{app}/blobs/uploads/"), 403, "DENIED", "registry.push-scope")
        runner.finish(run["id"])
    # The neighbour: a run of main's reviewed tip is deployable and gets all three.
    r = w.dev.api.post(f"/api/v1/repos/{repo}/runs", json={"pipeline": "ci"})
    assert r.status_code == 201 and r.json()["deployable"] is True, r.text
    claim = runner.claim(r.json()["id"])
    assert claim["secrets"] == {"DEPLOY_KEY": "protected-value", "PR_KEY": "shared-value"}
    assert claim["host_execution"] is True
    reg_of = Registry(w.server, "conveyor-pipelines", claim["run_token"])
    assert reg_of.http.post(f"/v2/apps/{app}/blobs/uploads/").status_code == 202
    runner.finish(r.json()["id"], "failure")
    w.admin.put("/api/v1/pipelines/host-execution", json={"repos": hosts})


# --- 6. other users' runs -----------------------------------------------------------------------
def test_other_users_runs_are_not_cancelled_or_retried(world: World, tmp_path: Path) -> None:
    w = world
    wc = new_repo(w.server, tmp_path)
    wc.commit_file(".conveyor/pipeline.yaml", "ci:\n  - {name: build, run: 'true'}\n")
    assert wc.push("main")[0] == 0
    runner = RunnerSide(w.server, wc.repo)
    mine = w.dev.api.post(f"/api/v1/repos/{wc.repo}/runs", json={"pipeline": "ci"}).json()
    claim = runner.claim(mine["id"])
    before = snapshot(w.server, [wc.repo])
    for who in (w.dev2, w.reviewer):
        refused(who.api.post(f"/api/v1/runs/{mine['id']}/cancel"), 403, "run.owner")
        refused(who.api.post(f"/api/v1/runs/{mine['id']}/retry"), 403, "run.owner")
    run_api = w.server.api(claim["run_token"])  # the run's own token may not control runs either
    refused(run_api.post(f"/api/v1/runs/{mine['id']}/cancel"), 403, "token.scope")
    assert snapshot(w.server, [wc.repo]) == before
    runner.finish(mine["id"], "failure")
    before = snapshot(w.server, [wc.repo])
    refused(w.dev2.api.post(f"/api/v1/runs/{mine['id']}/retry"), 403, "run.owner")
    assert snapshot(w.server, [wc.repo]) == before
    # Its owner and a cluster-admin may.
    again = w.dev.api.post(f"/api/v1/runs/{mine['id']}/retry")
    assert again.status_code == 201, again.text
    assert w.ops.api.post(f"/api/v1/runs/{again.json()['id']}/cancel").status_code == 200


# --- 7. other users' PR branches ----------------------------------------------------------------
def test_another_users_pr_branch_is_not_force_pushed_or_deleted(world: World, tmp_path: Path) -> None:
    w = world
    wc = app_repo(w, tmp_path)
    theirs = w.dev.clone(wc.repo, tmp_path)
    branch_with_commit(theirs, "their-work")
    number = open_pr(w.dev, wc.repo, "their-work")
    mine = w.dev2.clone(wc.repo, tmp_path)
    mine.git("checkout", "-q", "-B", "rewrite", "origin/main")
    mine.commit_file("other.txt", "replaced\n")
    before = snapshot(w.server, [wc.repo])
    code, out = mine.push("their-work", "--force")
    assert code != 0 and "rule: push.pr-branch" in out, out
    code, out = mine.run("push", "origin", ":refs/heads/their-work")
    assert code != 0 and "rule: push.pr-branch" in out, out
    assert snapshot(w.server, [wc.repo]) == before
    # A fast-forward is still anyone's; a cluster-admin may force; once closed, the branch is free.
    mine.git("checkout", "-q", "-B", "ff", "origin/their-work")
    mine.commit_file("help.txt", "a fix\n")
    assert mine.push("their-work")[0] == 0
    ops = w.ops.clone(wc.repo, tmp_path)
    ops.git("checkout", "-q", "-B", "x", "origin/main")
    ops.commit_file("ops.txt", "x\n")
    assert ops.push("their-work", "--force")[0] == 0
    assert w.dev.api.post(f"/api/v1/repos/{wc.repo}/pulls/{number}/close").status_code == 200
    assert mine.run("push", "origin", ":refs/heads/their-work")[0] == 0


# --- 8. secrets ---------------------------------------------------------------------------------
def test_secrets_are_not_read_or_written_by_developers_or_handed_to_pr_runs(world: World, tmp_path: Path) -> None:
    w = world
    wc = new_repo(w.server, tmp_path)
    wc.commit_file(".conveyor/pipeline.yaml", "pr:\n  - {name: test, run: 'true'}\n")
    assert wc.push("main")[0] == 0
    base = f"/api/v1/repos/{wc.repo}/secrets"
    assert w.admin.put(f"{base}/DEPLOY_KEY", json={"value": "protected-value"}).status_code == 204
    before = snapshot(w.server, [wc.repo])
    refused(w.dev.api.get(base), 403, "role.manage-repo")
    refused(w.dev.api.put(f"{base}/DEPLOY_KEY", json={"value": "mine", "scope": "all"}), 403, "role.manage-repo")
    refused(w.dev.api.put(f"{base}/NEW", json={"value": "mine", "scope": "all"}), 403, "role.manage-repo")
    refused(w.dev.api.delete(f"{base}/DEPLOY_KEY"), 403, "role.manage-repo")
    assert snapshot(w.server, [wc.repo]) == before
    mine = w.dev.clone(wc.repo, tmp_path)
    branch_with_commit(mine, "steal")
    runner = RunnerSide(w.server, wc.repo)
    open_pr(w.dev, wc.repo, "steal")
    run = wait_for_run(w.server, wc.repo, mine.head(), "pr", finished=False)  # started by the PR's event
    assert runner.claim(run["id"])["secrets"] == {}
    runner.finish(run["id"])
    # The neighbour: once marked for pull requests, the same secret is handed over.
    assert w.ops.api.put(f"{base}/DEPLOY_KEY", json={"value": "protected-value", "scope": "all"}).status_code == 204
    r = w.dev.api.post(f"/api/v1/repos/{wc.repo}/runs", json={"pipeline": "pr", "ref": "steal"})
    assert r.status_code == 201, r.text
    run = r.json()
    assert runner.claim(run["id"])["secrets"] == {"DEPLOY_KEY": "protected-value"}
    runner.finish(run["id"])


# --- 9. the registry ----------------------------------------------------------------------------
def test_registry_namespaces_locks_and_deletes(world: World) -> None:
    w = world
    dev, other = Registry(w.server, w.dev.name, w.dev.token), Registry(w.server, w.dev2.name, w.dev2.token)
    img = make_image(layers=1, size=64)
    theirs = f"users/{w.dev2.name}/tool"
    digest = other.push_image(theirs, "1", img)
    own = f"users/{w.dev.name}/tool"
    dev.push_image(own, "1", make_image(layers=1, size=64))
    assert w.dev.api.post("/api/v1/registry/locks", json={"repository": own, "tag": "1"}).status_code == 200
    before = snapshot(w.server, [])
    for name, rule in ((f"cache/{unique('lib')}", "registry.shared-namespace"),
                       ("cache/shell", "registry.shared-namespace"), (f"apps/{unique('app')}", "registry.apps-by-ci"),
                       (theirs, "registry.personal-namespace"), (f"base/{unique('os')}", "registry.shared-namespace")):
        registry_denied(dev.http.post(f"/v2/{name}/blobs/uploads/"), 403, "DENIED", rule)
        registry_denied(dev.push_manifest(name, "1", img.manifest), 403, "DENIED", rule)
    registry_denied(dev.http.delete(f"/v2/{theirs}/manifests/{digest}"), 403, "DENIED", "registry.delete-role")
    registry_denied(dev.http.delete(f"/v2/{theirs}/manifests/1"), 403, "DENIED", "registry.delete-role")
    # Over a locked tag, even in one's own namespace; a lock is lifted by a cluster-admin only.
    again = make_image(layers=1, size=64)
    for b in again.blobs:
        dev.push_blob(own, b)
    r = dev.push_manifest(own, "1", again.manifest)
    assert r.status_code in (400, 403, 409) and "locked" in r.text, r.text
    refused(w.dev.api.delete("/api/v1/registry/locks", params={"repository": own, "tag": "1"}), 403, "role.manage-repo")
    # Locking another user's tag would block their pushes: only who may push there may lock it.
    refused(w.dev.api.post("/api/v1/registry/locks", json={"repository": theirs, "tag": "1"}), 403,
            "registry.lock-scope")
    assert snapshot(w.server, []) == before
    assert other.http.get(f"/v2/{theirs}/manifests/1").status_code == 200


# --- 10. revocation -----------------------------------------------------------------------------
def test_a_revoked_token_or_disabled_user_stops_working_at_once(world: World, tmp_path: Path) -> None:
    w = world
    wc = app_repo(w, tmp_path)
    eve = person(w.server, "developer", "eve")
    second = w.admin.post(f"/api/v1/users/{eve.name}/tokens", json={"description": "laptop"}).json()

    def works(token: str) -> dict[str, bool]:
        api = w.server.api(token).get("/api/v1/user").status_code == 200
        git = subprocess_ok(["git", "ls-remote", w.server.git_url(wc.repo, eve.name, token)])
        reg = httpx.get(f"{w.server.url}/v2/users/{eve.name}/x/tags/list", auth=(eve.name, token)).status_code
        return {"api": api, "git": git, "registry": reg in (200, 404)}

    assert works(eve.token) == works(second["token"]) == {"api": True, "git": True, "registry": True}
    assert w.admin.delete(f"/api/v1/users/{eve.name}/tokens/{second['id']}").status_code == 204
    assert works(second["token"]) == {"api": False, "git": False, "registry": False}
    assert works(eve.token)["api"]  # only that token
    refused(w.server.api(second["token"]).get("/api/v1/user"), 401, "auth.token-invalid")
    assert w.admin.patch(f"/api/v1/users/{eve.name}", json={"disabled": True}).status_code == 200
    assert works(eve.token) == {"api": False, "git": False, "registry": False}
    # A role change applies at once too: a demoted cluster-admin no longer manages repositories.
    ops = person(w.server, "cluster-admin", "ops")
    assert ops.api.put(f"/api/v1/repos/{wc.repo}/protection/main", json={"approvals": 0}).status_code == 200
    assert w.admin.patch(f"/api/v1/users/{ops.name}", json={"role": "developer"}).status_code == 200
    refused(ops.api.put(f"/api/v1/repos/{wc.repo}/protection/main", json={"approvals": 0}), 403, "role.manage-repo")


def subprocess_ok(cmd: list[str]) -> bool:
    import subprocess

    env = {"GIT_TERMINAL_PROMPT": "0", "PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}
    return subprocess.run(cmd, capture_output=True, env=env, timeout=60).returncode == 0
