"""The Kubernetes executor's pod, as data: what it mounts, what it leaves out, the order of its steps
(tests/pipelines/test_kubernetes_executor.py runs it on a real cluster)."""

from __future__ import annotations

import json
from pathlib import Path

from conveyor.pipelines.runner.kubepod import PodStep, RunPod, pod, secrets
from conveyor.pipelines.runner.kuberun import pack, refusal, topological
from conveyor.pipelines.spec import StepSpec

RUN = RunPod(run_id=7, runner="k8s-a", instance="abc123", server="http://127.0.0.1:9", namespace="ns",
             registry="127.0.0.1:9", token="run-token-value", checkout_image="127.0.0.1:9/cache/shell:1")


def test_the_pod_mounts_no_service_account_token_and_holds_no_secret_value() -> None:
    step = StepSpec(name="a", kind="run", script="echo hi", timeout=60, working_directory="sub",
                    resources={"requests": {"cpu": "10m"}, "limits": {"memory": "64Mi"}})
    steps = [PodStep(3, step, "127.0.0.1:9/cache/shell:1", {"CONVEYOR_TOKEN": "run-token-value", "K": "s3cr3t"})]
    p = pod(RUN, steps)
    spec = p["spec"]
    assert spec["automountServiceAccountToken"] is False and spec["enableServiceLinks"] is False
    assert spec["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    assert spec["restartPolicy"] == "Never" and spec["activeDeadlineSeconds"] == 60 + 600
    assert [c["name"] for c in spec["initContainers"]] == ["checkout", "step-3"]
    container = spec["initContainers"][1]
    assert container["workingDir"] == "/workspace/sub"
    assert container["resources"] == {"requests": {"cpu": "10m"}, "limits": {"memory": "64Mi"}}
    text = json.dumps(p)
    assert "run-token-value" not in text and "s3cr3t" not in text  # values come from the Secret
    env = {e["name"]: e for e in container["env"]}
    assert env["K"]["valueFrom"]["secretKeyRef"] == {"name": RUN.name, "key": "step-3-env-1"}
    run_secret, pull = secrets(RUN, steps, b"tar")
    assert set(run_secret["data"]) == {"source.tar.gz", "step-3-env-0", "step-3-env-1"}
    assert pull["type"] == "kubernetes.io/dockerconfigjson"
    assert p["metadata"]["labels"]["conveyor.dev/instance"] == "abc123"


def test_a_dag_runs_in_one_topological_order_and_tasks_are_refused(tmp_path: Path) -> None:
    a = StepSpec(name="a", kind="run", script="true", needs=("b",))
    b = StepSpec(name="b", kind="run", script="true")
    c = StepSpec(name="c", kind="run", script="true", needs=("a",))
    assert [s.name for s in topological([c, a, b])] == ["b", "a", "c"]
    why = refusal(StepSpec(name="build", kind="uses", task="image-build"), tmp_path)
    assert why is not None and "pipeline.kubernetes-tasks" in why
    assert "pipeline.kubernetes-host" in (refusal(StepSpec(name="h", kind="run", host=True), tmp_path) or "")
    assert refusal(a, tmp_path) is None
    (tmp_path / "f.txt").write_text("x")
    assert len(pack(tmp_path)) > 0
