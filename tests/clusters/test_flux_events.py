"""Flux's events -> deploy statuses, with event payloads recorded from kustomize-controller v1.9.6 (its
own --events-addr posts, in tests/clusters/flux_events/) and their notification-controller form.

The pure part (parsing, signature, mapping) runs without a server; the endpoint part posts the recorded
payloads to a real `conveyor up` and reads the statuses back through the API.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from conveyor.clusters.flux.events import (
    INFO_REASONS,
    TRANSITIONS,
    DeployState,
    check_signature,
    normalize,
    parse,
    parse_revision,
    state_of,
)
from conveyor.core import InvalidInput, Unauthorized
from tests.forge.helpers import WorkingCopy, new_repo, unique
from tests.support.server import ServerHandle

RECORDED = Path(__file__).parent / "flux_events"
KUSTOMIZE_GROUP = "kustomize.toolkit.fluxcd.io"


def recorded(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((RECORDED / f"{name}.json").read_text())
    return data


def retarget(event: dict[str, Any], *, branch: str, sha: str, repo: str, sync: str, cluster: str) -> dict[str, Any]:
    """A recorded event as the controller would send it for this test's Kustomization and commit."""
    e = copy.deepcopy(event)
    meta = e.setdefault("metadata", {})
    meta[f"{KUSTOMIZE_GROUP}/revision"] = f"{branch}@sha1:{sha}"
    meta["event.toolkit.fluxcd.io/repo"] = repo
    meta["event.toolkit.fluxcd.io/sync"] = sync
    meta["event.toolkit.fluxcd.io/cluster"] = cluster
    return e


def as_notification_controller(event: dict[str, Any], alert_metadata: dict[str, str]) -> dict[str, Any]:
    """What notification-controller's generic-hmac Provider forwards: prefixes stripped (RFC 0008), the
    Alert's eventMetadata merged in."""
    e = copy.deepcopy(event)
    group = e["involvedObject"]["apiVersion"].split("/")[0]
    meta: dict[str, str] = {}
    for k, v in e.get("metadata", {}).items():
        if k.startswith("event.toolkit.fluxcd.io/"):
            meta[k.split("/", 1)[1]] = v
    meta.update(alert_metadata)
    for k, v in e.get("metadata", {}).items():
        if k.startswith(group + "/"):
            meta[k.split("/", 1)[1]] = v
    e["metadata"] = meta
    return e


def sign(key: str, body: bytes, algo: str = "sha256") -> str:
    return f"{algo}=" + hmac.new(key.encode(), body, getattr(hashlib, algo)).hexdigest()


# --- pure ----------------------------------------------------------------------------------------


def test_recorded_events_parse_and_map_to_states() -> None:
    progressing, health, succeeded, failed = (parse(json.dumps(recorded(n)).encode()) for n in
                                              ("progressing", "health-passed", "succeeded", "failed"))
    assert progressing.kind == "Kustomization" and state_of(progressing) == DeployState.PENDING
    assert state_of(health) == DeployState.PENDING  # "Health check passed": Ready is still Progressing
    assert state_of(succeeded) == DeployState.SUCCESS and succeeded.reason == "ReconciliationSucceeded"
    assert state_of(failed) == DeployState.FAILURE and failed.severity == "error"
    for e in (progressing, health, succeeded, failed):
        assert parse_revision(e.revision) is not None, e.metadata
        assert e.controller == "kustomize-controller"
    source = parse(json.dumps(recorded("source")).encode())
    assert source.kind == "GitRepository" and state_of(source) is None


def test_both_senders_forms_normalize_alike() -> None:
    direct = recorded("succeeded")
    via_nc = as_notification_controller(direct, {"cluster": "c1"})
    a, b = parse(json.dumps(direct).encode()), parse(json.dumps(via_nc).encode())
    assert a.revision == b.revision and a.revision
    assert a.sync == b.sync == direct["metadata"]["event.toolkit.fluxcd.io/sync"]
    assert a.metadata["repo"] == b.metadata["repo"] and b.metadata["cluster"] == "c1"
    assert normalize({"kustomize.toolkit.fluxcd.io/revision": "x", "revision": "y"}, "kustomize.toolkit.fluxcd.io/v1")[
        "revision"] == "x"  # the object's own group wins, as in notification-controller


@pytest.mark.parametrize(("revision", "expected"), [
    ("env/dev@sha1:" + "a" * 40, ("env/dev", "a" * 40)),
    ("env/dev/" + "b" * 40, ("env/dev", "b" * 40)),  # before Flux 2.0
    ("refs/heads/env/qa@sha1:" + "c" * 40, ("env/qa", "c" * 40)),
    ("sha1:" + "d" * 40, ("", "d" * 40)),
    ("env/dev@sha256:" + "e" * 64, None),
    ("", None),
])
def test_revisions(revision: str, expected: tuple[str, str] | None) -> None:
    assert parse_revision(revision) == expected


def test_signatures() -> None:
    body = json.dumps(recorded("succeeded")).encode()
    check_signature(sign("k" * 64, body), body, "k" * 64)
    check_signature(sign("k" * 64, body, "sha512"), body, "k" * 64)
    for header, rule in ((None, "flux.credentials-required"), ("", "flux.credentials-required"),
                         (sign("other", body), "flux.signature-invalid"), ("md5=abc", "flux.signature-invalid"),
                         (sign("k" * 64, body + b" "), "flux.signature-invalid"), ("sha256", "flux.signature-invalid")):
        with pytest.raises(Unauthorized) as info:
            check_signature(header, body, "k" * 64)
        assert info.value.rule == rule


def test_malformed_events_are_refused() -> None:
    for body in (b"not json", b"[]", b'{"severity": "info"}', b'{"involvedObject": {"kind": "Kustomization"}}',
                 json.dumps({**recorded("succeeded"), "metadata": []}).encode()):
        with pytest.raises(InvalidInput) as info:
            parse(body)
        assert info.value.rule == "flux.event"


def test_transition_table_is_complete_and_drops_repeats() -> None:
    states: list[DeployState | None] = [None, *DeployState]
    assert set(TRANSITIONS) == {(a, b) for a in states for b in DeployState}
    assert all(not TRANSITIONS[(s, s)] for s in DeployState)
    assert not TRANSITIONS[(DeployState.SUCCESS, DeployState.PENDING)]
    assert TRANSITIONS[(DeployState.SUCCESS, DeployState.FAILURE)] and TRANSITIONS[(DeployState.FAILURE,
                                                                                    DeployState.SUCCESS)]
    assert set(INFO_REASONS.values()) <= set(DeployState)


# --- the endpoint, on a real server -------------------------------------------------------------


class Env:
    def __init__(self, server: ServerHandle, tmp: Path) -> None:
        self.server = server
        self.cluster = unique("fx")[:20]
        self.env = "dev"
        self.gitops: WorkingCopy = new_repo(server, tmp, unique("gitops"), kind="gitops")
        self.gitops.commit_file(f"environments/{self.env}.yaml", yaml.safe_dump({"cluster": self.cluster}))
        assert self.gitops.push("main")[0] == 0
        r = server.api().post("/api/v1/clusters", json={"name": self.cluster, "agent": "flux"})
        assert r.status_code == 201, r.text
        self.registered = r.json()
        self.key: str = self.registered["flux"]["hmac_key"]
        self.token: str = self.registered["agent_token"]
        self.url = f"/api/v1/clusters/{self.cluster}/flux/events"
        self.context = f"conveyor/deploy/{self.cluster}/{self.env}"

    def commit(self, content: str) -> str:
        sha = self.gitops.commit_file("rendered/app.yaml", content)
        assert self.gitops.push(f"env/{self.env}")[0] == 0
        return sha

    def event(self, name: str, sha: str, **over: Any) -> dict[str, Any]:
        e = retarget(recorded(name), branch=f"env/{self.env}", sha=sha, repo=self.gitops.repo, sync=self.env,
                     cluster=self.cluster)
        e.update(over)
        return e

    def post_signed(self, event: dict[str, Any], key: str | None = None) -> httpx.Response:
        body = json.dumps(as_notification_controller(event, {"cluster": self.cluster})).encode()
        return httpx.post(self.server.url + self.url, content=body, timeout=30,
                          headers={"Content-Type": "application/json", "X-Signature": sign(key or self.key, body)})

    def post_as_agent(self, event: dict[str, Any], token: str | None = None) -> httpx.Response:
        """As kustomize-controller does with --events-addr=http://agent-C:TOKEN@host/...: basic auth."""
        return httpx.post(self.server.url + self.url, json=event, timeout=30,
                          auth=(f"agent-{self.cluster}", token or self.token))

    def state(self, sha: str) -> dict[str, Any] | None:
        body = self.server.api().get(f"/api/v1/repos/{self.gitops.repo}/statuses/{sha}").json()
        return {s["context"]: s for s in body["statuses"]}.get(self.context)


@pytest.fixture
def fx(server: ServerHandle, tmp_path: Path) -> Env:
    return Env(server, tmp_path)


def test_registration_prints_events_url_key_and_manifests(server: ServerHandle, tmp_path: Path) -> None:
    e = Env(server, tmp_path)
    flux = e.registered["flux"]
    assert flux["events_url"] == f"{server.url}/api/v1/clusters/{e.cluster}/flux/events"
    assert flux["events_addr"].startswith(f"http://agent-{e.cluster}:cvy_")
    docs = [d for d in yaml.safe_load_all(flux["manifests"]) if d]
    by_kind = {d["kind"]: d for d in docs}
    repo = by_kind["GitRepository"]["spec"]
    assert repo["url"] == f"{server.url}/git/{e.gitops.repo}.git" and repo["ref"] == {"branch": "env/dev"}
    kust = by_kind["Kustomization"]
    assert kust["spec"]["path"] == "./rendered" and kust["spec"]["prune"] and kust["spec"]["wait"]
    assert kust["metadata"]["annotations"]["event.toolkit.fluxcd.io/sync"] == "dev"
    assert by_kind["Provider"]["spec"] == {"type": "generic-hmac", "address": flux["events_url"],
                                           "secretRef": {"name": "conveyor-events"}}
    assert by_kind["Alert"]["spec"]["eventMetadata"] == {"cluster": e.cluster}
    assert by_kind["Receiver"]["spec"]["type"] == "generic-hmac"
    secrets = {d["metadata"]["name"]: d["stringData"] for d in docs if d["kind"] == "Secret"}
    assert secrets["conveyor-events"]["token"] == flux["hmac_key"]
    git = secrets["conveyor-git"]
    # the git credential reads the GitOps repo but cannot post statuses
    assert httpx.get(f"{server.url}/git/{e.gitops.repo}.git/info/refs?service=git-upload-pack",
                     auth=(git["username"], git["password"]), timeout=30).status_code == 200
    sha = e.commit("a: 1\n")
    r = httpx.post(f"{server.url}/api/v1/repos/{e.gitops.repo}/statuses/{sha}", timeout=30,
                   auth=(git["username"], git["password"]), json={"state": "success", "context": e.context})
    assert r.status_code == 403, r.text
    assert e.post_as_agent(e.event("succeeded", sha), token=git["password"]).status_code == 403
    # the CLI writes the same manifests to a 0600 file and prints the key once
    out = server.cli("cluster", "flux-manifests", e.cluster, "--manifests", str(tmp_path / "m.yaml")).stdout
    assert "events URL: " in out and (tmp_path / "m.yaml").stat().st_mode & 0o077 == 0
    assert httpx.get(f"{server.url}/git/{e.gitops.repo}.git/info/refs?service=git-upload-pack",
                     auth=(git["username"], git["password"]), timeout=30).status_code == 401  # re-issued


def test_pending_then_success_through_both_forms_and_repeats_are_dropped(fx: Env) -> None:
    sha = fx.commit("a: 1\n")
    r = fx.post_signed(fx.event("progressing", sha))
    assert r.status_code == 202 and r.json()["posted"], r.text
    assert fx.state(sha)["state"] == "pending"
    r = fx.post_as_agent(fx.event("succeeded", sha))
    assert r.status_code == 202 and r.json()["posted"], r.text
    st = fx.state(sha)
    assert st["state"] == "success" and st["creator"] == f"agent-{fx.cluster}"
    for again in (fx.event("succeeded", sha), fx.event("progressing", sha)):  # Flux re-sends; a drift re-apply
        r = fx.post_as_agent(again)
        assert r.status_code == 202 and not r.json()["posted"], r.text
    assert fx.state(sha)["state"] == "success"


def test_failure_carries_the_message_and_old_revisions_do_not_undo_newer_verdicts(fx: Env) -> None:
    old = fx.commit("a: 1\n")
    new = fx.commit("a: 2\n")
    failed = fx.event("failed", new)
    r = fx.post_signed(failed)
    assert r.status_code == 202 and r.json()["state"] == "failure", r.text
    st = fx.state(new)
    assert st["state"] == "failure" and " ".join(failed["message"].split())[:60] in st["description"]
    # a late event about the older revision must not give delivery an older verdict to read
    r = fx.post_signed(fx.event("succeeded", old))
    assert r.status_code == 202 and not r.json()["posted"] and "older" in r.json()["detail"], r.text
    assert fx.state(old) is None
    # a commit that is not on the branch any more (or never was) posts nothing
    r = fx.post_signed(fx.event("succeeded", "f" * 40))
    assert r.status_code == 202 and not r.json()["posted"], r.text
    reports = fx.server.api().get(f"/api/v1/clusters/{fx.cluster}/flux/reports").json()
    assert [r["reason"] for r in reports if r["kind"] == "Kustomization"] == ["ReconciliationSucceeded"]


def test_refusals(fx: Env) -> None:
    sha = fx.commit("a: 1\n")
    event = fx.event("succeeded", sha)
    body = json.dumps(event).encode()
    url = fx.server.url + fx.url

    def problem(r: httpx.Response, status: int, rule: str) -> None:
        assert r.status_code == status, r.text
        assert r.headers["content-type"].startswith("application/problem+json") and r.json()["rule"] == rule, r.text

    problem(httpx.post(url, content=body, timeout=30), 401, "flux.credentials-required")
    problem(fx.post_signed(event, key="0" * 64), 401, "flux.signature-invalid")
    problem(httpx.post(url, content=body + b"\n", headers={"X-Signature": sign(fx.key, body)}, timeout=30), 401,
            "flux.signature-invalid")
    problem(fx.post_as_agent(event, token="cvy_not-a-token"), 401, "auth.token-invalid")
    problem(httpx.post(url, json=event, headers={"Authorization": f"Bearer {fx.server.admin_token}"}, timeout=30),
            403, "flux.agent-only")
    other = fx.server.api().post("/api/v1/clusters", json={"name": unique("fo")[:20], "agent": "flux"}).json()
    problem(httpx.post(url, json=event, auth=(other["agent_user"], other["agent_token"]), timeout=30), 403,
            "flux.agent-only")
    elsewhere = event | {"metadata": {**event["metadata"], "event.toolkit.fluxcd.io/cluster": "elsewhere"}}
    problem(fx.post_as_agent(elsewhere), 422, "flux.cluster-mismatch")
    signed_garbage = b"{not json"
    problem(httpx.post(url, content=signed_garbage, headers={"X-Signature": sign(fx.key, signed_garbage)},
                       timeout=30), 400, "request.json")  # the request guard (core/limits.py) parses JSON bodies
    too_big = json.dumps({"padding": "x" * (300 * 1024)}).encode()  # valid JSON, so the request guard lets it by
    problem(httpx.post(url, content=too_big, timeout=30), 413, "flux.event-size")
    plain = fx.server.api().post("/api/v1/clusters", json={"name": unique("pl")[:20]}).json()
    problem(httpx.post(f"{fx.server.url}/api/v1/clusters/{plain['name']}/flux/events", content=body, timeout=30),
            409, "cluster.flux-agent")
    # rotating the key: the old signature stops working at once
    new_key = fx.server.cli("cluster", "flux-key", fx.cluster).stdout.strip()
    assert len(new_key) == 64 and new_key != fx.key
    problem(fx.post_signed(event), 401, "flux.signature-invalid")
    assert fx.post_signed(event, key=new_key).status_code == 202
    assert fx.state(sha)["state"] == "success"
