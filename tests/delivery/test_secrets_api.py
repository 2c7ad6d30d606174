"""Setting application secrets through the API and CLI against a real `conveyor up` (no cluster needed:
the test holds an age key pair that stands in for the cluster's, so it can decrypt what was proposed)."""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Callable

import pytest
import yaml

from conveyor.agent import sops
from tests.forge.helpers import unique
from tests.support.server import ServerHandle


@pytest.fixture(scope="module")
def srv(server_factory: Callable[..., ServerHandle]) -> ServerHandle:
    return server_factory("sqlite")


def _setup(srv: ServerHandle, with_key: bool = True) -> tuple[str, str, str, str]:
    private, public = sops.new_identity()
    api = srv.api()
    cluster = unique("c")[:20]
    r = api.post("/api/v1/clusters", json={"name": cluster, **({"age_recipient": public} if with_key else {})})
    assert r.status_code == 201, r.text
    assert r.json()["age_recipient"] == (public if with_key else None)
    repo = unique("gops")
    envs = {"dev": {"cluster": cluster, "namespace": "{app}-dev"}}
    assert api.post("/api/v1/gitops", json={"repo": repo, "environments": envs}).status_code == 201
    return private, repo, cluster, srv.create_user(unique("dana"), "developer")


def test_a_set_secret_is_a_reviewed_pr_with_keys_and_fingerprints_only(srv: ServerHandle) -> None:
    private, repo, _, dana = _setup(srv)
    value = unique("hunter2-value")
    p = subprocess.run([sys.executable, "-m", "conveyor", "env", "secret", "set", "web", "dev", "db", "--key",
                        "PASSWORD", "--gitops", repo], input=value + "\n", capture_output=True, text=True,
                       env=srv.env(dana), timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    number = int(p.stdout.split("PR #", 1)[1].split()[0])
    api = srv.api()
    pr = api.get(f"/api/v1/repos/{repo}/pulls/{number}").json()
    assert pr["target_branch"] == "env/dev" and pr["source_branch"].startswith("secret/web/dev/db-")
    assert "PASSWORD" in pr["body"] and "added" in pr["body"] and value not in pr["body"] + pr["title"]
    listed = api.get(f"/api/v1/repos/{repo}/statuses/{pr['head_sha']}").json()["statuses"]
    statuses = {s["context"]: s for s in listed}
    diff = statuses["conveyor/diff"]
    assert diff["state"] == "success" and "PASSWORD added" in diff["description"]
    git = srv.data_dir / "repos" / f"{repo}.git"
    text = subprocess.run(["git", "--git-dir", str(git), "show",
                           f"{pr['head_sha']}:rendered/secrets/web/db.sops.yaml"],
                          capture_output=True, text=True, check=True).stdout
    assert value not in text
    plain = sops.decrypt_text(text, [private])  # what the cluster's agent will get
    assert plain["metadata"]["namespace"] == "web-dev"
    assert base64.b64decode(plain["data"]["PASSWORD"]).decode() == value  # one trailing newline of stdin dropped
    fp = yaml.safe_load(text)["metadata"]["annotations"]["conveyor.dev/fingerprints"]
    assert fp.startswith("PASSWORD=hmac-sha256:") and fp.split("=", 1)[1] in pr["body"]

    # the same value again: unchanged fingerprint; a person cannot merge it alone
    r = srv.api(dana).put("/api/v1/apps/web/envs/dev/secrets/db", params={"gitops": repo},
                          json={"values": {"PASSWORD": base64.b64encode(value.encode()).decode()}})
    assert r.status_code == 201, r.text
    # (the first PR is not merged, so the second still compares with the branch: added again)
    assert r.json()["fingerprints"]["PASSWORD"] == fp.split("=", 1)[1]
    merge = srv.api(dana).post(f"/api/v1/repos/{repo}/pulls/{number}/merge", json={"method": "merge"})
    assert (merge.status_code, merge.json()["rule"]) == (422, "review.second-person"), merge.text

    # nowhere in the server's files: DB (audit, events, PR bodies), log; the scan finds planted text
    log = srv.data_dir.parent / f"{srv.data_dir.name}.log"
    files = [f for f in srv.data_dir.rglob("*") if f.is_file() and "/repos/" not in str(f)] + [log]
    canary = unique("canary")
    assert srv.api().post("/api/v1/repos", json={"name": unique("r"), "description": canary}).status_code == 201
    blob = b"".join(f.read_bytes() for f in files if f.exists())
    assert canary.encode() in b"".join(f.read_bytes() for f in
                                       [f for f in srv.data_dir.rglob("*") if f.is_file()] + [log] if f.exists())
    for needle in (value, base64.b64encode(value.encode()).decode()):
        assert needle.encode() not in blob


def test_bad_input_and_missing_keys_are_4xx_naming_the_rule(srv: ServerHandle) -> None:
    _, repo, cluster, dana = _setup(srv, with_key=False)
    api = srv.api(dana)
    url = "/api/v1/apps/web/envs/dev/secrets"
    ok = {"values": {"K": base64.b64encode(b"v").decode()}}
    for path, body, status, rule in [
        (f"{url}/db", ok, 409, "cluster.age-key"),
        (f"{url}/Bad_Name", ok, 400, "secret.name"),
        (f"{url}/db", {"values": {"K": "***"}}, 400, "secret.value-encoding"),
        (f"{url}/db", {"values": {"K": ""}}, 400, "secret.value-empty"),
        ("/api/v1/apps/web/envs/nope/secrets/db", ok, 404, "secret.env"),
    ]:
        r = api.put(path, params={"gitops": repo}, json=body)
        assert (r.status_code, r.json().get("rule")) == (status, rule), (path, r.text)
    r = api.delete(f"{url}/db", params={"gitops": repo})
    assert (r.status_code, r.json()["rule"]) == (404, "secret.exists")
    r = srv.api().put(f"/api/v1/clusters/{cluster}/age-recipient", json={"age_recipient": "nope"})
    assert (r.status_code, r.json()["rule"]) == (400, "cluster.age-recipient")
