"""Done-when scenario with the sample app in examples/hello against a running server (SQLite; images).

A PR with a Dockerfile lint error and one with a failing unit test are blocked from merging; a clean
PR turns conveyor/pr green and merges; the merge's CI run pushes an image that skopeo finds under
both tags with the recorded digest, and publishes the templates artifact.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.forge.helpers import WorkingCopy
from tests.pipelines.helpers import log_text, run_detail, runs, wait_for_run, wait_for_status
from tests.support.server import ServerHandle

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello"

# Four full pipelines with image builds (three PRs at once, then the merge's CI run): 433 s and 484 s
# in the test command here while the two demos ran, past 600 s once on a busier CI machine. The
# project's 600 s default is a guard against hangs, not a speed target (those live in benchmarks/),
# so this test gets the room its work needs, as the demos do.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


def skopeo_digest(server: ServerHandle, ref: str) -> str:
    p = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--creds", f"admin:{server.admin_token}",
                        "--format", "{{.Digest}}", f"docker://127.0.0.1:{server.port}/{ref}"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def open_pr(server: ServerHandle, wc: WorkingCopy, branch: str, files: dict[str, str]) -> tuple[int, str]:
    wc.git("checkout", "-q", "-B", branch, "origin/main")
    for name, content in files.items():
        (wc.path / name).write_text(content)
        wc.git("add", name)
    wc.git("commit", "-q", "-m", f"{branch}")
    code, out = wc.push(branch)
    assert code == 0, out
    number = int(server.cli("pr", "create", wc.repo, "--from", branch, "--to", "main", "--title", branch).stdout)
    return number, wc.head()


def test_sample_app_pr_gating_merge_and_ci_publication(server_factory: Callable[..., ServerHandle],
                                                       tmp_path: Path) -> None:
    server = server_factory("sqlite")
    # The base image is made locally (debootstrap, cached outside the checkout) and imported.
    p = subprocess.run([sys.executable, "-m", "conveyor", "image", "base"], env=server.env(), capture_output=True,
                       text=True, timeout=1800)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("cache/debian-python:12@sha256:")

    r = server.api().post("/api/v1/repos", json={"name": "hello"})
    assert r.status_code == 201, r.text
    wc = WorkingCopy(server, "hello", tmp_path / "hello")
    shutil.copytree(EXAMPLE, wc.path, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    wc.git("checkout", "-q", "-b", "main")
    wc.git("add", "-A")
    wc.git("commit", "-q", "-m", "hello")
    assert wc.push("main")[0] == 0
    initial = wc.head()
    # The import's own CI run is not what this test is about: cancel it to spare the machine.
    first = wait_for_run(server, "hello", initial, "ci", finished=False)
    server.cli("run", "cancel", str(first["id"]))
    server.cli("repo", "protect", "hello", "main", "--approvals", "0", "--require-check", "conveyor/pr")
    wc.git("fetch", "-q", "origin")

    dockerfile = (EXAMPLE / "Dockerfile").read_text()
    lint_pr, lint_sha = open_pr(server, wc, "lint-error", {
        "Dockerfile": dockerfile.replace("WORKDIR /app", "MAINTAINER someone@example.invalid\nWORKDIR app")})
    server_py = (EXAMPLE / "hello/server.py").read_text()
    test_pr, test_sha = open_pr(server, wc, "failing-test", {
        "hello/server.py": server_py.replace('{"app": "hello", "version": version()}', '{"app": "hello"}')})
    app_yaml = (EXAMPLE / ".conveyor/app.yaml").read_text()
    good_pr, good_sha = open_pr(server, wc, "release-1.1", {
        ".conveyor/app.yaml": app_yaml.replace('version: "1.0.0"', 'version: "1.1.0"')})

    lint_run = wait_for_run(server, "hello", lint_sha, "pr")
    assert lint_run["state"] == "failure" and lint_run["failed_step"] == "dockerfile-lint", lint_run
    assert "DL4000" in lint_run["message"] or "DL3000" in lint_run["message"]
    assert "Dockerfile:" in log_text(server, lint_run["id"])
    status = wait_for_status(server, "hello", lint_sha, "conveyor/pr", "failure")
    assert "dockerfile-lint" in status["description"]

    test_run = wait_for_run(server, "hello", test_sha, "pr")
    assert test_run["state"] == "failure" and test_run["failed_step"] == "unit tests", test_run
    assert "FAILED" in log_text(server, test_run["id"])
    wait_for_status(server, "hello", test_sha, "conveyor/pr", "failure")

    for number in (lint_pr, test_pr):
        refused = server.cli("pr", "merge", "hello", str(number), check=False)
        assert refused.returncode != 0 and "check.failed" in refused.stderr

    good_run = wait_for_run(server, "hello", good_sha, "pr")
    assert good_run["state"] == "success", log_text(server, good_run["id"])[-3000:]
    assert [s["name"] for s in good_run["steps"]] == [
        "setup", "lint", "unit tests", "dockerfile-lint", "template-lint", "image-build", "image-test"]
    assert good_run["outputs"]["image"]["push"] is False and "digest" not in good_run["outputs"]["image"]
    wait_for_status(server, "hello", good_sha, "conveyor/pr", "success")
    # Nothing was pushed by any PR run.
    tags = server.api().get("/v2/apps/hello/tags/list")
    assert tags.status_code == 404 or not tags.json().get("tags"), tags.text

    server.cli("pr", "merge", "hello", str(good_pr))
    merge_sha = server.api().get("/api/v1/repos/hello/pulls/" + str(good_pr)).json()["merge_commit_sha"]
    ci = wait_for_run(server, "hello", merge_sha, "ci")
    assert ci["state"] == "success", log_text(server, ci["id"])[-3000:]
    wait_for_status(server, "hello", merge_sha, "conveyor/ci", "success")

    image = ci["outputs"]["image"]
    human = f"1.1.0-{ci['number']}"
    assert image["tags"] == [human, merge_sha] and image["pushed"] is True
    assert image["repository"] == f"127.0.0.1:{server.port}/apps/hello"
    for tag in (human, merge_sha):
        assert skopeo_digest(server, f"apps/hello:{tag}") == image["digest"]

    (artifact,) = ci["artifacts"]
    assert artifact["kind"] == "templates"
    blob = server.api().get(f"/api/v1/artifacts/{artifact['digest']}")
    assert blob.status_code == 200
    assert "sha256:" + hashlib.sha256(blob.content).hexdigest() == artifact["digest"]
    with tarfile.open(fileobj=io.BytesIO(blob.content)) as tar:
        names = set(tar.getnames())
        meta = json.load(tar.extractfile("conveyor-templates.json"))  # type: ignore[arg-type]
    assert {"templates/Chart.yaml", "templates/templates/deployment.yaml", "values/values-test.yaml"} <= names
    assert meta["version"] == "1.1.0" and meta["commit"] == merge_sha and meta["kind"] == "helm"

    # The CD stage's input: one event with the image and the artifact.
    audit = server.api().get("/api/v1/audit", params={"limit": 1000})
    assert audit.status_code == 200, audit.text
    (entry,) = [e for e in audit.json()
                if e["action"] == "pipeline.ci.succeeded" and e["detail"].get("run_id") == ci["id"]]
    assert entry["detail"]["image"]["digest"] == image["digest"]
    assert entry["detail"]["artifacts"][0]["digest"] == artifact["digest"]
    assert run_detail(server, first["id"])["state"] == "cancelled"
    assert len(runs(server, "hello")) == 5
