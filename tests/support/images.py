"""The small images pipeline tests run their steps in, built once per session with buildah.

``cache/shell:1`` is Debian's static busybox with its applets installed (sh, echo, sleep, yes, rev,
wget...): every test server's pipelines use it as the image of `run:` steps that name none
(``CONVEYOR_PIPELINE_DEFAULT_IMAGE``, set for every server in tests/conftest.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from conveyor.core import containers
from tests.support.server import ServerHandle

SHELL_IMAGE = "cache/shell:1"
_lock = threading.Lock()
_archive: Path | None = None
_pushed: set[str] = set()


def shell_archive() -> Path:
    """An OCI archive of the shell image (built on first use, kept for the session)."""
    global _archive
    with _lock:
        if _archive is not None:
            return _archive
        work = Path(tempfile.mkdtemp(prefix="conveyor-shell-"))
        shutil.copy("/bin/busybox", work / "busybox")
        (work / "Containerfile").write_text(
            "FROM scratch\nCOPY busybox /bin/busybox\n"
            'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
            'RUN ["/bin/busybox", "mkdir", "-p", "/tmp", "/usr/bin"]\n')
        ref = f"localhost/conveyor-test-shell:{os.getpid()}"
        for argv in (containers.buildah("bud", "--layers=false", "-t", ref, "-f", str(work / "Containerfile"),
                                        str(work)),
                     containers.buildah("push", ref, f"oci-archive:{work / 'shell.tar'}")):
            p = subprocess.run(argv, capture_output=True, text=True, timeout=300)
            if p.returncode != 0:
                raise AssertionError(f"{' '.join(argv[:4])} failed: {p.stderr}")
        _archive = work / "shell.tar"
        return _archive


def ensure_shell_image(server: ServerHandle) -> None:
    """Push the shell image into ``server``'s registry as cache/shell:1 (once per server)."""
    if server.url in _pushed:
        return
    dest = f"docker://127.0.0.1:{server.port}/{SHELL_IMAGE}"
    p = subprocess.run(containers.skopeo("copy", "--quiet", "--dest-tls-verify=false", "--dest-creds",
                                         f"admin:{server.admin_token}", f"oci-archive:{shell_archive()}", dest),
                       capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise AssertionError(f"pushing the shell image failed: {p.stderr}")
    _pushed.add(server.url)
