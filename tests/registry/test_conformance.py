"""The official OCI Distribution conformance suite against a live Conveyor.

The suite is built from its Go module at a pinned version into a cache outside the checkout
(scripts/build-oci-conformance.sh) and run with all four workflows enabled.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.server import ServerHandle

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_oci_distribution_conformance_suite_passes(
    server_factory: Callable[..., ServerHandle], tmp_path: Path
) -> None:
    build = subprocess.run([str(ROOT / "scripts" / "build-oci-conformance.sh")], capture_output=True, text=True,
                           timeout=1200)
    assert build.returncode == 0, f"building the conformance suite failed:\n{build.stderr}"
    binary = build.stdout.strip().splitlines()[-1]
    server = server_factory("sqlite")
    env = dict(os.environ)
    env.update(
        OCI_ROOT_URL=server.url,
        OCI_NAMESPACE="conformance/repo1",
        OCI_CROSSMOUNT_NAMESPACE="conformance/repo2",
        OCI_USERNAME="admin",
        OCI_PASSWORD=server.admin_token,
        OCI_TEST_PULL="1",
        OCI_TEST_PUSH="1",
        OCI_TEST_CONTENT_DISCOVERY="1",
        OCI_TEST_CONTENT_MANAGEMENT="1",
        OCI_API_BLOBS_UPLOAD_CANCEL="true",
        OCI_RESULTS_DIR=str(tmp_path / "results"),
    )
    p = subprocess.run([binary], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    out = p.stdout
    assert p.returncode == 0, f"conformance failed (rc={p.returncode}):\n{out[-6000:]}\n{p.stderr[-3000:]}"
    assert "OCI Conformance Result: Pass" in out
    assert re.search(r"FAIL\.+:\s+0\b", out) and re.search(r"Error\.+:\s+0\b", out)
    for workflow in ("Blob push", "Manifest put by tag", "Manifest get by tag", "Blob get", "Tag listing",
                     "Referrers", "Tag delete", "Manifest delete", "Blob delete", "Blob mount"):
        assert re.search(rf"{re.escape(workflow)}\.+:\s+Pass", out), workflow
    assert (tmp_path / "results" / "junit.xml").exists()
