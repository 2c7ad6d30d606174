"""The main job, end to end: `conveyor demo` runs the whole workflow on real parts, then we check
what it left behind — endpoints, PRs and statuses on the forge, registry tags, promotion records, DORA."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from conveyor.clusters import load
from conveyor.core import Settings
from conveyor.delivery import probe_endpoint

# The demo runs the whole workflow once (about 15 minutes here) in the module fixture.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


@pytest.fixture(scope="module")
def demo() -> Iterator[dict[str, Any]]:
    data = Path(tempfile.mkdtemp(prefix="cvy-e2e-", dir="/tmp"))  # short: kubelet socket paths
    report = data.parent / f"{data.name}-report.json"
    out = Path("test-output")
    out.mkdir(exist_ok=True)
    try:
        with open(out / "demo.log", "w") as log:
            p = subprocess.run([sys.executable, "-m", "conveyor", "demo", "--keep", "--data-dir", str(data),
                                "--report", str(report)], stdout=log, stderr=subprocess.STDOUT, timeout=3600)
        result = json.loads(report.read_text())
        result["returncode"] = p.returncode
        result["tokens_map"] = json.loads((data / "tokens.json").read_text())
        yield result
    finally:
        subprocess.run([sys.executable, "-m", "conveyor", "demo", "--stop", "--data-dir", str(data)],
                       capture_output=True, timeout=600)
        if (data / "logs").exists():
            shutil.copytree(data / "logs", out / "demo-logs", dirs_exist_ok=True)
        shutil.rmtree(data, ignore_errors=True)
        report.unlink(missing_ok=True)


def api(demo: dict[str, Any], user: str = "admin") -> httpx.Client:
    return httpx.Client(base_url=demo["url"], timeout=30,
                        headers={"Authorization": f"Bearer {demo['tokens_map'][user]}"})


def test_demo_succeeds(demo: dict[str, Any]) -> None:
    assert demo["returncode"] == 0, "conveyor demo failed; see test-output/demo.log"
    assert demo["ok"] and demo["verified"] == {"dev": True, "qa": True, "prod": True}
    assert demo["rolled_back"]
    assert demo["risky_qa"] == ["risk.security-change"]  # the `Security:` trailer asked qa for one more approval
    assert "[freeze.stop-switch]" in demo["freeze_held"]  # the approved prod PR waited for the freeze to end
    # each environment's pods read the API key set for it with `conveyor env secret set` (by fingerprint)
    assert set(demo["api_keys"]) == {"dev", "qa", "prod"} and len(set(demo["api_keys"].values())) == 3
    assert demo["api_keys_seen"] == {"dev": True, "qa": True, "prod": True}
    # hello answered through its NodePort in every environment, with what its counter answered
    for env in ("dev", "qa", "prod"):
        seen = demo["endpoints"][env]
        assert seen["counter"]["ok"] is True and seen["where"].startswith("http://10."), (env, seen)


def test_a_base_image_refresh_rebuilds_hello_as_a_security_update(demo: dict[str, Any]) -> None:
    """The demo's last good release: `conveyor image base --refresh` moves the base's tag, CI rebuilds hello on
    it, dev takes it on its own, qa asks for one more approval, and dev's agent verified its signature."""
    update = demo["security_update"]
    assert update["dev"] and update["qa"] and update["qa_extra_approvals"] == 1, update
    hello = [s for s in update["signatures"] if "/apps/hello" in s["image"]]
    assert hello and all(s["result"] == "verified" for s in hello), update["signatures"]
    with api(demo) as c:
        qa = next(p for p in c.get("/api/v1/promotions", params={"app": "hello", "env": "qa"}).json()
                  if p["version"] == update["version"] and not p["is_rollback"])
        detail = c.get(f"/api/v1/promotions/{qa['id']}").json()
        assert "base image cache/debian-python:12 changed" in detail["security_update"], detail
        runs = [r for r in c.get("/api/v1/runs", params={"repo": "hello"}).json() if r["trigger"] == "base-image"]
        assert [r["state"] for r in runs] == ["success"]
        lineage = c.get("/api/v1/registry/lineage", params={"image": "cache/debian-python:12"}).json()
        outdated = {e["digest"]: e["base"]["outdated"] for e in lineage["built_from_it"]
                    if e["repository"] == "apps/hello"}
        assert qa["image_digest"] in outdated and outdated[qa["image_digest"]] is False, lineage
        assert True in outdated.values()  # the builds before the refresh are listed as built on an old base


def test_endpoints_answer_with_the_verified_versions(demo: dict[str, Any]) -> None:
    """Through hello's NodePort on each cluster's node, as its users reach it; with its counter's answer."""
    settings = Settings(data_dir=Path(demo["data_dir"]))
    for env, cluster in (("dev", "nonprod"), ("qa", "nonprod"), ("prod", "prod")):
        r = probe_endpoint(settings, cluster, f"hello-{env}", "hello", None, "/")
        assert r.status == 200, (env, r)
        assert r.where.startswith(f"http://{load(settings.data_dir, cluster).node_ip}:"), r.where
        body = json.loads(r.body)
        assert body["version"] == "1.1.0", (env, r.body)  # the app reports app.yaml's version
        assert body["counter"]["ok"] is True and body["counter"]["hits"] >= 1, (env, r.body)


def test_prs_statuses_and_reviews_on_the_forge(demo: dict[str, Any]) -> None:
    with api(demo) as c:
        app_pr = c.get(f"/api/v1/repos/hello/pulls/{demo['prs']['app']}").json()
        assert app_pr["state"] == "merged"
        checks = {s["context"]: s["state"] for s in app_pr["checks"]["statuses"]}
        assert checks["conveyor/pr"] == "success"
        ci = c.get(f"/api/v1/repos/hello/statuses/{app_pr['merge_commit_sha']}").json()
        ci_states = {s["context"]: s["state"] for s in ci["statuses"]}
        assert ci_states["conveyor/ci"] == "success"
        # The commit's prod status follows its newest release: the base-image rebuild of this same commit
        # waits there for Olga and Omar when the demo ends (1.1.0's own prod release is checked below).
        assert ci_states["conveyor/cd/prod"] == ("pending" if demo["security_update"] else "success")
        prod = c.get(f"/api/v1/repos/gitops/pulls/{demo['prs']['prod']}").json()
        assert prod["state"] == "merged" and prod["author"] == "dana"
        approvers = {r["reviewer"] for r in prod["reviews"] if r["state"] == "approved"}
        assert approvers == {"olga", "omar"}
        deploy = c.get(f"/api/v1/repos/gitops/statuses/{prod['merge_commit_sha']}").json()
        assert any(s["context"].startswith("conveyor/deploy/prod/") and s["state"] == "success"
                   for s in deploy["statuses"])
        assert "no-self-approval" in demo["refused_self_approval"] or "cannot approve" in demo["refused_self_approval"]


def test_the_agents_ran_inside_their_clusters_told_by_webhooks_through_their_node_ports(demo: dict[str, Any]) -> None:
    """`conveyor agent install --webhooks`: each cluster's agent is a pod of its own cluster (no agent
    process on the host), it posts the deploy statuses, and pushes reach it through its NodePort."""
    data_dir = Path(demo["data_dir"])
    host_processes = json.loads((data_dir / "demo.json").read_text())["pids"]
    assert not [name for name in host_processes if name.startswith("agent")], host_processes
    in_cluster = "http://conveyor-agent.conveyor-system.svc:9797/status"
    with api(demo) as c:
        prod = c.get(f"/api/v1/repos/gitops/pulls/{demo['prs']['prod']}").json()
        deploy = c.get(f"/api/v1/repos/gitops/statuses/{prod['merge_commit_sha']}").json()["statuses"]
        assert {s["target_url"] for s in deploy if s["context"].startswith("conveyor/deploy/prod/")} == {in_cluster}
        hooks = c.get("/api/v1/repos/gitops/hooks").json()
        nodes = {load(data_dir, name).node_ip: name for name in ("nonprod", "prod")}
        # one per environment, each to the node of the cluster that runs it: dev and qa on nonprod
        assert sorted(nodes[str(urlsplit(h["url"]).hostname)] for h in hooks) == ["nonprod", "nonprod", "prod"], hooks
        for hook in hooks:
            deliveries = c.get(f"/api/v1/repos/gitops/hooks/{hook['id']}/deliveries").json()
            assert any(d["status"] == "delivered" and d["last_status_code"] == 202 for d in deliveries), \
                (nodes[urlsplit(hook["url"]).hostname], hook["url"], deliveries[:3])


def test_registry_has_the_image_under_both_tags(demo: dict[str, Any]) -> None:
    with api(demo) as c:
        prod = [p for p in c.get("/api/v1/promotions", params={"app": "hello", "env": "prod"}).json()
                if p["state"] == "verified"][0]
        tags = httpx.get(f"{demo['url']}/v2/apps/hello/tags/list",
                         auth=("admin", demo["tokens_map"]["admin"])).json()["tags"]
        assert prod["image_tag"] in tags and prod["source_commit"] in tags
        for tag in (prod["image_tag"], prod["source_commit"]):
            r = httpx.head(f"{demo['url']}/v2/apps/hello/manifests/{tag}",
                           auth=("admin", demo["tokens_map"]["admin"]),
                           headers={"Accept": "application/vnd.oci.image.manifest.v1+json, "
                                              "application/vnd.docker.distribution.manifest.v2+json"})
            assert r.headers["docker-content-digest"] == prod["image_digest"]


def test_promotion_records_and_dora(demo: dict[str, Any]) -> None:
    with api(demo) as c:
        dev = c.get("/api/v1/promotions", params={"app": "hello", "env": "dev"}).json()
        broken = [p for p in dev if p["version"].startswith("1.2.0-")][0]
        assert broken["state"] == "rolled_back" and broken["rollback_pr_number"]
        timeline = [e["kind"] for e in c.get(f"/api/v1/promotions/{broken['id']}").json()["events"]]
        assert timeline[:2] == ["created", "pr_opened"] and "failed" in timeline and timeline[-1] == "rolled_back"
        dora = {d["env"]: d for d in c.get("/api/v1/apps/hello/dora").json()}
        assert dora["dev"]["deployments"] >= 2 and dora["dev"]["change_failure_rate"] > 0
        assert dora["dev"]["time_to_restore_seconds"] is not None
        assert dora["prod"]["deployments"] >= 1 and dora["prod"]["lead_time_seconds"] > 0
