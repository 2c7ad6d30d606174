"""Tag locks, immutable tag patterns and anonymous pulls, driven through the CLI like an operator."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.registry.helpers import Registry, error_codes, make_image, sha256, unique
from tests.support.server import ServerHandle


@pytest.fixture()
def reg(server: ServerHandle) -> Iterator[Registry]:
    r = Registry(server)
    yield r
    r.close()


def test_locked_tag_cannot_be_overwritten_or_deleted_until_unlocked(server: ServerHandle, reg: Registry) -> None:
    repo = unique("deploy/web")
    first, second = make_image(layers=1), make_image(layers=1)
    reg.push_image(repo, "prod", first)
    out = server.cli("registry", "lock", f"{repo}:prod")
    assert first.digest in out.stdout
    for b in second.blobs:
        reg.push_blob(repo, b)
    r = reg.push_manifest(repo, "prod", second.manifest)
    assert r.status_code == 403 and error_codes(r) == ["DENIED"]
    assert "locked" in r.json()["errors"][0]["message"]
    assert reg.get_manifest(repo, "prod").content == first.manifest
    # Re-pushing the very same content is not a change and is accepted.
    assert reg.push_manifest(repo, "prod", first.manifest).status_code == 201
    assert reg.http.delete(f"/v2/{repo}/manifests/prod").status_code == 403
    assert reg.http.delete(f"/v2/{repo}/manifests/{first.digest}").status_code == 403
    locks = server.cli("registry", "locks").stdout
    assert repo in locks
    server.cli("registry", "unlock", f"{repo}:prod")
    assert reg.push_manifest(repo, "prod", second.manifest).status_code == 201
    assert reg.get_manifest(repo, "prod").content == second.manifest


def test_locking_needs_push_rights_and_unlocking_needs_repository_management(server: ServerHandle,
                                                                             reg: Registry) -> None:
    repo = unique("deploy/api")
    reg.push_image(repo, "prod", make_image(layers=1))
    name = unique("dev")
    dev = server.create_user(name, "developer")
    # A developer may not push to a shared namespace, so may not freeze its tags either...
    other = server.cli("registry", "lock", f"{repo}:prod", token=dev, check=False)
    assert other.returncode != 0 and "registry.lock-scope" in other.stderr
    # ...but locks a tag of their own namespace, and a cluster-admin's is needed to lift it.
    own = f"users/{name}/api"
    reg.push_image(own, "prod", make_image(layers=1))
    server.cli("registry", "lock", f"{own}:prod", token=dev)
    refused = server.cli("registry", "unlock", f"{own}:prod", token=dev, check=False)
    assert refused.returncode != 0 and "manage-repo" in refused.stderr
    server.cli("registry", "unlock", f"{own}:prod")
    server.cli("registry", "lock", f"{repo}:prod")
    missing = server.cli("registry", "lock", f"{repo}:nope", check=False)
    assert missing.returncode != 0 and "no tag" in missing.stderr
    server.cli("registry", "unlock", f"{repo}:prod")


def test_immutable_tag_patterns(server: ServerHandle, reg: Registry) -> None:
    repo = unique("immut/svc")
    server.cli("registry", "immutable", "add", repo, "v*")
    a, b = make_image(layers=1), make_image(layers=1)
    reg.push_image(repo, "v1.0", a)
    for blob in b.blobs:
        reg.push_blob(repo, blob)
    moved = reg.push_manifest(repo, "v1.0", b.manifest)
    assert moved.status_code == 403 and "immutable" in moved.json()["errors"][0]["message"]
    assert reg.http.delete(f"/v2/{repo}/manifests/v1.0").status_code == 403
    # Tags outside the pattern stay mutable, and a new matching tag can still be created.
    reg.push_image(repo, "latest", a)
    assert reg.push_manifest(repo, "latest", b.manifest).status_code == 201
    assert reg.push_manifest(repo, "v2.0", b.manifest).status_code == 201
    assert "v*" in server.cli("registry", "immutable", "list").stdout
    server.cli("registry", "immutable", "remove", repo, "v*")
    assert reg.push_manifest(repo, "v1.0", b.manifest).status_code == 201


def test_anonymous_pull_is_configurable_per_prefix(server: ServerHandle, reg: Registry) -> None:
    public = unique("public") + "/tool"
    private = unique("private") + "/tool"
    img = make_image(layers=1)
    reg.push_image(public, "v1", img)
    reg.push_image(private, "v1", img)
    anon = httpx.Client(base_url=server.url)
    assert anon.get(f"/v2/{public}/manifests/v1").status_code == 401
    server.cli("registry", "anonymous", "add", public.split("/")[0])
    r = anon.get(f"/v2/{public}/manifests/v1")
    assert r.status_code == 200 and r.content == img.manifest
    assert anon.get(f"/v2/{public}/blobs/{sha256(img.layers[0])}").status_code == 200
    denied = anon.get(f"/v2/{private}/manifests/v1")
    assert denied.status_code == 401
    assert f"repository:{private}:pull" in denied.headers["www-authenticate"]
    # Anonymous callers may pull but never push, even under a public prefix.
    assert anon.post(f"/v2/{public}/blobs/uploads/").status_code == 401
    # The token flow without credentials yields an anonymous token with the same rights.
    token = anon.get("/v2/token", params={"scope": f"repository:{public}:pull"}).json()["token"]
    h = {"Authorization": f"Bearer {token}"}
    assert anon.get(f"/v2/{public}/manifests/v1", headers=h).status_code == 200
    assert anon.get(f"/v2/{private}/manifests/v1", headers=h).status_code == 401
    server.cli("registry", "anonymous", "remove", public.split("/")[0])
    assert anon.get(f"/v2/{public}/manifests/v1").status_code == 401
    anon.close()

