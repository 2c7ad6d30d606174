"""Pull-through caching of other registries, and `conveyor registry import`."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.registry.helpers import (
    OCI_INDEX,
    Registry,
    error_codes,
    make_image,
    make_index,
    sha256,
    tar_directory,
    unique,
    write_oci_layout,
)
from tests.support.distribution import Distribution
from tests.support.server import ServerHandle


@pytest.fixture(scope="module")
def conveyor(server_factory: Callable[..., ServerHandle]) -> ServerHandle:
    return server_factory("sqlite")


@pytest.fixture()
def upstream() -> Iterator[Distribution]:
    d = Distribution().start()
    yield d
    d.cleanup()


class Plain:
    """An unauthenticated registry (CNCF Distribution) spoken to with httpx."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=60)

    def push_image(self, repo: str, tag: str, blobs: list[bytes], manifest: bytes, media_type: str) -> None:
        for b in blobs:
            r = self.http.post(f"/v2/{repo}/blobs/uploads/")
            assert r.status_code == 202
            loc = httpx.URL(r.headers["location"]).copy_merge_params({"digest": sha256(b)})
            assert self.http.put(loc, content=b).status_code == 201
        r = self.http.put(f"/v2/{repo}/manifests/{tag}", content=manifest, headers={"Content-Type": media_type})
        assert r.status_code == 201, r.text


def test_pull_through_cache_fetches_verifies_stores_and_survives_an_outage(
    conveyor: ServerHandle, upstream: Distribution
) -> None:
    img = make_image(layers=2, size=300_000)
    up = Plain(upstream.url)
    up.push_image("library/tool", "v1", img.blobs, img.manifest, img.media_type)
    prefix = unique("hub")
    conveyor.cli("registry", "upstream", "add", prefix, upstream.url)
    assert prefix in conveyor.cli("registry", "upstream", "list").stdout
    reg = Registry(conveyor)
    name = f"{prefix}/library/tool"
    m = reg.get_manifest(name, "v1")
    assert m.status_code == 200 and m.content == img.manifest
    assert m.headers["docker-content-digest"] == img.digest
    for b in img.blobs:
        got = reg.http.get(f"/v2/{name}/blobs/{sha256(b)}")
        assert got.status_code == 200 and got.content == b
    # The content is now stored locally (a file named by its verified digest).
    store = conveyor.data_dir / "registry" / "blobs" / "sha256"
    for b in img.blobs:
        d = sha256(b)[7:]
        assert hashlib.sha256((store / d[:2] / d).read_bytes()).hexdigest() == d
    upstream.stop()
    cached = reg.get_manifest(name, "v1")
    assert cached.status_code == 200 and cached.content == img.manifest
    assert reg.get_manifest(name, img.digest).content == img.manifest
    for b in img.blobs:
        assert reg.http.get(f"/v2/{name}/blobs/{sha256(b)}").content == b
    # Never fetched before and the upstream is down: a clean error, not a hang or a 500.
    missing = reg.get_manifest(name, "v2")
    assert missing.status_code == 502
    # A cache is read-only.
    denied = reg.http.post(f"/v2/{name}/blobs/uploads/")
    assert denied.status_code == 403 and error_codes(denied) == ["DENIED"]
    conveyor.cli("registry", "upstream", "remove", prefix)
    reg.close()


def test_upstream_credentials_and_content_published_later(
    conveyor: ServerHandle, server_factory: Callable[..., ServerHandle]
) -> None:
    other = server_factory("sqlite")
    source = Registry(other)
    img = make_image(layers=1)
    source.push_image("team/app", "stable", img)
    prefix = unique("mirror")
    conveyor.cli("registry", "upstream", "add", prefix, other.url, "--creds", f"admin:{other.admin_token}")
    reg = Registry(conveyor)
    assert reg.get_manifest(f"{prefix}/team/app", "stable").content == img.manifest
    wrong = unique("wrongcreds")
    conveyor.cli("registry", "upstream", "add", wrong, other.url, "--creds", "admin:cvy_wrong")
    assert reg.get_manifest(f"{wrong}/team/app", "stable").status_code == 502
    # Content published upstream later is fetched on demand.
    newer = make_image(layers=1)
    source.push_image("team/app", "stable", newer)
    assert reg.get_manifest(f"{prefix}/team/app", newer.digest).content == newer.manifest
    source.close()
    reg.close()


class _LyingUpstream(BaseHTTPRequestHandler):
    """Serves content that does not match the digests it is asked for."""

    def do_GET(self) -> None:  # noqa: N802
        body = b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}'
        if "/blobs/" in self.path:
            body = b"not the blob you asked for" * 100
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.oci.image.index.v1+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_cache_refuses_content_that_fails_verification(conveyor: ServerHandle) -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _LyingUpstream)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        prefix = unique("liar")
        conveyor.cli("registry", "upstream", "add", prefix, f"http://127.0.0.1:{httpd.server_address[1]}")
        reg = Registry(conveyor)
        want = sha256(b"something else")
        r = reg.get_manifest(f"{prefix}/x", want)
        assert r.status_code == 502 and error_codes(r) == ["MANIFEST_INVALID"]
        with pytest.raises(httpx.HTTPError):
            # The body streams through but the connection is cut when verification fails.
            reg.http.get(f"/v2/{prefix}/x/blobs/{want}").raise_for_status()
        d = want[7:]
        assert not (conveyor.data_dir / "registry" / "blobs" / "sha256" / d[:2] / d).exists()
        reg.close()
    finally:
        httpd.shutdown()


class _InternalService(BaseHTTPRequestHandler):
    """An internal service someone configured as an upstream: it answers with a secret page."""

    def do_GET(self) -> None:  # noqa: N802
        body = b"internal admin console: token=hunter2"
        self.send_response(500)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET  # noqa: N815

    def log_message(self, *args: object) -> None:
        pass


def test_upstream_errors_show_their_body_to_admins_only_and_loopback_needs_the_allow_list(
    conveyor: ServerHandle,
) -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _InternalService)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    prefix = unique("internal")
    dev_name = unique("dana")
    dana = conveyor.create_user(dev_name, "developer")
    try:
        conveyor.allow_outbound()
        refused = conveyor.api().post("/api/v1/registry/upstreams", json={"prefix": prefix, "url": url})
        assert refused.status_code == 400 and refused.json()["rule"] == "outbound.address", refused.text
        conveyor.allow_outbound("127.0.0.1")
        conveyor.cli("registry", "upstream", "add", prefix, url)
        want = sha256(b"anything")
        dev = Registry(conveyor, user=dev_name, token=dana)
        for r in (dev.get_manifest(f"{prefix}/x", "v1"), dev.http.get(f"/v2/{prefix}/x/blobs/{want}")):
            assert r.status_code == 502 and "HTTP 500" in r.text and "hunter2" not in r.text, r.text
        admin = Registry(conveyor)
        r = admin.get_manifest(f"{prefix}/x", "v1")
        assert r.status_code == 502 and "hunter2" in r.text
        # Allowed when added, refused when fetched: the policy is applied at every connection.
        conveyor.allow_outbound()
        r = dev.get_manifest(f"{prefix}/x", "v1")
        assert r.status_code == 502 and "outbound.address" in r.text and "hunter2" not in r.text, r.text
        dev.close()
        admin.close()
    finally:
        conveyor.allow_outbound("127.0.0.1")
        conveyor.cli("registry", "upstream", "remove", prefix, check=False)
        httpd.shutdown()


def test_import_from_a_registry_an_oci_layout_and_an_archive(
    conveyor: ServerHandle, upstream: Distribution, tmp_path: Path
) -> None:
    reg = Registry(conveyor)
    up = Plain(upstream.url)
    children = [make_image(layers=1) for _ in range(2)]
    for c in children:
        up.push_image("multi/app", c.digest, c.blobs, c.manifest, c.media_type)
    index = make_index(children)
    up.http.put("/v2/multi/app/manifests/v3", content=index, headers={"Content-Type": OCI_INDEX})

    out = conveyor.cli("registry", "import", "--src-insecure", f"docker://{upstream.host}/multi/app:v3",
                       "imported/multi:v3").stdout
    assert sha256(index) in out
    got = reg.get_manifest("imported/multi", "v3")
    assert got.content == index and got.headers["content-type"] == OCI_INDEX
    for c in children:
        assert reg.get_manifest("imported/multi", c.digest).content == c.manifest
        for b in c.blobs:
            assert reg.http.get(f"/v2/imported/multi/blobs/{sha256(b)}").content == b

    img = make_image(layers=2)
    layout = write_oci_layout(tmp_path / "layout", img, ref="1.0")
    conveyor.cli("registry", "import", f"oci:{layout}:1.0", "imported/layout:1.0")
    assert reg.get_manifest("imported/layout", "1.0").content == img.manifest
    archive = tar_directory(layout, tmp_path / "image.tar")
    conveyor.cli("registry", "import", f"oci-archive:{archive}", "imported/archive:latest")
    assert reg.get_manifest("imported/archive", "latest").content == img.manifest
    for b in img.blobs:
        assert reg.http.get(f"/v2/imported/archive/blobs/{sha256(b)}").content == b

    # A corrupt layout is refused and nothing is tagged.
    (layout / "blobs" / "sha256" / sha256(img.layers[0])[7:]).write_bytes(b"corrupted")
    bad = conveyor.cli("registry", "import", f"oci:{layout}:1.0", "imported/corrupt:1.0", check=False)
    assert bad.returncode != 0
    assert reg.get_manifest("imported/corrupt", "1.0").status_code == 404
    listing = reg.http.get("/v2/imported/corrupt/tags/list")
    assert listing.status_code == 404 or listing.json()["tags"] == []
    reg.close()
