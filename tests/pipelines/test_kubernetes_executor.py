"""The Kubernetes executor on a real local cluster: a runner started with ``--executor kubernetes
--cluster NAME`` runs each run as a pod (steps as its init containers), streams the steps' logs to the
server masked, mounts no service-account token, and deletes the pod after success, failure, cancel and
its own kill -9 (the next instance sweeps it).

The server is the session's ``registry_server``, whose port the ``cluster`` forwards (the node pulls
the steps' image from it, pods reach it at host.conveyor.internal); runs carry a ``runs-on`` label
only this test's runner has, so the server's own runner leaves them alone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.pipelines.helpers import log_text, repo_with_pipeline, wait_for_run
from tests.support.clusters import ClusterHandle
from tests.support.server import ServerHandle

NAMESPACE = "conveyor-runs-test"


class KubeRunner:
    def __init__(self, server: ServerHandle, clusters_home: Path, cluster: ClusterHandle, tmp: Path) -> None:
        self.server, self.home, self.cluster, self.tmp = server, clusters_home, cluster, tmp
        self.label = f"k8s-{uuid.uuid4().hex[:8]}"
        r = server.api().post("/api/v1/runners", json={"name": self.label, "labels": [self.label]})
        assert r.status_code == 201, r.text
        self.token = r.json()["token"]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        env["CONVEYOR_DATA_DIR"] = str(self.home)  # where the local cluster is, not the server's data
        with open(self.tmp / "runner.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "conveyor", "runner", "--server", self.server.url, "--token", self.token,
                 "--executor", "kubernetes", "--cluster", self.cluster.name, "--namespace", NAMESPACE,
                 "--concurrency", "1", "--work-dir", str(self.tmp / "runner"), "--default-image", "cache/shell:1"],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_serving(self) -> None:
        """Until the runner has said hello to the server (it fails at once if it refused to start)."""
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"the runner exited with {self.proc.returncode}: {self.log()}")
            listed = {r["name"]: r for r in self.server.api().get("/api/v1/runners").json()}
            if listed[self.label]["last_seen_at"] is not None:
                return
            time.sleep(0.2)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)

    def log(self) -> str:
        return (self.tmp / "runner.log").read_text(errors="replace")

    def pods(self, run_id: int) -> list[dict[str, Any]]:
        out = self.cluster.get(f"/api/v1/namespaces/{NAMESPACE}/pods?labelSelector=conveyor.dev/run={run_id},"
                               f"conveyor.dev/runner={self.label}")
        return list(out["items"])

    def objects_gone(self, run_id: int) -> bool:
        secrets = self.cluster.get(f"/api/v1/namespaces/{NAMESPACE}/secrets?labelSelector=conveyor.dev/run="
                                   f"{run_id},conveyor.dev/runner={self.label}")["items"]
        return not self.pods(run_id) and not secrets


@pytest.fixture
def kube_runner(registry_server: ServerHandle, clusters_home: Path, cluster: ClusterHandle,
                tmp_path: Path) -> Iterator[KubeRunner]:
    runner = KubeRunner(registry_server, clusters_home, cluster, tmp_path)
    runner.start()
    runner.wait_serving()
    yield runner
    runner.stop()


def pipeline(label: str, steps: str) -> str:
    return f"ci:\n  runs-on: [{label}]\n  steps:\n{steps}"


SHARED_WORKSPACE = """\
    - name: write
      env: {KEY: '${{ secrets.DEPLOY_KEY }}'}
      resources: {requests: {cpu: 10m, memory: 16Mi}, limits: {memory: 64Mi}}
      run: |
        echo "hello from step one" > shared.txt
        echo "key is $KEY"
        test -f .conveyor/pipeline.yaml
        test ! -e /var/run/secrets/kubernetes.io/serviceaccount
        echo no-service-account-token
    - name: read
      run: cat shared.txt; test "$(cat shared.txt)" = "hello from step one"
    - name: fails
      run: echo about to fail; exit 3
    - name: never
      run: echo never runs
"""


def test_a_run_is_a_pod_with_steps_sharing_the_workspace(kube_runner: KubeRunner, tmp_path: Path) -> None:
    server, value = kube_runner.server, f"s3cr3t-{uuid.uuid4().hex}"
    wc, _ = repo_with_pipeline(server, tmp_path, "pr:\n  - run: 'true'\n")
    r = server.api().put(f"/api/v1/repos/{wc.repo}/secrets/DEPLOY_KEY", json={"value": value, "scope": "all"})
    assert r.status_code == 204, r.text
    sha = wc.commit_file(".conveyor/pipeline.yaml", pipeline(kube_runner.label, SHARED_WORKSPACE))
    assert wc.push("main")[0] == 0
    run = wait_for_run(server, wc.repo, sha, "ci")
    log = log_text(server, run["id"])
    assert run["runner"] == kube_runner.label, kube_runner.log()
    assert run["state"] == "failure" and run["failed_step"] == "fails", (run, log, kube_runner.log())
    states = [(s["name"], s["state"]) for s in run["steps"]]
    assert states == [("setup", "success"), ("write", "success"), ("read", "success"), ("fails", "failure"),
                      ("never", "skipped")]
    assert run["steps"][3]["exit_code"] == 3 and "exited with code 3" in run["message"]
    assert "key is ***" in log and value not in log
    assert "no-service-account-token" in log and "hello from step one" in log and "about to fail" in log
    assert "never runs" not in log and f"pod {NAMESPACE}/conveyor-run-{run['id']}-" in log
    kube_runner.cluster.wait_for("the run's pod and secrets to be deleted", lambda: kube_runner.objects_gone(run["id"]))


def test_cancel_and_runner_death_delete_the_pod(kube_runner: KubeRunner, tmp_path: Path) -> None:
    server = kube_runner.server
    steps = ("    - name: long\n      run: |\n        echo \"waiting in attempt $CONVEYOR_RUN_ATTEMPT\"\n"
             "        if [ \"$CONVEYOR_RUN_ATTEMPT\" = 1 ]; then sleep 600; fi\n        echo done\n")
    wc, sha = repo_with_pipeline(server, tmp_path, pipeline(kube_runner.label, steps))
    run = wait_for_run(server, wc.repo, sha, "ci", state="running")
    while "waiting in attempt 1" not in log_text(server, run["id"]):
        pass
    (pod,) = kube_runner.pods(run["id"])
    assert run["id"] and pod["spec"]["automountServiceAccountToken"] is False
    assert kube_runner.token not in json.dumps(pod)
    # kill -9 of the runner: its next instance sweeps the pod, and the run, recovered, passes.
    kube_runner.kill()
    kube_runner.start()
    done = wait_for_run(server, wc.repo, sha, "ci")
    assert done["state"] == "success" and done["attempt"] == 2, (done, kube_runner.log())
    assert "removed 1 container(s), pods" in kube_runner.log()
    kube_runner.cluster.wait_for("the pods of both attempts to be deleted", lambda: kube_runner.objects_gone(run["id"]))
    # cancel: a new run of the same commit, cancelled while its step sleeps.
    again = int(server.cli("run", "retry", str(run["id"])).stdout.strip())
    while "waiting in attempt 1" not in log_text(server, again):
        pass
    assert kube_runner.pods(again)
    server.cli("run", "cancel", str(again))
    cancelled = wait_for_run(server, wc.repo, sha, "ci")
    assert cancelled["id"] == again and cancelled["state"] == "cancelled", cancelled
    assert cancelled["steps"][1]["state"] == "cancelled"
    kube_runner.cluster.wait_for("the cancelled run's pod to be deleted", lambda: kube_runner.objects_gone(again))
