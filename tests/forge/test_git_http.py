"""Git over smart HTTP with the real git client: clone, push, auth, protection at receive time."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.forge.helpers import WorkingCopy, new_repo, unique
from tests.support.server import ServerHandle, git


def test_clone_push_and_fetch_roundtrip(server: ServerHandle, tmp_path: Path) -> None:
    wc = new_repo(server, tmp_path)
    sha = wc.commit_file("src/app.py", "print('hi')\n")
    assert wc.push("main")[0] == 0
    other = tmp_path / "other"
    git("clone", "-q", server.git_url(wc.repo), str(other))
    assert git("rev-parse", "HEAD", cwd=other).stdout.strip() == sha
    assert (other / "src/app.py").read_text() == "print('hi')\n"
    branches = server.api().get(f"/api/v1/repos/{wc.repo}/branches").json()
    assert branches == [{"name": "main", "sha": sha, "protected": False}]


def test_reads_need_credentials_and_writes_need_a_writer(server: ServerHandle, tmp_path: Path) -> None:
    wc = new_repo(server, tmp_path)
    anon = f"http://127.0.0.1:{server.port}/git/{wc.repo}.git"
    p = git("ls-remote", anon, check=False)
    assert p.returncode != 0, p.stdout
    bad = f"http://admin:cvy_wrong@127.0.0.1:{server.port}/git/{wc.repo}.git"
    assert git("ls-remote", bad, check=False).returncode != 0
    r = httpx.get(f"{server.url}/git/{wc.repo}.git/info/refs?service=git-upload-pack")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
    assert r.json()["rule"] == "auth.token-required"
    dev_name = unique("dev")
    dev_token = server.create_user(dev_name, "developer")
    assert git("ls-remote", server.git_url(wc.repo, "someone-else", dev_token), check=False).returncode != 0
    dev = WorkingCopy(server, wc.repo, tmp_path / "dev", user=dev_name, token=dev_token)
    dev.git("checkout", "-q", "-b", "topic")
    dev.commit_file("x.txt", "x\n")
    code, out = dev.push("topic")
    assert code == 0, out


def test_repositories_named_like_the_mount_point_are_served(server: ServerHandle, tmp_path: Path) -> None:
    wc = new_repo(server, tmp_path, name=unique("gitops"))
    assert git("ls-remote", server.git_url(wc.repo)).stdout.count("refs/heads/main") == 1


def test_dumb_http_and_unknown_repos_are_refused(server: ServerHandle) -> None:
    api = server.api()
    assert api.get(f"/git/{unique('nope')}.git/info/refs?service=git-upload-pack").status_code == 404
    assert api.get("/git/x.git/HEAD").status_code == 404
    assert api.get("/git/x.git/info/refs").status_code in (403, 404)


def test_protected_branch_refuses_direct_force_and_delete_pushes(server: ServerHandle, tmp_path: Path) -> None:
    wc = new_repo(server, tmp_path)
    before = wc.head()
    server.cli("repo", "protect", wc.repo, "main", "--approvals", "1")
    wc.commit_file("direct.txt", "no\n")
    code, out = wc.push("main")
    assert code != 0
    assert "branch 'main' is protected" in out and "protect.direct-push" in out
    wc.git("reset", "-q", "--hard", "HEAD~1")
    wc.commit_file("rewrite.txt", "history rewrite\n")
    code, out = wc.push("main", "--force")
    assert code != 0 and "protect.direct-push" in out
    code, out = wc.run("push", "origin", ":main")
    assert code != 0 and "protect.delete" in out
    tip = server.api().get(f"/api/v1/repos/{wc.repo}/branches").json()[0]
    assert tip == {"name": "main", "sha": before, "protected": True}
    # Unprotected branches still take pushes.
    assert wc.push("feature")[0] == 0


def test_pushes_become_events_in_the_audit_log(server: ServerHandle, tmp_path: Path) -> None:
    wc = new_repo(server, tmp_path)
    sha = wc.commit_file("a.txt", "a\n")
    wc.push("main")
    log = server.api().get("/api/v1/audit", params={"limit": 200}).json()
    pushes = [e for e in log if e["action"] == "push" and e["detail"].get("repo") == wc.repo]
    assert any(e["detail"]["after"] == sha and e["detail"]["branch"] == "main" for e in pushes)
    assert any(e["action"] == "repo.created" and e["target"] == wc.repo for e in log)
