"""kstatus-style health: Current, InProgress or Failed, with the reason.

The per-kind rules follow kstatus (kubernetes-sigs/cli-utils ``pkg/kstatus/status/core.go``), which
Flux's health checks use, in its order and with its messages: for StatefulSet the replica, ready,
partition, current and revision checks; for DaemonSet the desired/current/updated/available/ready
counts (and it stays InProgress until the controller has observed the object at all); for Job
Complete, Failed and Suspended conditions and the start time.

Where Conveyor differs, and why:

* workloads fail fast on pod states that will not fix themselves (CrashLoopBackOff,
  ImagePullBackOff, ...) and on ProgressDeadlineExceeded, instead of waiting out the sync's
  timeout; only the pods of the workload's current revision count, so rolling back from a crashing
  revision is not failed by the old pods still crashing;
* a Job that has started but not finished is InProgress, not Current as in kstatus: a revision
  whose migration Job is still running (or about to fail) is not yet deployed, which is what Argo
  CD reports too. A Job that never ends belongs in a Deployment.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from conveyor.agent.kube import Kube
from conveyor.agent.objects import ObjectId

CURRENT, IN_PROGRESS, FAILED, NOT_FOUND = "Current", "InProgress", "Failed", "NotFound"


class HealthStatus(StrEnum):
    """The statuses above as the agent reports them per object (observe.py), plus Unknown for an object
    whose health could not be read; the server checks reports against it (clusters/agent_reports.py)."""

    CURRENT = CURRENT
    IN_PROGRESS = IN_PROGRESS
    FAILED = FAILED
    NOT_FOUND = NOT_FOUND
    UNKNOWN = "Unknown"


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


def _revision_selector(selector: dict[str, Any], revision: str | None) -> dict[str, Any]:
    """The selector narrowed to pods of one controller revision (label ``controller-revision-hash``)."""
    if not revision:
        return selector
    return {**selector, "matchLabels": {**(selector.get("matchLabels") or {}), "controller-revision-hash": revision}}


def _daemonset_revision(kube: Kube, ds: dict[str, Any]) -> str | None:
    """The hash of a DaemonSet's newest ControllerRevision: its current pods carry it as a label."""
    meta = ds["metadata"]
    labels = ((ds.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    if not labels:
        return None
    newest, revision_hash = -1, None
    for rev in kube.list("apps/v1", "ControllerRevision", meta.get("namespace", ""),
                         labels={k: str(v) for k, v in labels.items()}):
        rev_meta = rev.get("metadata") or {}
        owned = any(o.get("uid") == meta.get("uid") for o in rev_meta.get("ownerReferences") or [])
        if owned and _int(rev, "revision") > newest:
            newest = _int(rev, "revision")
            revision_hash = (rev_meta.get("labels") or {}).get("controller-revision-hash")
    return str(revision_hash) if revision_hash else None


def _int(obj: dict[str, Any], *path: str, default: int = 0) -> int:
    value: Any = obj
    for key in path:
        value = (value or {}).get(key) if isinstance(value, dict) else None
    return int(value) if isinstance(value, int) else default


def _statefulset(kube: Kube, obj: dict[str, Any]) -> Health:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if not _observed(obj):
        return Health(IN_PROGRESS, "new generation not yet observed")
    selector = _revision_selector(spec.get("selector") or {}, status.get("updateRevision"))
    problem = _pods_problem(kube, obj["metadata"].get("namespace", ""), selector)
    if problem:
        return Health(FAILED, problem)
    if (spec.get("updateStrategy") or {}).get("type") == "OnDelete":
        return Health(CURRENT, "StatefulSet is using the ondelete update strategy")
    want = _int(spec, "replicas", default=1)
    replicas, ready = _int(status, "replicas"), _int(status, "readyReplicas")
    if want > replicas:
        return Health(IN_PROGRESS, f"Replicas: {replicas}/{want}")
    if want > ready:
        return Health(IN_PROGRESS, f"Ready: {ready}/{want}")
    if replicas > want:
        return Health(IN_PROGRESS, f"Pending termination: {replicas - want}")
    partition = _int(spec, "updateStrategy", "rollingUpdate", "partition", default=-1)
    updated = _int(status, "updatedReplicas")
    if partition != -1:
        if updated < want - partition:
            return Health(IN_PROGRESS, f"updated: {updated}/{want - partition}")
        return Health(CURRENT, f"Partition rollout complete. updated: {updated}")
    current = _int(status, "currentReplicas")
    if want > current:
        return Health(IN_PROGRESS, f"current: {current}/{want}")
    if status.get("currentRevision", "") != status.get("updateRevision", ""):
        return Health(IN_PROGRESS, "Waiting for updated revision to match current")
    return Health(CURRENT, f"All replicas scheduled as expected. Replicas: {replicas}")


def _daemonset(kube: Kube, obj: dict[str, Any]) -> Health:
    status = obj.get("status") or {}
    # kstatus is strict here: a DaemonSet the controller has not looked at has neither field yet
    if "generation" not in (obj.get("metadata") or {}) or "observedGeneration" not in status:
        return Health(IN_PROGRESS, "DaemonSet status.observedGeneration not found")
    if not _observed(obj):
        return Health(IN_PROGRESS, "new generation not yet observed")
    selector = _revision_selector((obj.get("spec") or {}).get("selector") or {}, _daemonset_revision(kube, obj))
    problem = _pods_problem(kube, obj["metadata"].get("namespace", ""), selector)
    if problem:
        return Health(FAILED, problem)
    desired = _int(status, "desiredNumberScheduled", default=-1)
    if desired == -1:
        return Health(IN_PROGRESS, "Missing .status.desiredNumberScheduled")
    for field, label in (("currentNumberScheduled", "Current"), ("updatedNumberScheduled", "Updated"),
                         ("numberAvailable", "Available"), ("numberReady", "Ready")):
        if desired > _int(status, field):
            return Health(IN_PROGRESS, f"{label}: {_int(status, field)}/{desired}")
    return Health(CURRENT, f"All replicas scheduled as expected. Replicas: {desired}")


def _job(kube: Kube, obj: dict[str, Any]) -> Health:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    parallelism = _int(spec, "parallelism", default=1)
    completions = _int(spec, "completions", default=parallelism)
    succeeded, failed, active = _int(status, "succeeded"), _int(status, "failed"), _int(status, "active")
    conds = _conditions(obj)
    if (conds.get("Complete") or {}).get("status") == "True":
        return Health(CURRENT, f"Job Completed. succeeded: {succeeded}/{completions}")
    if (conds.get("Failed") or {}).get("status") == "True":
        c = conds["Failed"]
        detail = ": ".join(str(x) for x in (c.get("reason"), c.get("message")) if x)
        return Health(FAILED, f"Job Failed. failed: {failed}/{completions}" + (f" ({detail})" if detail else ""))
    if (conds.get("Suspended") or {}).get("status") == "True":
        return Health(CURRENT, "Job is suspended")
    if not status.get("startTime"):
        return Health(IN_PROGRESS, "Job not started")
    problem = _pods_problem(kube, obj["metadata"].get("namespace", ""), spec.get("selector") or {})
    if problem:
        return Health(FAILED, problem)
    return Health(IN_PROGRESS, f"Job in progress. success: {succeeded}, active: {active}, failed: {failed}")


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


def _replicaset(obj: dict[str, Any]) -> Health:
    """Not a kstatus rule (a ReplicaSet is normally a Deployment's child, shown in the object tree)."""
    if not _observed(obj):
        return Health(IN_PROGRESS, "new generation not yet observed")
    want, ready = _int(obj, "spec", "replicas", default=1), _int(obj, "status", "readyReplicas")
    if ready < want:
        return Health(IN_PROGRESS, f"Ready: {ready}/{want}")
    return Health(CURRENT, f"{want} replicas ready")


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
    if group == "apps" and kind == "ReplicaSet":
        return _replicaset(obj)
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
