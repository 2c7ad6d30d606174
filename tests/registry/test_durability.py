"""Crashes, restarts, concurrent pushes, a full disk and abandoned uploads (real server processes)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.registry.helpers import Registry, error_codes, make_image, sha256, unique
from tests.support.server import ServerHandle


def _store_is_consistent(root: Path) -> int:
    """Every visible blob file's content matches the digest it is filed under; returns the count."""
    n = 0
    for f in (root / "blobs").rglob("*"):
        if f.is_file():
            algo = f.parent.parent.name
            assert f"{algo}:{hashlib.new(algo, f.read_bytes()).hexdigest()}" == f"{algo}:{f.name}", f
            n += 1
    return n


def test_killing_the_server_mid_upload_never_exposes_a_partial_blob(
    server_factory: Callable[..., ServerHandle],
) -> None:
    server = server_factory("sqlite")
    repo = unique("crash/app")
    data = os.urandom(8 * 1024 * 1024)
    digest = sha256(data)
    sent = threading.Event()

    def body() -> Iterator[bytes]:
        for i in range(0, len(data), 256 * 1024):
            yield data[i:i + 256 * 1024]
            if i >= 4 * 1024 * 1024:
                sent.set()
                time.sleep(0.2)

    def upload() -> None:
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(f"{server.url}/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=body(),
                       auth=("admin", server.admin_token), timeout=30)

    t = threading.Thread(target=upload)
    t.start()
    assert sent.wait(30)
    server.kill()
    t.join(30)
    server.start()
    reg = Registry(server)
    assert reg.blob_status(repo, digest) == 404
    root = server.data_dir / "registry"
    assert not (root / "blobs" / "sha256" / digest[7:9] / digest[7:]).exists()
    _store_is_consistent(root)
    # The same blob uploads fine afterwards.
    reg.push_blob(repo, data)
    assert reg.http.get(f"/v2/{repo}/blobs/{digest}").content == data
    reg.close()


def test_upload_sessions_survive_a_restart(server_factory: Callable[..., ServerHandle]) -> None:
    server = server_factory("sqlite")
    repo = unique("resume/app")
    data = os.urandom(3 * 1024 * 1024 + 17)
    reg = Registry(server)
    loc = reg.start_upload(repo)
    half = len(data) // 2
    r = reg.http.patch(loc, content=data[:half], headers={"Content-Range": f"0-{half - 1}"})
    assert r.status_code == 202
    reg.close()
    server.kill()  # no graceful shutdown
    server.start()
    reg = Registry(server)
    status = reg.http.get(loc)
    assert status.status_code == 204 and status.headers["range"] == f"0-{half - 1}"
    r = reg.http.patch(loc, content=data[half:], headers={"Content-Range": f"{half}-{len(data) - 1}"})
    assert r.status_code == 202
    done = reg.http.put(r.headers["location"], params={"digest": sha256(data)})
    assert done.status_code == 201, done.text
    assert reg.http.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data
    reg.close()


def test_two_clients_pushing_the_same_blob_at_once(server_factory: Callable[..., ServerHandle]) -> None:
    server = server_factory("sqlite")
    repo = unique("same/app")
    data = os.urandom(6 * 1024 * 1024)
    results: list[int] = []

    def push(i: int) -> None:
        with httpx.Client(base_url=server.url, auth=("admin", server.admin_token), timeout=120) as c:
            loc = c.post(f"/v2/{repo}-{i % 2}/blobs/uploads/").headers["location"]
            mid = len(data) // 3
            c.patch(loc, content=data[:mid], headers={"Content-Range": f"0-{mid - 1}"})
            r = c.put(loc, params={"digest": sha256(data)}, content=data[mid:],
                      headers={"Content-Range": f"{mid}-{len(data) - 1}"})
            results.append(r.status_code)

    threads = [threading.Thread(target=push, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == [201] * 6
    reg = Registry(server)
    for i in range(2):
        assert reg.http.get(f"/v2/{repo}-{i}/blobs/{sha256(data)}").content == data
    assert _store_is_consistent(server.data_dir / "registry") >= 1
    assert not any((server.data_dir / "registry" / "uploads").iterdir())
    reg.close()


def test_abandoned_uploads_are_removed(server_factory: Callable[..., ServerHandle]) -> None:
    server = server_factory("sqlite", CONVEYOR_REGISTRY_UPLOAD_TTL="1")
    repo = unique("abandon/app")
    reg = Registry(server)
    loc = reg.start_upload(repo)
    reg.http.patch(loc, content=os.urandom(1000))
    time.sleep(1.5)
    out = server.cli("registry", "gc").stdout
    upload_id = loc.rsplit("/", 1)[1]
    assert f"abandoned upload {upload_id}" in out
    assert reg.http.get(loc).status_code == 404
    assert not (server.data_dir / "registry" / "uploads" / upload_id).exists()
    reg.close()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mount") is None, reason="needs root to mount a tmpfs")
def test_a_full_disk_is_answered_and_leaves_the_store_consistent(
    server_factory: Callable[..., ServerHandle], tmp_path: Path
) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mnt)], check=True)
    server: ServerHandle | None = None
    try:
        server = server_factory("sqlite", CONVEYOR_REGISTRY_DIR=str(mnt / "registry"))
        repo = unique("full/app")
        reg = Registry(server)
        fits = os.urandom(5 * 1024 * 1024)
        reg.push_blob(repo, fits)
        too_big = os.urandom(9 * 1024 * 1024)
        r = reg.http.post(f"/v2/{repo}/blobs/uploads/", params={"digest": sha256(too_big)}, content=too_big)
        assert r.status_code == 507 and error_codes(r) == ["BLOB_UPLOAD_INVALID"]
        assert reg.blob_status(repo, sha256(too_big)) == 404
        loc = reg.start_upload(repo)
        r = reg.http.patch(loc, content=too_big)
        assert r.status_code == 507
        assert reg.http.get(loc).headers["range"] == "0-0"  # the failed chunk was not kept
        assert reg.http.delete(loc).status_code == 204
        assert reg.http.get(f"/v2/{repo}/blobs/{sha256(fits)}").content == fits
        assert _store_is_consistent(mnt / "registry") == 1
        # With room again, pushes work.
        small = os.urandom(1024 * 1024)
        reg.push_blob(repo, small)
        img = make_image(layers=1)
        reg.push_image(repo, "ok", img)
        reg.close()
    finally:
        if server is not None:
            server.stop()
        subprocess.run(["umount", "-l", str(mnt)], check=False)
