"""kstatus-style health: Current, InProgress or Failed, with the reason.

Workloads fail fast on pod states that will not fix themselves (CrashLoopBackOff, ImagePullBackOff, ...) and on
ProgressDeadlineExceeded, instead of waiting out the sync's timeout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from conveyor.agent.kube import Kube
from conveyor.agent.objects import ObjectId

CURRENT, IN_PROGRESS, FAILED, NOT_FOUND = "Current", "InProgress", "Failed", "NotFound"
FATAL_WAITING = {"CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "InvalidImageName",
                 "CreateContainerConfigError", "CreateContainerError"}
# ErrImagePull is the first failed attempt; it is fatal only once the kubelet backs off (ImagePullBackOff).
FATAL_FAST = FATAL_WAITING - {"ErrImagePull"}


@dataclass(frozen=True)
class Health:
    status: str
    message: str = ""


def _conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(c.get("type")): c for c in (obj.get("status") or {}).get("conditions") or []}


def _observed(obj: dict[str, Any]) -> bool:
    gen = (obj.get("metadata") or {}).get("generation")
    observed = (obj.get("status") or {}).get("observedGeneration")
    return gen is None or observed is None or observed >= gen


def pod_problem(pod: dict[str, Any]) -> str | None:
    status = pod.get("status") or {}
    for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        waiting = (cs.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason in FATAL_FAST:
            msg = waiting.get("message") or ""
            return f"pod {pod['metadata']['name']} container {cs.get('name')}: {reason}" + (f": {msg}" if msg else "")
    return None


def _pods_problem(kube: Kube, namespace: str, selector: dict[str, Any]) -> str | None:
    labels = selector.get("matchLabels") or {}
    if not labels:
        return None
    for pod in kube.list("v1", "Pod", namespace, labels={k: str(v) for k, v in labels.items()}):
        problem = pod_problem(pod)
        if problem:
            return problem
    return None


REVISION = "deployment.kubernetes.io/revision"


def _current_template_hash(kube: Kube, deployment: dict[str, Any]) -> str | None:
    """The pod-template-hash of the ReplicaSet holding the Deployment's current revision."""
    meta = deployment["metadata"]
    revision = (meta.get("annotations") or {}).get(REVISION)
    labels = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    if revision is None or not labels:
        return None
    for rs in kube.list("apps/v1", "ReplicaSet", meta.get("namespace", ""),
                        labels={k: str(v) for k, v in labels.items()}):
        rs_meta = rs.get("metadata") or {}
        owned = any(o.get("uid") == meta.get("uid") for o in rs_meta.get("ownerReferences") or [])
        if owned and (rs_meta.get("annotations") or {}).get(REVISION) == revision:
            template_hash = (rs_meta.get("labels") or {}).get("pod-template-hash")
            return str(template_hash) if template_hash else None
    return None


def _deployment(kube: Kube, obj: dict[str, Any]) -> Health:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    conds = _conditions(obj)
    progressing = conds.get("Progressing") or {}
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        return Health(FAILED, f"ProgressDeadlineExceeded: {progressing.get('message', '')}")
    if not _observed(obj):
        return Health(IN_PROGRESS, "new generation not yet observed")
    ns = obj["metadata"].get("namespace", "")
    # Only the current ReplicaSet's pods speak for this revision: during a rollback the old
    # (crashing) pods are still there until the new ones are ready, and must not fail it.
    selector = dict(spec.get("selector") or {})
    template_hash = _current_template_hash(kube, obj)
    if template_hash is not None:
        selector["matchLabels"] = {**(selector.get("matchLabels") or {}), "pod-template-hash": template_hash}
    problem = _pods_problem(kube, ns, selector)
    if problem:
        return Health(FAILED, problem)
    want = spec.get("replicas", 1)
    for field in ("updatedReplicas", "readyReplicas", "availableReplicas"):
        if status.get(field, 0) < want:
            return Health(IN_PROGRESS, f"{field}: {status.get(field, 0)}/{want}")
    if status.get("replicas", 0) > want:
        return Health(IN_PROGRESS, f"old replicas pending termination: {status.get('replicas')}/{want}")
    return Health(CURRENT, f"{want} replicas available")


def _statefulset(kube: Kube, obj: dict[str, Any]) -> Health:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    problem = _pods_problem(kube, obj["metadata"].get("namespace", ""), spec.get("selector") or {})
    if problem:
        return Health(FAILED, problem)
    if not _observed(obj):
        return Health(IN_PROGRESS, "new generation not yet observed")
    want = spec.get("replicas", 1)
    if status.get("readyReplicas", 0) < want or status.get("updatedReplicas", 0) < want:
        return Health(IN_PROGRESS, f"ready {status.get('readyReplicas', 0)}/{want}")
    if status.get("currentRevision") != status.get("updateRevision"):
        return Health(IN_PROGRESS, "rolling update in progress")
    return Health(CURRENT, f"{want} replicas ready")


def _daemonset(kube: Kube, obj: dict[str, Any]) -> Health:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    problem = _pods_problem(kube, obj["metadata"].get("namespace", ""), spec.get("selector") or {})
    if problem:
        return Health(FAILED, problem)
    if not _observed(obj):
        return Health(IN_PROGRESS, "new generation not yet observed")
    want = status.get("desiredNumberScheduled", 0)
    for field in ("updatedNumberScheduled", "numberAvailable", "numberReady"):
        if status.get(field, 0) < want:
            return Health(IN_PROGRESS, f"{field}: {status.get(field, 0)}/{want}")
    return Health(CURRENT, f"{want} pods available")


def _job(kube: Kube, obj: dict[str, Any]) -> Health:
    conds = _conditions(obj)
    if (conds.get("Failed") or {}).get("status") == "True":
        c = conds["Failed"]
        return Health(FAILED, f"{c.get('reason', 'Failed')}: {c.get('message', '')}")
    if (conds.get("Complete") or {}).get("status") == "True":
        return Health(CURRENT, "job completed")
    problem = _pods_problem(kube, obj["metadata"].get("namespace", ""), (obj.get("spec") or {}).get("selector") or {})
    if problem:
        return Health(FAILED, problem)
    return Health(IN_PROGRESS, "job running")


def _pod(obj: dict[str, Any]) -> Health:
    problem = pod_problem(obj)
    if problem:
        return Health(FAILED, problem)
    phase = (obj.get("status") or {}).get("phase")
    if phase == "Succeeded":
        return Health(CURRENT, "pod succeeded")
    if phase == "Failed":
        return Health(FAILED, "pod failed")
    if (_conditions(obj).get("Ready") or {}).get("status") == "True":
        return Health(CURRENT, "pod ready")
    return Health(IN_PROGRESS, f"pod {phase or 'Pending'}")


def _service(obj: dict[str, Any]) -> Health:
    spec = obj.get("spec") or {}
    if spec.get("type") == "LoadBalancer" and not ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress"):
        return Health(IN_PROGRESS, "waiting for a load balancer address")
    return Health(CURRENT, "service ready")


def _pvc(obj: dict[str, Any]) -> Health:
    phase = (obj.get("status") or {}).get("phase")
    if phase == "Bound":
        return Health(CURRENT, "bound")
    if phase == "Lost":
        return Health(FAILED, "claim lost its volume")
    return Health(IN_PROGRESS, f"claim {phase or 'Pending'}")


def _generic(obj: dict[str, Any]) -> Health:
    conds = _conditions(obj)
    if not _observed(obj):
        return Health(IN_PROGRESS, "new generation not yet observed")
    for name in ("Stalled", "Failed"):
        c = conds.get(name) or {}
        if c.get("status") == "True":
            return Health(FAILED, f"{c.get('reason', name)}: {c.get('message', '')}")
    if (conds.get("Reconciling") or {}).get("status") == "True":
        return Health(IN_PROGRESS, str(conds["Reconciling"].get("message", "reconciling")))
    for name in ("Ready", "Established", "Available"):
        c = conds.get(name) or {}
        if c.get("status") == "False":
            return Health(IN_PROGRESS, f"{name}=False: {c.get('message', c.get('reason', ''))}")
    return Health(CURRENT, "")


def check(kube: Kube, oid: ObjectId) -> Health:
    obj = kube.get(oid)
    if obj is None:
        return Health(NOT_FOUND, "object not found")
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        return Health(IN_PROGRESS, "being deleted")
    return evaluate(kube, obj)


def evaluate(kube: Kube, obj: dict[str, Any]) -> Health:
    group = obj["apiVersion"].rpartition("/")[0]
    kind = obj["kind"]
    if group == "apps" and kind == "Deployment":
        return _deployment(kube, obj)
    if group == "apps" and kind == "StatefulSet":
        return _statefulset(kube, obj)
    if group == "apps" and kind == "DaemonSet":
        return _daemonset(kube, obj)
    if group == "batch" and kind == "Job":
        return _job(kube, obj)
    if group == "" and kind == "Pod":
        return _pod(obj)
    if group == "" and kind == "Service":
        return _service(obj)
    if group == "" and kind == "PersistentVolumeClaim":
        return _pvc(obj)
    if kind == "CustomResourceDefinition":
        established = (_conditions(obj).get("Established") or {}).get("status") == "True"
        return Health(CURRENT if established else IN_PROGRESS, "established" if established else "not established")
    if group == "" and kind == "Namespace":
        phase = (obj.get("status") or {}).get("phase")
        return Health(CURRENT if phase in (None, "Active") else IN_PROGRESS, f"namespace {phase}")
    return _generic(obj)
