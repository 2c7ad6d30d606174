"""Killing the server during pushes and merges leaves repositories fsck-clean and the DB agreeing with refs."""

from __future__ import annotations

import random
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from conveyor.core import Database, Settings
from conveyor.core.auth import Principal, Role
from conveyor.forge import pulls
from conveyor.forge.repos import bare, get_repo
from tests.forge.helpers import WorkingCopy, new_repo
from tests.support.server import ServerHandle, git


def _assert_consistent(server: ServerHandle, repo: str, acknowledged: list[tuple[str, str]]) -> None:
    path = server.data_dir / "repos" / f"{repo}.git"
    fsck = subprocess.run(["git", "--git-dir", str(path), "fsck", "--strict", "--no-progress"],
                          capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stderr
    api = server.api()
    tips = {b["name"]: b["sha"] for b in api.get(f"/api/v1/repos/{repo}/branches").json()}
    for branch, sha in acknowledged:  # every push the client saw accepted is still there
        assert branch in tips
        anc = subprocess.run(["git", "--git-dir", str(path), "merge-base", "--is-ancestor", sha, tips[branch]])
        assert anc.returncode == 0, f"acknowledged push {sha} to {branch} was lost"
    for pr in api.get(f"/api/v1/repos/{repo}/pulls").json():
        assert pr["state"] in ("open", "merged", "closed"), pr
        if pr["state"] == "merged":
            anc = subprocess.run(["git", "--git-dir", str(path), "merge-base", "--is-ancestor",
                                  pr["merge_commit_sha"], tips[pr["target_branch"]]])
            assert anc.returncode == 0, f"PR #{pr['number']} marked merged but its merge is not on the branch"
        elif pr["state"] == "open":
            assert pr["head_sha"] == tips[pr["source_branch"]]
    # Every branch tip was recorded as a push event (the outbox consumers saw it).
    audit = api.get("/api/v1/audit", params={"limit": 1000}).json()
    recorded = {(e["detail"].get("branch"), e["detail"].get("after")) for e in audit if e["action"] == "push"
                and e["detail"].get("repo") == repo}
    for branch, sha in tips.items():
        assert (branch, sha) in recorded, f"tip {sha} of {branch} has no push event"


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_kill_during_pushes_and_merges(
    server_factory: Callable[..., ServerHandle], tmp_path: Path, backend: str
) -> None:
    server = server_factory(backend)
    owner = new_repo(server, tmp_path)
    repo = owner.repo
    rng = random.Random(7)
    acknowledged: list[tuple[str, str]] = []
    for cycle in range(3):
        # PRs ready to merge, touching different files.
        numbers = []
        for i in range(6):
            branch = f"c{cycle}-pr{i}"
            owner.git("checkout", "-q", "-B", branch, "origin/main")
            owner.commit_file(f"{branch}.txt", f"{branch}\n")
            assert owner.push(branch)[0] == 0
            r = server.api().post(f"/api/v1/repos/{repo}/pulls",
                                  json={"source": branch, "target": "main", "title": branch})
            numbers.append(r.json()["number"])
        pusher = WorkingCopy(server, repo, tmp_path / f"pusher{cycle}")
        stop = threading.Event()

        def merge_all(numbers: list[int] = numbers, stop: threading.Event = stop) -> None:
            with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.admin_token}"},
                              timeout=30) as c:
                for n in numbers:
                    if stop.is_set():
                        return
                    try:
                        method = rng.choice(["merge", "squash"])
                        c.post(f"/api/v1/repos/{repo}/pulls/{n}/merge", json={"method": method})
                    except httpx.HTTPError:
                        return

        def push_loop(pusher: WorkingCopy = pusher, stop: threading.Event = stop, cycle: int = cycle) -> None:
            k = 0
            while not stop.is_set():
                pusher.git("checkout", "-q", "-B", f"side{cycle}", "HEAD")
                sha = pusher.commit_file(f"side/{cycle}-{k}.txt", "x" * 5000)
                code, _ = pusher.push(f"side{cycle}")
                if code == 0:
                    acknowledged.append((f"side{cycle}", sha))
                k += 1

        threads = [threading.Thread(target=merge_all), threading.Thread(target=push_loop)]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(0.5, 2.0))
        server.kill()
        stop.set()
        for t in threads:
            t.join(60)
        server.start()
        _assert_consistent(server, repo, acknowledged)
        owner.git("fetch", "-q", "origin")


def test_interrupted_merge_is_finished_or_undone_on_restart(
    server_factory: Callable[..., ServerHandle], tmp_path: Path
) -> None:
    server = server_factory("sqlite")
    owner = new_repo(server, tmp_path)
    repo = owner.repo
    numbers = []
    for branch in ("published", "unpublished"):
        owner.git("checkout", "-q", "-B", branch, "origin/main")
        owner.commit_file(f"{branch}.txt", "x\n")
        owner.push(branch)
        numbers.append(server.api().post(f"/api/v1/repos/{repo}/pulls",
                                         json={"source": branch, "target": "main", "title": branch}).json()["number"])
    server.stop()
    # Reproduce the two crash points of a merge: after the intent was recorded, before and after
    # the compare-and-swap of the branch.
    settings = Settings.from_env(data_dir=server.data_dir)
    db = Database(settings.db_url)
    admin = Principal(name="admin", role=Role.ADMIN, user_id=1)
    with db.session() as s:
        r = get_repo(s, repo)
        git_repo = bare(settings, r)
        base = git_repo.branch_tip("main")
        assert base
        for n, publish in zip(numbers, (True, False), strict=True):
            pr = pulls.get_pr(s, r, n)
            commit = pulls._merge_commit(git_repo, pr, git_repo.branch_tip("main") or base, "merge", admin.name)
            pr.state, pr.merge_commit_sha, pr.base_before_merge, pr.merge_method = (
                "merging", commit, git_repo.branch_tip("main"), "merge")
            pr.merged_by = admin.name
            if publish:
                assert git_repo.update_ref("refs/heads/main", commit, git_repo.branch_tip("main") or "", "test")
    db.dispose()
    server.start()
    api = server.api()
    published = api.get(f"/api/v1/repos/{repo}/pulls/{numbers[0]}").json()
    unpublished = api.get(f"/api/v1/repos/{repo}/pulls/{numbers[1]}").json()
    assert published["state"] == "merged"
    assert unpublished["state"] == "open" and unpublished["mergeability"]["mergeable"]
    assert api.post(f"/api/v1/repos/{repo}/pulls/{numbers[1]}/merge", json={}).status_code == 200
    _assert_consistent(server, repo, [])
    assert git("ls-remote", server.git_url(repo)).returncode == 0


def test_a_ref_moved_without_its_hook_is_recorded_on_restart(
    server_factory: Callable[..., ServerHandle], tmp_path: Path
) -> None:
    server = server_factory("sqlite")
    owner = new_repo(server, tmp_path)
    sha = owner.commit_file("late.txt", "pushed, but the server died before the hook ran\n")
    server.stop()
    path = server.data_dir / "repos" / f"{owner.repo}.git"
    # What git leaves behind when the server is killed between the ref update and post-receive.
    subprocess.run(["git", "--git-dir", str(path), "fetch", "-q", str(owner.path), "HEAD"], check=True)
    subprocess.run(["git", "--git-dir", str(path), "update-ref", "refs/heads/main", sha], check=True)
    server.start()
    _assert_consistent(server, owner.repo, [("main", sha)])
