"""The agent verifies the signatures of a revision's images before applying it, on a real cluster.

The signed image is built, pushed and signed by a real CI run of the forge the agent reports to; the
unsigned and the foreign-signed ones are the same image copied into other ``apps/`` repositories (an
admin may push there), the latter signed in cosign's format with a key the installation never had.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from conveyor.agent import imagesig
from conveyor.core import containers
from tests.agent.helpers import commit_statuses, get_json, manifest, run_once, saved_status, write_config
from tests.forge.helpers import new_repo, unique
from tests.registry.helpers import Registry
from tests.support.clusters import ClusterHandle, deployment
from tests.support.server import ServerHandle
from tests.support.supply import ci_built_app


def copy_image(forge: ServerHandle, src: str, dest: str) -> None:
    p = subprocess.run(containers.skopeo("copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
                                         "--src-creds", f"admin:{forge.admin_token}", "--dest-creds",
                                         f"admin:{forge.admin_token}", f"docker://{src}", f"docker://{dest}"),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr


def sign_foreign(forge: ServerHandle, repo: str, digest: str) -> None:
    """A cosign-format signature over the right digest, by a key this installation does not trust."""
    private, public = imagesig.new_key()
    data = imagesig.payload(f"127.0.0.1:{forge.port}/{repo}", digest)
    layer = imagesig.SignatureLayer(data, imagesig.sign(private, data), imagesig.key_id(public))
    body, config = imagesig.signature_manifest([], layer)
    reg = Registry(forge)
    reg.push_blob(repo, data)
    reg.push_blob(repo, config)
    assert reg.push_manifest(repo, imagesig.signature_tag(digest), body).status_code == 201
    reg.close()


def test_unsigned_and_foreign_signed_images_are_refused_signed_ones_applied(
    cluster: ClusterHandle, forge: ServerHandle, tmp_path: Path
) -> None:
    run = ci_built_app(forge, tmp_path, unique("signed"))
    image = run["outputs"]["image"]
    digest = image["digest"]
    host, repo = image["repository"].split("/", 1)
    signed = f"{image['repository']}:{image['tags'][0]}@{digest}"
    unsigned_repo, foreign_repo = f"apps/{unique('unsigned')}", f"apps/{unique('foreign')}"
    copy_image(forge, f"{image['repository']}@{digest}", f"{host}/{unsigned_repo}:1")
    copy_image(forge, f"{image['repository']}@{digest}", f"{host}/{foreign_repo}:1")
    sign_foreign(forge, foreign_repo, digest)

    gitops = new_repo(forge, tmp_path, kind="gitops")
    ns, sync = unique("sig"), unique("s")
    cfg = write_config(tmp_path / "agent.yaml", forge, cluster, [{
        "name": sync, "url": f"{forge.url}/git/{gitops.repo}.git", "branch": "main", "path": "deploy",
        "target_namespace": ns, "retry_interval": "1s", "wait": True, "timeout": "5m"}])

    def deploy(*images: str) -> str:
        objs = [deployment(f"web{i}", ref) for i, ref in enumerate(images)]
        gitops.commit_file("deploy/app.yaml", manifest(*objs))
        code, out = gitops.push("main")
        assert code == 0, out
        return gitops.head()

    good = deploy(signed)
    p = run_once(cfg)
    assert p.returncode == 0, p.stdout + p.stderr
    st = saved_status(cfg, sync)
    assert [(s["image"], s["result"]) for s in st["signatures"]] == [(signed, "verified")]

    for bad_image, why in ((f"{host}/{unsigned_repo}:1", "unsigned"),
                           (f"{host}/{foreign_repo}:1@{digest}", "foreign-signature")):
        bad = deploy(signed, bad_image)  # the whole revision is refused, the signed image in it too
        p = run_once(cfg)
        assert p.returncode == 1, p.stdout + p.stderr
        st = saved_status(cfg, sync)
        assert st["state"] == "Stalled" and st["reason"] == "VerificationFailed", st
        assert (st["last_applied_revision"], st["last_attempted_revision"]) == (good, bad)
        status = commit_statuses(forge, gitops.repo, bad)[f"conveyor/deploy/{cluster.name}/{sync}"]
        assert status["state"] == "failure" and bad_image in status["description"] and why in status["description"]
        assert get_json(cluster, "deployment", "web1", "-n", ns) is None  # nothing of it was applied
        dep: dict[str, Any] = get_json(cluster, "deployment", "web0", "-n", ns)
        assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == signed

    # `verify: warn` applies it and says so; images of other registries or namespaces are not judged.
    cfg_warn = write_config(tmp_path / "warn.yaml", forge, cluster, [{
        "name": sync, "url": f"{forge.url}/git/{gitops.repo}.git", "branch": "main", "path": "deploy",
        "target_namespace": ns, "retry_interval": "1s", "verify": "warn"}])
    p = run_once(cfg_warn)
    assert p.returncode == 0, p.stdout + p.stderr
    assert get_json(cluster, "deployment", "web1", "-n", ns) is not None
    assert repo.startswith("apps/")
