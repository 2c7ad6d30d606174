"""Images built, pushed and signed by a real CI run, for the supply-chain tests (registry and agent).

An app repository with a protected main gets its Dockerfile and pipeline through a merged PR, so its
CI run is deployable: the publish step pushes ``apps/<name>``, attaches the SBOM and has the server sign
it. The image is a static busybox on the tests' shell image (``cache/shell:1``, or another base), with
a dpkg status file and a Python dist-info directory so the SBOM has something of both kinds to find.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from conveyor.core import containers
from tests.forge.helpers import WorkingCopy, new_repo
from tests.pipelines.helpers import wait_for_run
from tests.support.images import SHELL_IMAGE, ensure_shell_image, shell_archive
from tests.support.server import ServerHandle

DPKG_STATUS = """Package: demo-lib
Status: install ok installed
Architecture: amd64
Version: 1.2-3

Package: removed-lib
Status: deinstall ok config-files
Architecture: amd64
Version: 0.1

"""
DOCKERFILE = """ARG BASE_IMAGE
FROM ${BASE_IMAGE}
COPY status /var/lib/dpkg/status
COPY demo_pkg-2.0.1.dist-info /usr/lib/python3/dist-packages/demo_pkg-2.0.1.dist-info
COPY www /www
ENTRYPOINT ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
"""


def push_base(server: ServerHandle, repo_tag: str, extra_file: str | None = None) -> str:
    """Push the shell image (or a variant with one more file: a new digest) as ``repo_tag``; its digest."""
    ensure_shell_image(server)
    source = f"oci-archive:{shell_archive()}"
    if extra_file is not None:
        ctr = subprocess.run(containers.buildah("from", source), capture_output=True, text=True, check=True,
                             timeout=300).stdout.strip()
        try:
            subprocess.run(containers.buildah("run", ctr, "--", "/bin/sh", "-c", f"echo {extra_file} > /{extra_file}"),
                           check=True, capture_output=True, timeout=300)
            out = Path(subprocess.run(["mktemp", "-d"], capture_output=True, text=True).stdout.strip()) / "b.tar"
            subprocess.run(containers.buildah("commit", "--rm", ctr, f"oci-archive:{out}"), check=True,
                           capture_output=True, timeout=300)
            ctr = ""
            source = f"oci-archive:{out}"
        finally:
            if ctr:
                subprocess.run(containers.buildah("rm", ctr), capture_output=True)
    with_digest = subprocess.run(
        containers.skopeo("copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", f"admin:{server.admin_token}",
                          "--digestfile", "/dev/stdout", source, f"docker://127.0.0.1:{server.port}/{repo_tag}"),
        capture_output=True, text=True, timeout=300)
    assert with_digest.returncode == 0, with_digest.stderr
    return with_digest.stdout.strip()


def app_files(name: str, base: str) -> dict[str, str]:
    return {
        ".conveyor/app.yaml": f'name: {name}\nversion: "1.0.0"\nimage: apps/{name}\n',
        ".conveyor/pipeline.yaml": ("ci:\n  - uses: image-build\n    with:\n      build_args:\n"
                                    f"        BASE_IMAGE: ${{CONVEYOR_REGISTRY}}/{base}\n"),
        "Dockerfile": DOCKERFILE,
        "status": DPKG_STATUS,
        "demo_pkg-2.0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: demo_pkg\nVersion: 2.0.1\n",
        "www/index.html": f"{name}\n",
    }


def merge(server: ServerHandle, wc: WorkingCopy, branch: str, files: dict[str, str]) -> str:
    """Files onto main through a merged PR (main is protected); returns the merge commit."""
    wc.git("fetch", "-q", "origin")
    wc.git("checkout", "-q", "-B", branch, "origin/main")
    for rel, content in files.items():
        p = wc.path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content)
        wc.git("add", rel)
    wc.git("commit", "-q", "-m", f"{branch}")
    code, out = wc.push(branch)
    assert code == 0, out
    api = server.api()
    r = api.post(f"/api/v1/repos/{wc.repo}/pulls", json={"source": branch, "target": "main", "title": branch})
    assert r.status_code == 201, r.text
    m = api.post(f"/api/v1/repos/{wc.repo}/pulls/{r.json()['number']}/merge", json={"method": "merge"})
    assert m.status_code == 200, m.text
    return str(m.json()["merge_commit_sha"])


def ci_built_app(server: ServerHandle, tmp: Path, name: str, base: str = SHELL_IMAGE) -> dict[str, Any]:
    """A deployable CI run of a new app on ``base``; returns the finished run (its outputs hold the image)."""
    ensure_shell_image(server)
    wc = new_repo(server, tmp, name)
    r = server.api().put(f"/api/v1/repos/{name}/protection/main", json={"approvals": 0})
    assert r.status_code == 200, r.text
    sha = merge(server, wc, "app", app_files(name, base))
    run = wait_for_run(server, name, sha, "ci")
    assert run["state"] == "success", run
    assert run["outputs"]["image"]["pushed"], run["outputs"]
    return run
