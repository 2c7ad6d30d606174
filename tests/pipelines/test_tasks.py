"""Built-in tasks failing clearly on bad input: missing Dockerfile, lint findings, invalid rendered
objects, Kustomize, an unpullable base image; and the templates artifact of a run that fails is
never published."""

from __future__ import annotations

from pathlib import Path

from tests.pipelines.helpers import log_text, repo_with_pipeline, wait_for_run, wait_for_status
from tests.support.server import ServerHandle

APP = "name: demo\nversion: '2.0.0'\nimage: apps/demo\ntemplates: {path: chart, kind: helm}\n" \
      "test_values: chart/values-test.yaml\n"
CHART = {
    "chart/Chart.yaml": "apiVersion: v2\nname: demo\nversion: 0.1.0\n",
    "chart/values.yaml": "replicas: 1\n",
    "chart/values-test.yaml": "replicas: 2\n",
    "chart/templates/deploy.yaml": (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}\nspec:\n"
        "  replicas: {{ .Values.replicas }}\n  selector:\n    matchLabels: {app: demo}\n  template:\n"
        "    metadata:\n      labels: {app: demo}\n    spec:\n      containers:\n        - name: demo\n"
        "          image: demo\n"),
}


def test_missing_dockerfile_fails_the_lint_step(server: ServerHandle, tmp_path: Path) -> None:
    wc, sha = repo_with_pipeline(server, tmp_path, "ci:\n  - uses: dockerfile-lint\n", app=APP)
    run = wait_for_run(server, wc.repo, sha, "ci")
    assert run["state"] == "failure" and run["failed_step"] == "dockerfile-lint"
    assert run["message"] == "Dockerfile not found: Dockerfile"
    assert "Dockerfile not found" in wait_for_status(server, wc.repo, sha, "conveyor/ci", "failure")["description"]


def test_hadolint_threshold_decides(server: ServerHandle, tmp_path: Path) -> None:
    # DL3007 (using latest) is a warning: it fails at "warning" and passes at "error".
    dockerfile = "FROM scratch:latest\nCOPY a /a\n"
    pipeline = ("ci:\n  - name: lenient\n    uses: dockerfile-lint\n    with: {failure_threshold: error}\n"
                "  - name: strict\n    uses: dockerfile-lint\n    with: {failure_threshold: warning}\n")
    wc, sha = repo_with_pipeline(server, tmp_path, pipeline, {"Dockerfile": dockerfile, "a": "a\n"}, app=APP)
    run = wait_for_run(server, wc.repo, sha, "ci")
    assert [s["state"] for s in run["steps"]] == ["success", "success", "failure"]
    assert run["failed_step"] == "strict" and "DL3007" in run["message"]
    assert "Dockerfile:1:1: warning DL3007" in log_text(server, run["id"])


def test_template_lint_renders_with_test_values_and_validates_objects(server: ServerHandle, tmp_path: Path) -> None:
    pipeline = "pr:\n  - uses: template-lint\nci:\n  - include: pr\n  - uses: publish-templates\n"
    wc, sha = repo_with_pipeline(server, tmp_path, pipeline, CHART, app=APP)
    run = wait_for_run(server, wc.repo, sha, "ci")
    assert run["state"] == "success", log_text(server, run["id"])
    assert "Deployment/demo: valid for Kubernetes" in log_text(server, run["id"])
    assert [a["kind"] for a in run["artifacts"]] == ["templates"]
    # The test values make replicas a string: the rendered Deployment is invalid, and the run's
    # templates artifact is not published.
    wc.commit_file("chart/values-test.yaml", "replicas: '\"two\"'\n")
    bad = wc.head()
    wc.git("checkout", "-q", "main")
    assert wc.push("main")[0] == 0
    run = wait_for_run(server, wc.repo, bad, "ci")
    assert run["state"] == "failure" and run["failed_step"] == "template-lint"
    assert "failed Kubernetes" in run["message"]
    assert "invalid at spec.replicas" in log_text(server, run["id"])
    assert run["artifacts"] == [] and [s["name"] for s in run["steps"]][-1] == "publish-templates"


def test_kustomize_templates(server: ServerHandle, tmp_path: Path) -> None:
    app = "name: demo\nversion: '1'\nimage: apps/demo\ntemplates: {path: deploy, kind: kustomize}\n"
    files = {
        "deploy/kustomization.yaml": "resources: [cm.yaml]\nnamePrefix: demo-\n",
        "deploy/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {a: b}\n",
    }
    wc, sha = repo_with_pipeline(server, tmp_path, "ci:\n  - uses: template-lint\n", files, app=app)
    run = wait_for_run(server, wc.repo, sha, "ci")
    assert run["state"] == "success", log_text(server, run["id"])
    assert "ConfigMap/demo-settings: valid" in log_text(server, run["id"])


def test_unpullable_base_image_fails_the_build(server: ServerHandle, tmp_path: Path) -> None:
    pipeline = ("ci:\n  - uses: image-build\n    with:\n      build_args:\n"
                "        BASE_IMAGE: ${CONVEYOR_REGISTRY}/cache/does-not-exist:1\n")
    dockerfile = "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCMD [\"true\"]\n"
    wc, sha = repo_with_pipeline(server, tmp_path, pipeline, {"Dockerfile": dockerfile}, app=APP)
    run = wait_for_run(server, wc.repo, sha, "ci")
    assert run["state"] == "failure" and run["failed_step"] == "image-build"
    assert run["message"].startswith("image build failed: ")
    assert "does-not-exist" in log_text(server, run["id"])
    assert [s["name"] for s in run["steps"]] == ["setup", "image-build"]  # no publish step: nothing pushed


def test_template_lint_judges_objects_by_the_oldest_clusters_kubernetes_version(
    server: ServerHandle, tmp_path: Path
) -> None:
    # spec.schedulingGroup of a pod exists from Kubernetes 1.35: valid for the newest schema, refused
    # by the 1.34 clusters (none registered on this server: the pinned release is the oldest).
    files = {**CHART, "chart/templates/pod.yaml": (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: grouped}\nspec:\n  schedulingGroup: {}\n"
        "  containers: [{name: c, image: demo}]\n")}
    pipeline = ("ci:\n  - name: newest\n    uses: template-lint\n    with: {kubernetes_version: v1.37.0}\n"
                "  - name: clusters\n    uses: template-lint\n")
    wc, sha = repo_with_pipeline(server, tmp_path, pipeline, files, app=APP)
    run = wait_for_run(server, wc.repo, sha, "ci")
    assert [s["state"] for s in run["steps"]][-2:] == ["success", "failure"], log_text(server, run["id"])
    assert run["failed_step"] == "clusters" and "failed Kubernetes v1.34.4 schema validation" in run["message"]
    log = log_text(server, run["id"])
    assert "Pod/grouped: valid for Kubernetes v1.37.0" in log
    assert "Pod/grouped: invalid at spec: Additional properties are not allowed ('schedulingGroup'" in log
    assert "Namespace/demo-test: valid" in log  # rendered as CD renders: the app's namespace included
