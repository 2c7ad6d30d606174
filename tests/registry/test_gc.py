"""Garbage collection through `conveyor registry gc`, and its safety while pushes go on."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.registry.helpers import OCI_INDEX, Registry, descriptor, error_codes, make_image, make_index, sha256, unique
from tests.support.server import ServerHandle


@pytest.fixture()
def reg(server: ServerHandle) -> Iterator[Registry]:
    r = Registry(server)
    yield r
    r.close()


def _freed_bytes(out: str) -> int:
    m = re.search(r"\((\d+) bytes\)", out)
    assert m, out
    return int(m.group(1))


def test_gc_removes_unreferenced_content_and_dry_run_only_reports(server: ServerHandle, reg: Registry) -> None:
    repo = unique("gc/app")
    kept, dropped = make_image(layers=2), make_image(layers=2)
    reg.push_image(repo, "kept", kept)
    reg.push_image(repo, "dropped", dropped)
    assert reg.http.delete(f"/v2/{repo}/manifests/dropped").status_code == 202
    stray = os.urandom(3000)
    reg.push_blob(repo, stray)
    index_child = make_image(layers=1)
    reg.push_image(repo, "child-tmp", index_child)
    reg.push_manifest(repo, "multi", make_index([index_child]), OCI_INDEX)
    reg.http.delete(f"/v2/{repo}/manifests/child-tmp")  # still referenced by the tagged index

    # Nothing is old enough under the default grace period.
    assert _freed_bytes(server.cli("registry", "gc").stdout) == 0

    dry = server.cli("registry", "gc", "--dry-run", "--grace", "0").stdout
    assert f"manifest {repo}@{dropped.digest}" in dry
    assert f"blob {sha256(stray)}" in dry
    assert "would free" in dry
    assert reg.get_manifest(repo, dropped.digest).status_code == 200
    assert reg.blob_status(repo, sha256(stray)) == 200

    out = server.cli("registry", "gc", "--grace", "0").stdout
    assert f"manifest {repo}@{dropped.digest}" in out and "freed" in out
    expected = len(dropped.manifest) + sum(len(b) for b in dropped.blobs) + len(stray)
    assert _freed_bytes(out) >= expected
    assert reg.get_manifest(repo, dropped.digest).status_code == 404
    for b in [*dropped.blobs, stray]:
        assert reg.blob_status(repo, sha256(b)) == 404
    for b in kept.blobs + index_child.blobs:
        assert reg.http.get(f"/v2/{repo}/blobs/{sha256(b)}").content == b
    assert reg.get_manifest(repo, "kept").content == kept.manifest
    assert reg.get_manifest(repo, index_child.digest).status_code == 200
    # A second run finds nothing more of this repository's.
    again = server.cli("registry", "gc", "--grace", "0").stdout
    assert repo not in again


def test_gc_keeps_referrers_of_live_images(server: ServerHandle, reg: Registry) -> None:
    repo = unique("gc/signed")
    img = make_image(layers=1)
    reg.push_image(repo, "v1", img)
    sig = make_image(layers=1, subject=descriptor(img.media_type, img.manifest),
                     artifact_type="application/vnd.example.sig")
    for b in sig.blobs:
        reg.push_blob(repo, b)
    assert reg.push_manifest(repo, sig.digest, sig.manifest).status_code == 201
    server.cli("registry", "gc", "--grace", "0")
    assert reg.get_manifest(repo, sig.digest).status_code == 200
    reg.http.delete(f"/v2/{repo}/manifests/v1")
    out = server.cli("registry", "gc", "--grace", "0").stdout
    assert sig.digest in out and img.digest in out
    assert reg.get_manifest(repo, sig.digest).status_code == 404


def test_gc_running_concurrently_with_pushes_never_breaks_a_push(
    server: ServerHandle, reg: Registry
) -> None:
    """The race: blobs uploaded or referenced while the collector runs.

    Strays (unreferenced, uploaded before the run) are what the collector deletes. While it is
    demonstrably deleting them, other clients upload fresh blobs, push images made of fresh
    blobs, and push images whose layer *is* a stray. Afterwards: every fresh blob is still
    there, every accepted push is complete, and a push that lost its race with the collector
    was refused with MANIFEST_BLOB_UNKNOWN rather than accepted with a hole.
    """
    strays_repo = unique("gcrace/strays")
    strays = [os.urandom(64) + i.to_bytes(4, "big") for i in range(1200)]
    with httpx.Client(base_url=server.url, auth=("admin", server.admin_token), timeout=60) as c:
        for s in strays:
            r = c.post(f"/v2/{strays_repo}/blobs/uploads/", params={"digest": sha256(s)}, content=s)
            assert r.status_code == 201
    report: dict[str, object] = {}

    def run_gc() -> None:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.admin_token}"},
                          timeout=600) as c:
            r = c.post("/api/v1/registry/gc", json={"grace_seconds": 0})
            report.update(r.json())

    gc_thread = threading.Thread(target=run_gc)
    gc_thread.start()
    # Wait until the collector is visibly deleting strays (oldest first): from here on it runs.
    deadline = time.time() + 60
    while time.time() < deadline and reg.blob_status(strays_repo, sha256(strays[0])) == 200:
        time.sleep(0.005)
    repo = unique("gcrace/app")
    fresh_blobs: list[bytes] = []
    pushed: list[tuple[str, list[bytes]]] = []
    refused = 0
    during = 0
    i = 0
    while gc_thread.is_alive():
        lone = os.urandom(128)
        reg.push_blob(repo, lone)
        fresh_blobs.append(lone)
        img = make_image(layers=1, size=256)
        reg.push_image(repo, f"fresh{i}", img)
        pushed.append((f"fresh{i}", img.blobs))
        # An image whose layer is a stray the collector is about to delete (newest go last).
        stray = strays[-1 - (i % len(strays))]
        cfg = json.dumps({"i": i, "os": "linux"}).encode()
        reg.push_blob(repo, cfg)
        mount = reg.http.post(f"/v2/{repo}/blobs/uploads/", params={"mount": sha256(stray), "from": strays_repo})
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": descriptor("application/vnd.oci.image.config.v1+json", cfg),
            "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", stray)],
        }).encode()
        r = reg.push_manifest(repo, f"stray{i}", manifest)
        if r.status_code == 201:
            assert mount.status_code == 201
            pushed.append((f"stray{i}", [cfg, stray]))
        else:
            assert r.status_code == 400 and error_codes(r) == ["MANIFEST_BLOB_UNKNOWN"]
            refused += 1
        i += 1
        during += 1 if gc_thread.is_alive() else 0
    gc_thread.join()
    assert during >= 2, "the collector finished before any push overlapped it; the race was not exercised"
    assert len(report["blobs"]) >= len(strays) - len(pushed)  # type: ignore[arg-type]
    for lone in fresh_blobs:
        assert reg.blob_status(repo, sha256(lone)) == 200
    for tag, blobs in pushed:
        assert reg.get_manifest(repo, tag).status_code == 200
        for b in blobs:
            assert reg.http.get(f"/v2/{repo}/blobs/{sha256(b)}").content == b
    # Another collection run changes nothing that was pushed.
    server.cli("registry", "gc", "--grace", "0")
    for _tag, blobs in pushed:
        for b in blobs:
            assert reg.blob_status(repo, sha256(b)) == 200
