"""Real clients against a live Conveyor: buildah and skopeo push, podman and oras (PyPI) pull.

Each tool gets private storage under the test's temporary directory, so nothing touches the
machine's image store. Digests are compared end to end.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import oras.client
import pytest

from conveyor.core.containers import buildah, podman, runroot_for, skopeo
from tests.registry.helpers import unique
from tests.support.server import ServerHandle

pytestmark = pytest.mark.slow


def run(argv: list[str], **kw: object) -> str:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=300, **kw)  # type: ignore[call-overload]
    assert p.returncode == 0, f"{' '.join(argv)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    return str(p.stdout)


class Tools:
    def __init__(self, root: Path, server: ServerHandle) -> None:
        self.root = root
        self.server = server
        self.host = f"127.0.0.1:{server.port}"
        self.creds = f"admin:{server.admin_token}"

    def _store(self, name: str) -> list[str]:
        # podman refuses run roots over 50 characters (a parallel worker's tmp path is longer): hashed, short
        return ["--root", str(self.root / name / "root"), "--runroot", runroot_for(str(self.root / name))]

    def buildah(self, *args: str) -> str:
        return run(buildah(*self._store("buildah"), *args))

    def podman(self, *args: str) -> str:
        return run(podman(*self._store("podman"), "--events-backend", "file", *args))

    def skopeo(self, *args: str) -> str:
        return run(skopeo(*args))


@pytest.fixture(scope="module")
def live(server_factory: Callable[..., ServerHandle], tmp_path_factory: pytest.TempPathFactory) -> Tools:
    return Tools(tmp_path_factory.mktemp("interop"), server_factory("sqlite"))


def _build(tools: Tools, tag: str) -> str:
    files = tools.root / unique("ctx")
    files.mkdir()
    (files / "hello.txt").write_text(f"hello from {tag}\n")
    (files / "data.bin").write_bytes(hashlib.sha256(tag.encode()).digest() * 4096)
    ctr = tools.buildah("from", "scratch").strip()
    tools.buildah("copy", ctr, str(files), "/app")
    tools.buildah("config", "--label", f"org.example.tag={tag}", "--env", "GREETING=hi", ctr)
    image = f"localhost/interop-{tag}:latest"
    tools.buildah("commit", "-q", ctr, image)
    tools.buildah("rm", ctr)
    return image


def _registry_digest(tools: Tools, ref: str) -> str:
    raw = subprocess.run(
        skopeo("inspect", "--raw", "--tls-verify=false", "--creds", tools.creds, f"docker://{tools.host}/{ref}"),
        capture_output=True, timeout=120, check=True,
    ).stdout
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _oras(tools: Tools) -> oras.client.OrasClient:
    client = oras.client.OrasClient(hostname=tools.host, insecure=True)
    client.auth.set_basic_auth("admin", tools.server.admin_token)
    return client


def _oras_pull_and_verify(tools: Tools, ref: str, out: Path) -> str:
    """Fetch the manifest and every blob with the oras client; verify each digest; return the manifest's."""
    client = _oras(tools)
    repo, _, tag = ref.rpartition(":")
    resp = client.do_request(
        f"http://{tools.host}/v2/{repo}/manifests/{tag}", "GET",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json, "
                           "application/vnd.docker.distribution.manifest.v2+json"})
    assert resp.status_code == 200, resp.text
    manifest = json.loads(resp.content)
    for desc in [manifest["config"], *manifest["layers"]]:
        path = client.download_blob(f"{tools.host}/{repo}", desc["digest"], str(out / desc["digest"].split(":")[1]))
        data = Path(path).read_bytes()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == desc["digest"]
        assert len(data) == desc["size"]
    return "sha256:" + hashlib.sha256(resp.content).hexdigest()


def test_buildah_push_then_podman_and_oras_pull(live: Tools, tmp_path: Path) -> None:
    image = _build(live, "bp")
    repo = unique("interop/buildah")
    live.buildah("push", "--tls-verify=false", "--creds", live.creds, image, f"docker://{live.host}/{repo}:v1")
    digest = _registry_digest(live, f"{repo}:v1")
    live.podman("pull", "-q", "--tls-verify=false", "--creds", live.creds, f"{live.host}/{repo}:v1")
    pulled = live.podman("image", "inspect", "--format", "{{.Digest}}", f"{live.host}/{repo}:v1").strip()
    assert pulled == digest
    assert _oras_pull_and_verify(live, f"{repo}:v1", tmp_path) == digest


def test_skopeo_push_from_an_oci_layout_then_podman_and_oras_pull(live: Tools, tmp_path: Path) -> None:
    image = _build(live, "sk")
    layout = tmp_path / "layout"
    live.buildah("push", "-q", image, f"oci:{layout}:v2")
    repo = unique("interop/skopeo")
    live.skopeo("copy", "-q", "--dest-tls-verify=false", "--dest-creds", live.creds,
                f"oci:{layout}:v2", f"docker://{live.host}/{repo}:v2")
    digest = _registry_digest(live, f"{repo}:v2")
    index = json.loads((layout / "index.json").read_text())
    assert index["manifests"][0]["digest"] == digest  # byte-exact: the layout's manifest is what was stored
    live.podman("pull", "-q", "--tls-verify=false", "--creds", live.creds, f"{live.host}/{repo}:v2")
    assert live.podman("image", "inspect", "--format", "{{.Digest}}", f"{live.host}/{repo}:v2").strip() == digest
    assert _oras_pull_and_verify(live, f"{repo}:v2", tmp_path) == digest
    # A Docker schema2 copy of the same image keeps its media type.
    live.skopeo("copy", "-q", "--format", "v2s2", "--dest-tls-verify=false", "--dest-creds", live.creds,
                f"oci:{layout}:v2", f"docker://{live.host}/{repo}:docker")
    raw = run(skopeo("inspect", "--raw", "--tls-verify=false", "--creds", live.creds,
                     f"docker://{live.host}/{repo}:docker"))
    assert json.loads(raw)["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    live.podman("pull", "-q", "--tls-verify=false", "--creds", live.creds, f"{live.host}/{repo}:docker")


def test_podman_login_and_oras_artifact_push_and_pull(live: Tools, tmp_path: Path) -> None:
    authfile = tmp_path / "auth.json"
    live.podman("login", "--tls-verify=false", "--authfile", str(authfile), "-u", "admin", "-p",
                live.server.admin_token, live.host)
    bad = subprocess.run(podman("login", "--tls-verify=false", "--authfile", str(authfile), "-u", "admin",
                                "-p", "wrong", live.host), capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0
    artifact = tmp_path / "report.txt"
    artifact.write_text("build report\n" * 1000)
    repo = unique("interop/oras")
    client = _oras(live)
    res = client.push(files=[str(artifact)], target=f"{live.host}/{repo}:r1", disable_path_validation=True)
    assert res.status_code == 201
    out = tmp_path / "pulled"
    files = client.pull(target=f"{live.host}/{repo}:r1", outdir=str(out))
    assert [Path(f).read_text() for f in files] == [artifact.read_text()]
