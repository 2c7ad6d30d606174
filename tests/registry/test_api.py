"""The OCI Distribution API against a real server, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator

import httpx
import pytest

from tests.registry.helpers import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Registry,
    descriptor,
    error_codes,
    make_image,
    make_index,
    sha256,
    unique,
)
from tests.support.server import ServerHandle


@pytest.fixture()
def reg(server: ServerHandle) -> Iterator[Registry]:
    r = Registry(server)
    yield r
    r.close()


def test_base_endpoint_requires_credentials_and_names_the_api_version(server: ServerHandle) -> None:
    r = httpx.get(f"{server.url}/v2/")
    assert r.status_code == 401
    assert r.headers["docker-distribution-api-version"] == "registry/2.0"
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="') and "/v2/token" in challenge
    assert error_codes(r) == ["UNAUTHORIZED"]
    ok = httpx.get(f"{server.url}/v2/", auth=("admin", server.admin_token))
    assert ok.status_code == 200
    assert ok.headers["docker-distribution-api-version"] == "registry/2.0"
    bad = httpx.get(f"{server.url}/v2/", auth=("admin", "cvy_not-a-token"))
    assert bad.status_code == 401 and error_codes(bad) == ["UNAUTHORIZED"]


def test_token_flow_issues_a_bearer_token_that_authorises_pushes(server: ServerHandle) -> None:
    repo = unique("tokenflow/app")
    r = httpx.get(f"{server.url}/v2/token", params={"service": "conveyor", "scope": f"repository:{repo}:pull,push"},
                  auth=("admin", server.admin_token))
    assert r.status_code == 200
    token = r.json()["token"]
    assert r.json()["access_token"] == token and r.json()["expires_in"] > 0
    h = {"Authorization": f"Bearer {token}"}
    img = make_image(layers=1)
    data = img.layers[0]
    up = httpx.post(f"{server.url}/v2/{repo}/blobs/uploads/", params={"digest": sha256(data)}, content=data, headers=h)
    assert up.status_code == 201
    # OAuth2 password grant (containerd's way) works too; wrong secrets are refused.
    form = httpx.post(f"{server.url}/v2/token", data={
        "grant_type": "password", "username": "admin", "password": server.admin_token, "service": "conveyor"})
    assert form.status_code == 200 and form.json()["access_token"].startswith("cvr_")
    wrong = httpx.get(f"{server.url}/v2/token", auth=("admin", "cvy_wrong"))
    assert wrong.status_code == 401
    forged = httpx.get(f"{server.url}/v2/", headers={"Authorization": f"Bearer {token[:-3]}abc"})
    assert forged.status_code == 401


def test_monolithic_push_then_pull_roundtrip_is_byte_exact(reg: Registry) -> None:
    repo = unique("team/app")
    img = make_image(layers=3, size=100_000)
    digest = reg.push_image(repo, "v1", img)
    assert digest == img.digest
    m = reg.get_manifest(repo, "v1")
    assert m.status_code == 200
    assert m.content == img.manifest
    assert m.headers["content-type"] == OCI_MANIFEST
    assert m.headers["docker-content-digest"] == img.digest
    by_digest = reg.get_manifest(repo, img.digest)
    assert by_digest.content == img.manifest
    head = reg.http.head(f"/v2/{repo}/manifests/v1")
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(img.manifest)
    for blob in img.blobs:
        b = reg.http.get(f"/v2/{repo}/blobs/{sha256(blob)}")
        assert b.status_code == 200 and b.content == blob
        assert b.headers["docker-content-digest"] == sha256(blob)


def test_chunked_upload_refuses_out_of_order_chunks_with_416_and_recovers(reg: Registry) -> None:
    repo = unique("chunks/app")
    data = os.urandom(300_000)
    loc = reg.start_upload(repo)
    first = reg.http.patch(loc, content=data[:100_000], headers={"Content-Range": "0-99999"})
    assert first.status_code == 202 and first.headers["range"] == "0-99999"
    loc = first.headers["location"]
    skipped = reg.http.patch(loc, content=data[200_000:], headers={"Content-Range": "200000-299999"})
    assert skipped.status_code == 416
    assert skipped.headers["range"] == "0-99999"
    assert error_codes(skipped) == ["BLOB_UPLOAD_INVALID"]
    status = reg.http.get(loc)
    assert status.status_code == 204 and status.headers["range"] == "0-99999"
    mismatch = reg.http.patch(loc, content=data[100_000:150_000], headers={"Content-Range": "100000-199999"})
    assert mismatch.status_code == 416
    assert reg.http.get(loc).headers["range"] == "0-99999"  # the short chunk was not kept
    second = reg.http.patch(loc, content=data[100_000:200_000], headers={"Content-Range": "100000-199999"})
    assert second.status_code == 202
    done = reg.http.put(second.headers["location"], params={"digest": sha256(data)}, content=data[200_000:],
                        headers={"Content-Range": "200000-299999"})
    assert done.status_code == 201, done.text
    assert reg.http.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data


def test_streamed_upload_and_range_reads(reg: Registry) -> None:
    repo = unique("stream/app")
    data = os.urandom(5000)
    loc = reg.start_upload(repo)

    def gen() -> Iterator[bytes]:
        for i in range(0, len(data), 700):
            yield data[i:i + 700]

    p = reg.http.patch(loc, content=gen())
    assert p.status_code == 202
    done = reg.http.put(p.headers["location"], params={"digest": sha256(data)})
    assert done.status_code == 201
    url = f"/v2/{repo}/blobs/{sha256(data)}"
    part = reg.http.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == "bytes 100-199/5000"
    tail = reg.http.get(url, headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == data[-10:]
    assert reg.http.get(url, headers={"Range": "bytes=6000-"}).status_code == 416


def test_wrong_digest_is_refused_and_nothing_is_stored(reg: Registry) -> None:
    repo = unique("baddigest/app")
    data = os.urandom(4096)
    wrong = sha256(data + b"x")
    r = reg.http.post(f"/v2/{repo}/blobs/uploads/", params={"digest": wrong}, content=data)
    assert r.status_code == 400 and error_codes(r) == ["DIGEST_INVALID"]
    assert reg.blob_status(repo, wrong) == 404
    assert reg.blob_status(repo, sha256(data)) == 404
    loc = reg.start_upload(repo)
    p = reg.http.patch(loc, content=data)
    r = reg.http.put(p.headers["location"], params={"digest": wrong})
    assert r.status_code == 400 and error_codes(r) == ["DIGEST_INVALID"]
    assert reg.blob_status(repo, wrong) == 404
    # The failed session is gone; garbage digests are refused before anything is read.
    assert reg.http.get(p.headers["location"]).status_code == 404
    assert error_codes(reg.http.post(f"/v2/{repo}/blobs/uploads/", params={"digest": "sha256:zz"}, content=b"x")) == [
        "DIGEST_INVALID"]
    bad_manifest = make_image(layers=1)
    for b in bad_manifest.blobs:
        reg.push_blob(repo, b)
    r = reg.push_manifest(repo, sha256(b"other"), bad_manifest.manifest)
    assert r.status_code == 400 and error_codes(r) == ["DIGEST_INVALID"]
    assert reg.get_manifest(repo, bad_manifest.digest).status_code == 404


def test_manifest_referring_to_missing_blobs_is_refused(reg: Registry) -> None:
    repo = unique("missing/app")
    img = make_image(layers=2)
    reg.push_blob(repo, img.config)
    reg.push_blob(repo, img.layers[0])
    r = reg.push_manifest(repo, "v1", img.manifest)
    assert r.status_code == 400 and error_codes(r) == ["MANIFEST_BLOB_UNKNOWN"]
    assert r.json()["errors"][0]["detail"]["digest"] == sha256(img.layers[1])
    # A blob in another repository does not count unless it is mounted.
    other = unique("missing/other")
    reg.push_blob(other, img.layers[1])
    assert reg.push_manifest(repo, "v1", img.manifest).status_code == 400
    mount = reg.http.post(f"/v2/{repo}/blobs/uploads/", params={"mount": sha256(img.layers[1]), "from": other})
    assert mount.status_code == 201
    assert reg.push_manifest(repo, "v1", img.manifest).status_code == 201
    index = make_index([img, make_image(layers=1)])
    r = reg.push_manifest(repo, "multi", index, OCI_INDEX)
    assert r.status_code == 400 and error_codes(r) == ["MANIFEST_BLOB_UNKNOWN"]


def test_invalid_names_tags_and_manifests_answer_per_spec(reg: Registry) -> None:
    for bad in ("UPPER/case", "double//slash", "trailing-/x", "-lead/x", "a" * 300):
        r = reg.http.get(f"/v2/{bad}/tags/list")
        assert r.status_code in (400, 404), bad
        if r.status_code == 400:
            assert error_codes(r) == ["NAME_INVALID"]
    repo = unique("invalid/app")
    img = make_image(layers=1)
    for b in img.blobs:
        reg.push_blob(repo, b)
    r = reg.push_manifest(repo, "-bad-tag", img.manifest)
    assert r.status_code == 400 and error_codes(r) == ["MANIFEST_INVALID"]
    r = reg.push_manifest(repo, "v1", b"{not json")
    assert r.status_code == 400 and error_codes(r) == ["MANIFEST_INVALID"]
    r = reg.push_manifest(repo, "v1", json.dumps({"schemaVersion": 1}).encode())
    assert r.status_code == 400 and error_codes(r) == ["MANIFEST_INVALID"]
    r = reg.push_manifest(repo, "v1", img.manifest, DOCKER_MANIFEST)  # body says OCI
    assert r.status_code == 400 and error_codes(r) == ["MANIFEST_INVALID"]


def test_oversized_manifest_is_refused_with_413(reg: Registry) -> None:
    repo = unique("big/app")
    img = make_image(layers=1)
    for b in img.blobs:
        reg.push_blob(repo, b)
    doc = json.loads(img.manifest)
    doc["annotations"] = {"filler": "A" * (4 * 1024 * 1024)}
    r = reg.push_manifest(repo, "v1", json.dumps(doc).encode())
    assert r.status_code == 413
    assert error_codes(r) == ["MANIFEST_INVALID"]
    doc["annotations"] = {"filler": "A" * (3 * 1024 * 1024)}
    assert reg.push_manifest(repo, "v1", json.dumps(doc).encode()).status_code == 201


def test_docker_schema2_manifests_and_lists_are_served_with_their_media_types(reg: Registry) -> None:
    repo = unique("docker/app")
    images = [make_image(layers=1, docker=True) for _ in range(2)]
    for img in images:
        reg.push_image(repo, unique("arch"), img)
    index = make_index(images, docker=True)
    r = reg.push_manifest(repo, "multi", index, DOCKER_LIST)
    assert r.status_code == 201
    got = reg.get_manifest(repo, "multi")
    assert got.headers["content-type"] == DOCKER_LIST and got.content == index
    child = reg.get_manifest(repo, images[0].digest)
    assert child.headers["content-type"] == DOCKER_MANIFEST


def test_tag_list_pagination_with_link_header(reg: Registry) -> None:
    repo = unique("paging/app")
    img = make_image(layers=1)
    tags = sorted(f"t{i:02d}" for i in range(7))
    for t in tags:
        reg.push_image(repo, t, img)
    full = reg.http.get(f"/v2/{repo}/tags/list")
    assert full.json() == {"name": repo, "tags": tags}
    seen: list[str] = []
    url: str | None = f"/v2/{repo}/tags/list?n=3"
    while url:
        page = reg.http.get(url)
        seen += page.json()["tags"]
        link = page.headers.get("link")
        url = link.split(";")[0].strip("<>") if link else None
    assert seen == tags
    after = reg.http.get(f"/v2/{repo}/tags/list", params={"last": "t03"})
    assert after.json()["tags"] == tags[4:]
    assert reg.http.get(f"/v2/{unique('nope/x')}/tags/list").status_code == 404


def test_referrers_with_artifact_type_filter_and_oci_subject(reg: Registry) -> None:
    repo = unique("refs/app")
    subject = make_image(layers=1)
    reg.push_image(repo, "v1", subject)
    subj_desc = descriptor(OCI_MANIFEST, subject.manifest)
    sig = make_image(layers=1, subject=subj_desc, artifact_type="application/vnd.example.sig",
                     annotations={"who": "ci"})
    sbom = make_image(layers=1, subject=subj_desc, artifact_type="application/vnd.example.sbom")
    for art in (sig, sbom):
        for b in art.blobs:
            reg.push_blob(repo, b)
        r = reg.push_manifest(repo, art.digest, art.manifest)
        assert r.status_code == 201
        assert r.headers["oci-subject"] == subject.digest
    all_refs = reg.http.get(f"/v2/{repo}/referrers/{subject.digest}")
    assert all_refs.status_code == 200 and all_refs.headers["content-type"] == OCI_INDEX
    found = {d["digest"]: d for d in all_refs.json()["manifests"]}
    assert set(found) == {sig.digest, sbom.digest}
    assert found[sig.digest]["artifactType"] == "application/vnd.example.sig"
    assert found[sig.digest]["annotations"] == {"who": "ci"}
    only = reg.http.get(f"/v2/{repo}/referrers/{subject.digest}",
                        params={"artifactType": "application/vnd.example.sbom"})
    assert [d["digest"] for d in only.json()["manifests"]] == [sbom.digest]
    assert only.headers["oci-filters-applied"] == "artifactType"
    none = reg.http.get(f"/v2/{repo}/referrers/{sha256(b'nothing')}")
    assert none.status_code == 200 and none.json()["manifests"] == []
    assert reg.http.get(f"/v2/{repo}/referrers/sha256:nothex").status_code == 400


def test_delete_tags_manifests_and_blobs(reg: Registry) -> None:
    repo = unique("delete/app")
    img = make_image(layers=1)
    reg.push_image(repo, "a", img)
    reg.push_manifest(repo, "b", img.manifest)
    assert reg.http.delete(f"/v2/{repo}/manifests/a").status_code == 202
    assert reg.get_manifest(repo, "a").status_code == 404
    assert reg.get_manifest(repo, "b").status_code == 200
    assert reg.http.delete(f"/v2/{repo}/manifests/{img.digest}").status_code == 202
    gone = reg.get_manifest(repo, "b")
    assert gone.status_code == 404 and error_codes(gone) == ["MANIFEST_UNKNOWN"]
    assert reg.http.delete(f"/v2/{repo}/manifests/{img.digest}").status_code == 404
    layer = sha256(img.layers[0])
    assert reg.http.delete(f"/v2/{repo}/blobs/{layer}").status_code == 202
    assert reg.blob_status(repo, layer) == 404
    r = reg.http.get(f"/v2/{repo}/blobs/{layer}")
    assert error_codes(r) == ["BLOB_UNKNOWN"]


def test_pushes_and_deletes_reach_the_event_outbox(server: ServerHandle, reg: Registry) -> None:
    user_token = server.create_user(unique("pusher"), "developer")
    user = server.api(user_token).get("/api/v1/user").json()["name"]
    repo = unique(f"users/{user}/events")  # a developer writes their own namespace
    dev = Registry(server, user=user, token=user_token)
    img = make_image(layers=1)
    dev.push_image(repo, "v7", img)
    reg.http.delete(f"/v2/{repo}/manifests/v7")
    dev.close()
    audit = server.api().get("/api/v1/audit", params={"limit": 200}).json()
    push = [a for a in audit if a["action"] == "registry.push" and a["detail"].get("repository") == repo]
    assert push and push[0]["detail"] == {
        "repository": repo, "tag": "v7", "digest": img.digest, "pusher": user, "media_type": OCI_MANIFEST}
    dels = [a for a in audit if a["action"] == "registry.delete" and a["detail"].get("repository") == repo]
    assert dels and dels[0]["detail"]["tag"] == "v7" and dels[0]["detail"]["digest"] == img.digest
    assert dels[0]["actor"] == "admin"


def test_push_needs_write_credentials_and_errors_carry_a_challenge(server: ServerHandle) -> None:
    repo = unique("authz/app")
    anon = httpx.post(f"{server.url}/v2/{repo}/blobs/uploads/")
    assert anon.status_code == 401
    assert f'scope="repository:{repo}:pull,push"' in anon.headers["www-authenticate"]
    basic = base64.b64encode(b"admin:wrong-password").decode()
    r = httpx.post(f"{server.url}/v2/{repo}/blobs/uploads/", headers={"Authorization": f"Basic {basic}"})
    assert r.status_code == 401 and error_codes(r) == ["UNAUTHORIZED"]
    pull = httpx.get(f"{server.url}/v2/{repo}/tags/list")
    assert pull.status_code == 401


def test_blob_upload_cancel_and_unknown_sessions(reg: Registry) -> None:
    repo = unique("cancel/app")
    loc = reg.start_upload(repo)
    assert reg.http.delete(loc).status_code == 204
    r = reg.http.get(loc)
    assert r.status_code == 404 and error_codes(r) == ["BLOB_UPLOAD_UNKNOWN"]
    other = reg.start_upload(repo)
    wrong_repo = other.replace(repo, unique("cancel/else"))
    assert reg.http.patch(wrong_repo, content=b"x").status_code == 404
    assert reg.http.patch(f"/v2/{repo}/blobs/uploads/not-a-session", content=b"x").status_code == 404
