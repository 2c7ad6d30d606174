"""Demo data for the dashboard tests, built through the real APIs of a running server.

Promotion records (and the app they belong to) are written through the delivery models
(``insert_promotions``): delivery has no API that records past promotions, and a real promotion needs
clusters and agents. Everything else goes through the forge, delivery, registry and pipelines APIs and
git, as a user would.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import yaml

from conveyor.core import Database, utcnow
from conveyor.delivery.gitops import DEFAULT_ENVIRONMENTS
from conveyor.delivery.models import App, Promotion, PromotionEvent
from tests.forge.helpers import WorkingCopy, new_repo, unique
from tests.support.server import ServerHandle


@dataclass
class Demo:
    server: ServerHandle
    app: str
    source: str
    gitops: str
    image_repo: str
    digests: dict[str, str]  # version -> manifest digest
    qa_pr: int
    author: str
    author_token: str
    reviewer: str
    reviewer_token: str


def push_image(server: ServerHandle, name: str, tag: str, payload: bytes) -> str:
    """A tiny OCI image (config + one layer) pushed over /v2; returns the manifest digest."""
    api = server.api()
    descs = []
    for blob, media in ((b'{"architecture":"amd64","os":"linux"}', "application/vnd.oci.image.config.v1+json"),
                        (payload, "application/vnd.oci.image.layer.v1.tar")):
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        r = api.post(f"/v2/{name}/blobs/uploads/", params={"digest": digest}, content=blob,
                     headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 201, r.text
        descs.append({"mediaType": media, "digest": digest, "size": len(blob)})
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": descs[0], "layers": descs[1:]}).encode()
    r = api.put(f"/v2/{name}/manifests/{tag}", content=manifest,
                headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    assert r.status_code == 201, r.text
    return "sha256:" + hashlib.sha256(manifest).hexdigest()


def gitops_repo(server: ServerHandle, tmp: Path, name: str) -> WorkingCopy:
    """``POST /api/v1/gitops``: environments on main, protected env branches; qa forbids self-approval."""
    envs = copy.deepcopy(DEFAULT_ENVIRONMENTS)
    envs["qa"]["approvals"]["allow_author"] = False
    r = server.api().post("/api/v1/gitops", json={"repo": name, "environments": envs})
    assert r.status_code == 201, r.text
    return WorkingCopy(server, name, tmp / name)


def deployment(app: str, env: str, version: str, digest: str) -> str:
    return yaml.safe_dump({"apiVersion": "apps/v1", "kind": "Deployment",
                           "metadata": {"name": app, "namespace": f"{app}-{env}"},
                           "spec": {"replicas": 1, "template": {"spec": {"containers": [
                               {"name": app, "image": f"127.0.0.1/apps/{app}@{digest}",
                                "env": [{"name": "VERSION", "value": version}]}]}}}}, sort_keys=False)


def insert_status(server: ServerHandle, repo: str, sha: str, context: str, creator: str, description: str,
                  target_url: str) -> None:
    db = Database(server.database_url or f"sqlite:///{server.data_dir / 'conveyor.db'}")
    try:
        with db.session() as s:
            from conveyor.forge import get_repo
            from conveyor.forge.models import CommitStatus

            s.add(CommitStatus(repo_id=get_repo(s, repo).id, sha=sha, context=context, state="success",
                               description=description, target_url=target_url, creator=creator))
    finally:
        db.dispose()


def insert_promotions(server: ServerHandle, d: Demo, source_sha: str, pr_number: int) -> None:
    """No API records past promotions: write them through the delivery models."""
    db = Database(server.database_url or f"sqlite:///{server.data_dir / 'conveyor.db'}")
    try:
        now = utcnow()
        with db.session() as s:
            s.add(App(name=d.app, source_repo=d.source, gitops_repo=d.gitops))

            def promo(env: str, version: str, state: str, days_ago: float, **kw: object) -> Promotion:
                at = now - timedelta(days=days_ago)
                p = Promotion(app=d.app, env=env, version=version, state=state, source_repo=d.source,
                              source_commit=source_sha, source_committed_at=at - timedelta(minutes=40),
                              author=d.author, image=f"127.0.0.1/{d.image_repo}",
                              image_digest=d.digests[version], image_tag=version, gitops_repo=d.gitops,
                              deploy_branch=f"env/{env}", created_at=at, updated_at=at, state_since=at, **kw)
                if state == "verified":
                    p.finished_at = at + timedelta(minutes=12)
                if state in ("failed", "rolled_back"):
                    p.failed_at = at + timedelta(minutes=5)
                    p.finished_at = at + timedelta(minutes=9)
                    p.failure_reason = "verification: GET /healthz answered 503"
                p.events.append(PromotionEvent(at=at, kind="created", message=f"{version} into {env}"))
                s.add(p)
                return p

            for i, (env, version, state) in enumerate([
                ("dev", "1.0.0", "verified"), ("qa", "1.0.0", "verified"), ("prod", "1.0.0", "verified"),
                ("dev", "1.1.0", "verified"), ("qa", "1.1.0", "failed"), ("qa", "1.1.0", "verified"),
                ("dev", "1.2.0", "verified"),
            ]):
                promo(env, version, state, days_ago=12 - 1.5 * i, merge_commit=source_sha)
            promo("qa", "1.2.0", "pr_open", days_ago=0.01, pr_number=pr_number)
            s.flush()
    finally:
        db.dispose()


def build(server: ServerHandle, tmp: Path) -> Demo:
    author, reviewer = unique("alice"), unique("bob")
    author_token = server.create_user(author, "reviewer")
    reviewer_token = server.create_user(reviewer, "reviewer")
    app = unique("shop")
    src = new_repo(server, tmp, app)
    source_sha = src.commit_file("app.py", "print('shop 1.2.0')\n", "Shop 1.2.0")
    assert src.push("main")[0] == 0
    image_repo = f"apps/{app}"
    digests = {v: push_image(server, image_repo, v, f"layer of {v}".encode()) for v in ("1.0.0", "1.1.0", "1.2.0")}
    gitops = f"{app}-gitops"
    g = gitops_repo(server, tmp, gitops)
    # The agent's report on what dev runs, posted with the cluster's agent identity.
    from tests.agent.helpers import agent_token

    dev_tip = g.git("rev-parse", "origin/env/dev").strip()
    r = server.api(agent_token(server, "nonprod")).post(
        f"/api/v1/repos/{gitops}/statuses/{dev_tip}",
        json={"state": "success", "context": f"conveyor/deploy/nonprod/{app}-dev",
              "description": "Ready: applied, 3 objects healthy"})
    assert r.status_code == 201, r.text
    # The qa promotion's PR, opened by the author (a reviewer who must not approve her own PR).
    g.git("checkout", "-q", "-B", f"promote/{app}-qa-1.2.0", "origin/env/qa")
    g.commit_file(f"source/{app}/values.yaml", "replicaCount: 1\nimage:\n  tag: 1.2.0\n")
    g.commit_file(f"rendered/{app}.yaml", deployment(app, "qa", "1.2.0", digests["1.2.0"]), f"{app} 1.2.0 to qa")
    assert g.push(f"promote/{app}-qa-1.2.0")[0] == 0
    author_api = server.api(author_token)
    r = author_api.post(f"/api/v1/repos/{gitops}/pulls",
                        json={"source": f"promote/{app}-qa-1.2.0", "target": "env/qa",
                              "title": f"Promote {app} 1.2.0 to qa",
                              "body": f"Promotes {app} 1.2.0 (image {digests['1.2.0']}) from dev to qa."})
    assert r.status_code == 201, r.text
    pr = r.json()
    # conveyor/diff is delivery's own check (nobody else may post it): written as delivery would.
    insert_status(server, gitops, pr["head_sha"], "conveyor/diff", "conveyor-delivery",
                  "dry run: 1 object changed (Deployment/" + app + ")", f"/repos/{gitops}/pulls/{pr['number']}")
    demo = Demo(server, app, app, gitops, image_repo, digests, pr["number"], author, author_token, reviewer,
                reviewer_token)
    insert_promotions(server, demo, source_sha, pr["number"])
    return demo
