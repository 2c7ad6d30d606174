"""Signed images, lineage, SBOMs, security rebuilds and cache refresh, against real servers.

CI runs build real images with buildah (on the tests' small shell image), the real cosign (built from its
Go module into ~/.cache/conveyor/cosign) verifies a Conveyor signature, and a real CNCF Distribution is
the upstream that changes and goes down.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.agent import imagesig
from tests.pipelines.helpers import runs
from tests.registry.helpers import Registry, make_image, unique
from tests.registry.test_cache_and_import import Plain
from tests.support.distribution import Distribution
from tests.support.server import ServerHandle
from tests.support.supply import ci_built_app, push_base

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., ServerHandle]) -> ServerHandle:
    return server_factory("sqlite")


@pytest.fixture(scope="module")
def built(server: ServerHandle, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Two apps built by CI: one on cache/shell:1, one on cache/other:1."""
    push_base(server, "cache/other:1")
    tmp = tmp_path_factory.mktemp("apps")
    return {"shell": ci_built_app(server, tmp, unique("sca")), "other": ci_built_app(server, tmp, unique("scb"),
                                                                                    base="cache/other:1")}


def trusted_keys(server: ServerHandle) -> list[imagesig.TrustedKey]:
    return [imagesig.TrustedKey(k["key_id"], k["public_key"].encode(), k["state"])
            for k in server.api().get("/api/v1/registry/signing-keys").json() if k["state"] != "revoked"]


def signature_layers(reg: Registry, repo: str, digest: str) -> list[tuple[bytes, str]]:
    m = reg.get_manifest(repo, imagesig.signature_tag(digest))
    assert m.status_code == 200, m.text
    out = []
    for layer in m.json()["layers"]:
        data = reg.http.get(f"/v2/{repo}/blobs/{layer['digest']}").content
        out.append((data, layer["annotations"][imagesig.SIGNATURE_ANNOTATION]))
    return out


@pytest.fixture(scope="module")
def cosign() -> str:
    """The real cosign, built from its Go module (scripts/build-cosign.sh; cached): a slow fixture."""
    p = subprocess.run([str(ROOT / "scripts/build-cosign.sh")], capture_output=True, text=True, timeout=3000)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout.strip()


def test_ci_signs_its_image_records_its_base_and_attaches_an_sbom(
    server: ServerHandle, built: dict[str, dict[str, Any]], cosign: str, tmp_path: Path
) -> None:
    image = built["shell"]["outputs"]["image"]
    repo, digest = image["repository"].split("/", 1)[1], image["digest"]
    reg = Registry(server)
    # Lineage: buildah's annotations on the image, recorded by the registry.
    notes = reg.get_manifest(repo, digest).json()["annotations"]
    base_digest = reg.get_manifest("cache/shell", "1").headers["docker-content-digest"]
    assert notes["org.opencontainers.image.base.name"].endswith("/cache/shell:1")
    assert notes["org.opencontainers.image.base.digest"].startswith("sha256:")
    lineage = server.api().get("/api/v1/registry/lineage", params={"image": f"{repo}@{digest}"}).json()
    assert lineage["built_on"][0]["base"]["digest"] == base_digest
    assert [(e["base"]["repository"], e["base"]["tag"], e["base"]["outdated"]) for e in lineage["built_on"]] == [
        ("cache/shell", "1", False)]
    derived = server.api().get("/api/v1/registry/lineage", params={"image": "cache/shell:1"}).json()
    assert repo in [e["repository"] for e in derived["built_from_it"]]
    assert "cache/shell:1" in server.cli("registry", "lineage", repo).stdout

    # The signature, in cosign's tag scheme, by the installation's active key.
    verdict = imagesig.check_layers(repo, digest, signature_layers(reg, repo, digest), trusted_keys(server))
    assert verdict.ok and verdict.reason == "verified", verdict

    # The SBOM referrer: Debian and Python packages of the image.
    refs = reg.http.get(f"/v2/{repo}/referrers/{digest}").json()["manifests"]
    sboms = [r for r in refs if r.get("artifactType") == "application/vnd.cyclonedx+json"]
    assert len(sboms) == 1, refs
    layer = reg.get_manifest(repo, sboms[0]["digest"]).json()["layers"][0]
    doc = json.loads(reg.http.get(f"/v2/{repo}/blobs/{layer['digest']}").content)
    purls = {c["purl"] for c in doc["components"]}
    assert "pkg:deb/debian/demo-lib@1.2-3?arch=amd64" in purls and "pkg:pypi/demo-pkg@2.0.1" in purls
    assert not any("removed-lib" in p for p in purls)  # deinstalled: not in the image's inventory

    # The real cosign accepts the signature with the installation's public key, and refuses another key.
    binary = cosign
    pub = tmp_path / "cosign.pub"
    pub.write_text(server.cli("registry", "signing-key", "public").stdout)
    docker = tmp_path / "docker"
    docker.mkdir()
    auth = base64.b64encode(f"admin:{server.admin_token}".encode()).decode()
    (docker / "config.json").write_text(json.dumps({"auths": {f"127.0.0.1:{server.port}": {"auth": auth}}}))
    env = dict(os.environ, DOCKER_CONFIG=str(docker), HOME=str(tmp_path), TUF_ROOT=str(tmp_path / "tuf"))
    ref = f"127.0.0.1:{server.port}/{repo}@{digest}"
    argv = [binary, "verify", "--key", str(pub), "--insecure-ignore-tlog=true", "--allow-http-registry=true",
            "--offline=true", ref]
    ok = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert ok.returncode == 0, ok.stderr
    claims = json.loads(ok.stdout.strip().splitlines()[-1])
    assert claims[0]["critical"]["image"]["docker-manifest-digest"] == digest
    other = tmp_path / "other.pub"
    other.write_bytes(imagesig.new_key()[1])
    refused = subprocess.run([*argv[:3], str(other), *argv[4:]], capture_output=True, text=True, timeout=300, env=env)
    assert refused.returncode != 0
    reg.close()


def test_a_new_base_digest_rebuilds_exactly_the_apps_built_on_it(
    server: ServerHandle, built: dict[str, dict[str, Any]]
) -> None:
    a, b = built["shell"], built["other"]
    before_b = len(runs(server, b["repo"]))
    reg = Registry(server)
    old_base = reg.get_manifest("cache/shell", "1").headers["docker-content-digest"]
    new_base = push_base(server, "cache/shell:1", extra_file="security-fix")
    assert new_base != old_base
    # The old digest is kept (history, still pullable, safe from GC).
    assert [h["digest"] for h in server.api().get("/api/v1/registry/tag-history", params={
        "repository": "cache/shell", "tag": "1"}).json()][:1] == [old_base]
    assert reg.get_manifest("cache/shell", old_base).status_code == 200
    gc = server.api().post("/api/v1/registry/gc", json={"dry_run": True, "grace_seconds": 0}).json()
    assert old_base not in [m["digest"] for m in gc["manifests"]]

    rebuild = _wait_rebuild(server, a)
    assert rebuild["trigger"] == "base-image" and rebuild["security_update"]["to"] == new_base
    assert rebuild["sha"] == a["sha"] and rebuild["deployable"]
    assert rebuild["state"] == "success", rebuild
    new = rebuild["outputs"]["image"]
    repo = new["repository"].split("/", 1)[1]
    assert new["digest"] != a["outputs"]["image"]["digest"]
    assert a["sha"] not in new["tags"]  # the commit's tag still names the first build (release tags never move)
    status = server.api().get(f"/api/v1/repos/{a['repo']}/statuses/{a['sha']}").json()["statuses"]
    assert any(s["context"] == "conveyor/ci" and "security update" in s["description"] for s in status)
    lineage = server.api().get("/api/v1/registry/lineage", params={"image": "cache/shell:1"}).json()
    by_digest = {e["digest"]: e["base"]["outdated"] for e in lineage["built_from_it"]}
    assert by_digest[new["digest"]] is False and by_digest[a["outputs"]["image"]["digest"]] is True
    verdict = imagesig.check_layers(repo, new["digest"], signature_layers(reg, repo, new["digest"]),
                                    trusted_keys(server))
    assert verdict.ok
    # The app built on another base is not rebuilt.
    time.sleep(2)
    assert len(runs(server, b["repo"])) == before_b
    reg.close()


def _wait_rebuild(server: ServerHandle, app: dict[str, Any]) -> dict[str, Any]:
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        found = [r for r in runs(server, app["repo"]) if r["trigger"] == "base-image"]
        if found and found[0]["state"] in ("success", "failure", "error", "cancelled"):
            return dict(server.api().get(f"/api/v1/runs/{found[0]['id']}").json())
        time.sleep(0.5)
    raise AssertionError("no rebuild finished")


def audit_of(server: ServerHandle, action: str) -> list[dict[str, Any]]:
    return [e for e in server.api().get("/api/v1/audit", params={"limit": 1000}).json() if e["action"] == action]


@pytest.fixture()
def upstream() -> Iterator[Distribution]:
    d = Distribution().start()
    yield d
    d.cleanup()


def test_refresh_follows_an_upstream_that_changes_and_survives_one_that_is_down(
    server: ServerHandle, upstream: Distribution
) -> None:
    up = Plain(upstream.url)
    v1, v2 = make_image(layers=1), make_image(layers=1)
    up.push_image("lib/base", "1", v1.blobs, v1.manifest, v1.media_type)
    prefix = unique("hub")
    server.cli("registry", "upstream", "add", prefix, upstream.url)
    reg = Registry(server)
    name = f"{prefix}/lib/base"
    assert reg.get_manifest(name, "1").headers["docker-content-digest"] == v1.digest  # cached by a pull
    added = server.cli("registry", "refresh", "upstream", prefix, "--every", "1h", "--tags", "1").stdout
    policy = added.split()[2].rstrip(":")
    # Nothing changed upstream: nothing moves.
    assert "moved 0" in server.cli("registry", "refresh", "run", policy).stdout
    up.push_image("lib/base", "1", v2.blobs, v2.manifest, v2.media_type)
    out = server.cli("registry", "refresh", "run", policy).stdout
    assert f"{name}:1 {v1.digest} -> {v2.digest}" in out
    history = server.api().get("/api/v1/registry/tag-history", params={"repository": name, "tag": "1"}).json()
    assert history[0]["digest"] == v1.digest and history[0]["replaced_by"] == v2.digest
    assert any(e["target"] == f"{name}:1" for e in audit_of(server, "registry.cache.refreshed"))

    upstream.stop()
    # Every blob of the new image was fetched by the refresh: it serves with the upstream down.
    for blob in v2.blobs:
        import hashlib

        assert reg.http.get(f"/v2/{name}/blobs/sha256:{hashlib.sha256(blob).hexdigest()}").content == blob
    failed = server.cli("registry", "refresh", "run", policy, check=False)
    assert failed.returncode != 0 and "cached digests keep serving" in failed.stderr
    listing = server.cli("registry", "refresh", "list").stdout
    assert "FAILING since" in listing
    assert reg.get_manifest(name, "1").headers["docker-content-digest"] == v2.digest
    assert reg.get_manifest(name, v1.digest).status_code == 200  # the old one is kept
    assert any(e["target"] == prefix for e in audit_of(server, "registry.cache.refresh_failed"))

    upstream.start()
    assert server.cli("registry", "refresh", "run", policy).returncode == 0
    assert "FAILING" not in server.cli("registry", "refresh", "list").stdout
    reg.close()


def test_an_import_with_a_refresh_policy_follows_its_source(server: ServerHandle, upstream: Distribution) -> None:
    up = Plain(upstream.url)
    v1, v2 = make_image(layers=1), make_image(layers=1)
    up.push_image("vendor/tool", "stable", v1.blobs, v1.manifest, v1.media_type)
    dest = unique("imported/tool")
    server.cli("registry", "import", "--src-insecure", "--refresh-every", "1h",
               f"docker://{upstream.host}/vendor/tool:stable", f"{dest}:stable")
    policy = next(p for p in server.api().get("/api/v1/registry/refresh-policies").json() if p["target"] == dest)
    assert policy["kind"] == "import" and policy["tags"] == ["stable"]
    up.push_image("vendor/tool", "stable", v2.blobs, v2.manifest, v2.media_type)
    r = server.api().post(f"/api/v1/registry/refresh-policies/{policy['id']}/run").json()
    assert r["moved"] == [{"repository": dest, "tag": "stable", "old_digest": v1.digest, "new_digest": v2.digest}]
    reg = Registry(server)
    assert reg.get_manifest(dest, "stable").headers["docker-content-digest"] == v2.digest
    assert reg.get_manifest(dest, v1.digest).status_code == 200
    bad = server.api().post("/api/v1/registry/refresh-policies", json={
        "kind": "import", "target": "x/y", "source": "oci:/tmp/x", "interval_seconds": 3600})
    assert bad.status_code == 400 and bad.json()["rule"] == "registry.refresh-source"
    reg.close()
