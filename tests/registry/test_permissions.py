"""Who may push and delete where: namespaces have owners, release tags are immutable for everyone,
and revoking a token or disabling a user reaches the registry's Basic and bearer credentials."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.registry.helpers import Registry, error_codes, make_image, unique
from tests.support.server import ServerHandle


@pytest.fixture()
def admin(server: ServerHandle) -> Iterator[Registry]:
    r = Registry(server)
    yield r
    r.close()


def person(server: ServerHandle, role: str) -> Registry:
    name = unique(role.replace("-", ""))
    return Registry(server, user=name, token=server.create_user(name, role))


def push_status(reg: Registry, repo: str) -> tuple[int, str]:
    """Status of a first blob upload to ``repo`` (where a push is authorised) and the refusing rule."""
    r = reg.http.post(f"/v2/{repo}/blobs/uploads/")
    rule = ""
    if r.status_code == 403:
        rule = r.json()["errors"][0]["detail"][0]["rule"]
    return r.status_code, rule


def test_namespaces_have_owners(server: ServerHandle, admin: Registry) -> None:
    dev, ops = person(server, "developer"), person(server, "cluster-admin")
    try:
        assert push_status(dev, f"users/{dev.user}/tool") == (202, "")
        assert push_status(dev, f"users/{ops.user}/tool") == (403, "registry.personal-namespace")
        assert push_status(dev, "apps/hello") == (403, "registry.apps-by-ci")
        assert push_status(dev, "cache/debian-python") == (403, "registry.shared-namespace")
        assert push_status(dev, unique("team") + "/svc") == (403, "registry.shared-namespace")
        assert push_status(ops, "cache/debian-python") == (202, "")
        assert push_status(ops, unique("team") + "/svc") == (202, "")
        assert push_status(ops, "apps/hello") == (403, "registry.apps-by-ci")
        assert push_status(admin, "apps/hello") == (202, "")
        # Deleting needs cluster-admin or above.
        repo = unique("team") + "/svc"
        admin.push_image(repo, "v1", make_image(layers=1))
        refused = dev.http.delete(f"/v2/{repo}/manifests/v1")
        assert refused.status_code == 403 and refused.json()["errors"][0]["detail"][0]["rule"] == "registry.delete-role"
        assert ops.http.delete(f"/v2/{repo}/manifests/v1").status_code == 202
    finally:
        dev.close()
        ops.close()


def test_release_tags_are_immutable_for_everyone(admin: Registry) -> None:
    repo = unique("apps/shop")
    first, second = make_image(layers=1), make_image(layers=1)
    admin.push_image(repo, "1.4.0-12", first)
    for b in second.blobs:
        admin.push_blob(repo, b)
    moved = admin.push_manifest(repo, "1.4.0-12", second.manifest)
    assert moved.status_code == 403 and error_codes(moved) == ["DENIED"]
    assert moved.json()["errors"][0]["detail"]["rule"] == "registry.release-tag-immutable"
    deleted = admin.http.delete(f"/v2/{repo}/manifests/1.4.0-12")
    assert deleted.status_code == 403
    # The same digest again is not a change; other tags stay mutable.
    assert admin.push_manifest(repo, "1.4.0-12", first.manifest).status_code == 201
    admin.push_image(repo, "latest", first)
    assert admin.push_manifest(repo, "latest", second.manifest).status_code == 201


def test_revocation_and_disabling_reach_basic_and_bearer_credentials(server: ServerHandle) -> None:
    name = unique("leaver")
    token = server.create_user(name, "developer")
    repo = f"users/{name}/tool"
    basic = Registry(server, user=name, token=token)
    bearer = httpx.get(f"{server.url}/v2/token", auth=(name, token)).json()["token"]
    with_bearer = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {bearer}"})
    try:
        assert push_status(basic, repo)[0] == 202
        assert with_bearer.post(f"/v2/{repo}/blobs/uploads/").status_code == 202
        tid = next(t["id"] for t in server.api().get(f"/api/v1/users/{name}/tokens").json() if not t["revoked_at"])
        assert server.api().delete(f"/api/v1/users/{name}/tokens/{tid}").status_code == 204
        # At once on this server (the cache is dropped when the revocation commits).
        assert basic.http.post(f"/v2/{repo}/blobs/uploads/").status_code == 401
        assert with_bearer.post(f"/v2/{repo}/blobs/uploads/").status_code == 401
        # Disabling reaches a password login's registry token too.
        other = unique("quitter")
        server.api().post("/api/v1/users", json={"name": other, "role": "developer", "password": "p4ssw0rd-long"})
        pw_bearer = httpx.get(f"{server.url}/v2/token", auth=(other, "p4ssw0rd-long")).json()["token"]
        c = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {pw_bearer}"})
        assert c.post(f"/v2/users/{other}/x/blobs/uploads/").status_code == 202
        assert server.api().patch(f"/api/v1/users/{other}", json={"disabled": True}).status_code == 200
        time.sleep(0.1)
        assert c.post(f"/v2/users/{other}/x/blobs/uploads/").status_code == 401
        c.close()
    finally:
        basic.close()
        with_bearer.close()
