"""kstatus health of StatefulSet, DaemonSet and Job, judged on objects a real cluster runs."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from conveyor.agent import health
from conveyor.agent.kube import Kube, connect
from conveyor.agent.objects import ObjectId
from tests.support.clusters import ClusterHandle

pytestmark = pytest.mark.slow

BB = "/bin/busybox"


def _pod_template(name: str, image: str, command: list[str], **container: Any) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": name}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": image, "command": command, **container}],
        },
    }


def _ready_probe(path: str) -> dict[str, Any]:
    return {"readinessProbe": {"httpGet": {"path": path, "port": 8080}, "periodSeconds": 1}}


SERVE = [BB, "httpd", "-f", "-p", "8080", "-h", "/www"]


def statefulset(ns: str, name: str, image: str, command: list[str], replicas: int = 1, **c: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": replicas, "serviceName": name, "selector": {"matchLabels": {"app": name}},
                 "podManagementPolicy": "Parallel", "template": _pod_template(name, image, command, **c)},
    }


def daemonset(ns: str, name: str, image: str, command: list[str], **c: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": name, "namespace": ns},
        "spec": {"selector": {"matchLabels": {"app": name}}, "template": _pod_template(name, image, command, **c)},
    }


def job(ns: str, name: str, image: str, command: list[str]) -> dict[str, Any]:
    template = _pod_template(name, image, command)
    template["spec"]["restartPolicy"] = "Never"
    return {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": ns},
        "spec": {"backoffLimit": 0, "template": template},
    }


@pytest.fixture(scope="module")
def kube(cluster: ClusterHandle) -> Iterator[Kube]:
    k = Kube(connect(cluster.kubeconfig))
    yield k
    k.close()


@pytest.fixture(scope="module")
def objects(cluster: ClusterHandle, hello_image: str) -> Iterator[dict[str, dict[str, Any]]]:
    """Every case applied at once, so the cluster works on all of them while the tests wait."""
    ns = f"health-{uuid.uuid4().hex[:6]}"
    registry = hello_image.split("/", 1)[0]
    crash = [BB, "sh", "-c", "exit 3"]
    objs = {
        "sts-current": statefulset(ns, "web", hello_image, SERVE, replicas=2, **_ready_probe("/")),
        "sts-unready": statefulset(ns, "unready", hello_image, SERVE, **_ready_probe("/missing")),
        "sts-crash": statefulset(ns, "crash", hello_image, crash),
        "ds-current": daemonset(ns, "agent", hello_image, SERVE, **_ready_probe("/")),
        "ds-unready": daemonset(ns, "dsunready", hello_image, SERVE, **_ready_probe("/missing")),
        "ds-nopull": daemonset(ns, "nopull", f"{registry}/demo/does-not-exist:1", SERVE),
        "job-done": job(ns, "done", hello_image, [BB, "true"]),
        "job-running": job(ns, "running", hello_image, [BB, "sleep", "600"]),
        "job-failed": job(ns, "failed", hello_image, [BB, "false"]),
    }
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}, *objs.values())
    yield objs
    cluster.kubectl("delete", "namespace", ns, "--wait=false")


def _wait(kube: Kube, obj: dict[str, Any], ok: Callable[[health.Health], bool], timeout: float = 180) -> health.Health:
    deadline = time.monotonic() + timeout
    seen: list[health.Health] = []
    while time.monotonic() < deadline:
        h = health.check(kube, ObjectId.of(obj))
        if not seen or seen[-1] != h:
            seen.append(h)
        if ok(h):
            return h
        time.sleep(0.5)
    raise AssertionError(f"{obj['kind']} {obj['metadata']['name']}: health went {seen}")


def _steady(kube: Kube, obj: dict[str, Any], expected: health.Health, seconds: float = 5) -> None:
    """The expected health holds for a while (it is a state, not a moment of a rollout)."""
    _wait(kube, obj, lambda h: h == expected)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert health.check(kube, ObjectId.of(obj)) == expected
        time.sleep(0.5)


def test_statefulset_current_inprogress_and_failed(kube: Kube, objects: dict[str, dict[str, Any]]) -> None:
    web = objects["sts-current"]
    first = health.check(kube, ObjectId.of(web))
    assert first.status in (health.IN_PROGRESS, health.CURRENT)
    h = _wait(kube, web, lambda h: h.status == health.CURRENT)
    # the API server defaults rollingUpdate.partition to 0, so kstatus takes its partition branch
    assert h.message == "Partition rollout complete. updated: 2"
    _steady(kube, objects["sts-unready"], health.Health(health.IN_PROGRESS, "Ready: 0/1"))
    failed = _wait(kube, objects["sts-crash"], lambda h: h.status == health.FAILED)
    assert "CrashLoopBackOff" in failed.message and "crash-0" in failed.message


def test_statefulset_rollout_is_in_progress_until_the_new_revision_is_current(
    cluster: ClusterHandle, kube: Kube, objects: dict[str, dict[str, Any]]
) -> None:
    web = objects["sts-current"]
    _wait(kube, web, lambda h: h.status == health.CURRENT)
    ns = web["metadata"]["namespace"]
    cluster.kubectl("-n", ns, "set", "env", "statefulset/web", "ROLL=1")
    seen = _wait(kube, web, lambda h: h.status == health.IN_PROGRESS, timeout=30)
    assert seen.message  # e.g. "new generation not yet observed", "Ready: 1/2" or the revision mismatch
    _wait(kube, web, lambda h: h.status == health.CURRENT)
    sts = cluster.get(f"/apis/apps/v1/namespaces/{ns}/statefulsets/web")
    assert sts["status"]["currentRevision"] == sts["status"]["updateRevision"]


def test_daemonset_current_inprogress_and_failed(kube: Kube, objects: dict[str, dict[str, Any]]) -> None:
    h = _wait(kube, objects["ds-current"], lambda h: h.status == health.CURRENT)
    assert h.message == "All replicas scheduled as expected. Replicas: 1"
    _steady(kube, objects["ds-unready"], health.Health(health.IN_PROGRESS, "Available: 0/1"))
    failed = _wait(kube, objects["ds-nopull"], lambda h: h.status == health.FAILED)
    assert "ImagePullBackOff" in failed.message


def test_job_current_when_complete_inprogress_while_running_failed_past_its_backoff_limit(
    kube: Kube, objects: dict[str, dict[str, Any]]
) -> None:
    done = _wait(kube, objects["job-done"], lambda h: h.status == health.CURRENT)
    assert done.message == "Job Completed. succeeded: 1/1"
    running = _wait(kube, objects["job-running"], lambda h: h.message.startswith("Job in progress"))
    assert running.status == health.IN_PROGRESS
    failed = _wait(kube, objects["job-failed"], lambda h: h.status == health.FAILED)
    assert failed.message.startswith("Job Failed. failed: 1/1") and "BackoffLimitExceeded" in failed.message


def test_rules_on_status_alone() -> None:
    """The rules whose states a real cluster shows only briefly, on the status the controllers write."""

    class NoPods:
        def list(self, *_: Any, **__: Any) -> list[dict[str, Any]]:
            return []

    k: Any = NoPods()
    meta = {"name": "x", "namespace": "n", "generation": 2}

    def sts(spec: dict[str, Any], status: dict[str, Any]) -> health.Health:
        return health.evaluate(k, {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta,
                                   "spec": {"selector": {"matchLabels": {"a": "b"}}, **spec},
                                   "status": {"observedGeneration": 2, **status}})

    full = {"replicas": 3, "readyReplicas": 3, "currentReplicas": 3, "updatedReplicas": 3,
            "currentRevision": "x-1", "updateRevision": "x-1"}
    assert sts({"replicas": 3}, full).status == health.CURRENT
    assert sts({"replicas": 3}, {**full, "observedGeneration": 1}).status == health.IN_PROGRESS
    assert sts({"replicas": 3}, {**full, "replicas": 2}).message == "Replicas: 2/3"
    assert sts({"replicas": 2}, {**full, "readyReplicas": 2}).message == "Pending termination: 1"
    assert sts({"replicas": 3}, {**full, "updateRevision": "x-2"}).message == (
        "Waiting for updated revision to match current")
    partitioned = {"replicas": 3, "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}}
    assert sts(partitioned, {**full, "updatedReplicas": 0}).message == "updated: 0/1"
    assert sts(partitioned, {**full, "updatedReplicas": 1, "updateRevision": "x-2"}).status == health.CURRENT
    assert sts({"replicas": 3, "updateStrategy": {"type": "OnDelete"}}, {}).status == health.CURRENT

    def ds(status: dict[str, Any] | None) -> health.Health:
        obj: dict[str, Any] = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": meta, "spec": {}}
        if status is not None:
            obj["status"] = status
        return health.evaluate(k, obj)

    assert ds(None).status == health.IN_PROGRESS  # not yet seen by its controller
    assert ds({"observedGeneration": 2}).message == "Missing .status.desiredNumberScheduled"
    counts = {"observedGeneration": 2, "desiredNumberScheduled": 2, "currentNumberScheduled": 2,
              "updatedNumberScheduled": 2, "numberAvailable": 2, "numberReady": 2}
    assert ds(counts).status == health.CURRENT
    assert ds({**counts, "updatedNumberScheduled": 1}).message == "Updated: 1/2"

    def jb(status: dict[str, Any]) -> health.Health:
        return health.evaluate(k, {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta,
                                   "spec": {"completions": 3}, "status": status})

    assert jb({}).message == "Job not started"
    suspended = {"conditions": [{"type": "Suspended", "status": "True"}]}
    assert jb(suspended) == health.Health(health.CURRENT, "Job is suspended")
