"""The live tree of a sync's objects, for the dashboard (issue 14, "What users see").

Every inventory object carries its health (the kstatus rules of health.py: status and message) and its
sync state; below it the objects it owns by ownerReferences (Deployment -> ReplicaSet -> Pod;
StatefulSet, DaemonSet, ReplicaSet and Job -> Pod; CronJob -> Job -> Pod), each with its health; every
object carries its recent Kubernetes events, and the pods that are not ready (or else the newest pod of
each workload) the last lines of one container's log.

The cluster is read with one list per kind and namespace (objects, ReplicaSets, Jobs, Pods, Events) and
one log request per chosen pod, never one GET per object; health rules that list pods are answered from
those lists (kube.ListCache).

The report is bounded whatever the cluster holds (the server refuses more: clusters/agent_reports.py):

* ``MAX_NODES`` = 300 objects per sync, inventory objects first; ``MAX_CHILDREN`` = 20 children per
  object (the newest); ``MAX_NAMESPACES`` = 20 namespaces read per sync;
* ``MAX_EVENTS`` = 5 newest events per object, texts cut at ``TEXT_CHARS`` = 300 characters;
* logs of at most ``MAX_LOG_PODS`` = 5 pods per sync, one container each: the last ``LOG_LINES`` = 20
  lines, each cut at ``TEXT_CHARS``, at most ``LOG_BYTES_PER_POD`` = 4 KiB as the API server cuts them
  (limitBytes) and ``MAX_LOG_BYTES`` = 16 KiB per sync.

Log lines go to the server as they are, less control characters (a NUL would make the server refuse the
whole report; escape sequences would garble the page): they are the application's own output, shown to
whoever may read the dashboard, as ``kubectl logs`` shows them to whoever may read pods. An app that logs
its secrets leaks them there too (docs/security.md). The agent's own unauthenticated ``/status`` leaves
them out (server.py); only the upload to the server, with the cluster's agent token, carries them.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import datetime
from enum import StrEnum
from typing import Any

import httpx2
from lightkube.core.exceptions import ApiError

from conveyor.agent import health
from conveyor.agent.kube import Kube, ListCache, NotServed, UnknownKind
from conveyor.agent.objects import ObjectId

MAX_NODES, MAX_CHILDREN, MAX_NAMESPACES = 300, 20, 20
MAX_EVENTS, TEXT_CHARS = 5, 300
MAX_LOG_PODS, LOG_LINES, LOG_BYTES_PER_POD, MAX_LOG_BYTES = 5, 20, 4096, 16384
UNKNOWN = health.HealthStatus.UNKNOWN.value

# owner kind -> the kinds (apiVersion, kind) it creates and owns
OWNS: dict[str, tuple[tuple[str, str], ...]] = {
    "Deployment": (("apps/v1", "ReplicaSet"),),
    "ReplicaSet": (("v1", "Pod"),),
    "StatefulSet": (("v1", "Pod"),),
    "DaemonSet": (("v1", "Pod"),),
    "Job": (("v1", "Pod"),),
    "CronJob": (("batch/v1", "Job"),),
}
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
Errors = (ApiError, httpx2.HTTPError, NotServed, UnknownKind, OSError)


class SyncState(StrEnum):
    """An inventory object against the sync's revision; owned children have none (the cluster made them)."""

    SYNCED = "Synced"  # applied: the live object is what the last reconcile applied or found unchanged
    OUT_OF_SYNC = "OutOfSync"  # the last reconcile could not apply it (named in its error)
    MISSING = "Missing"  # listed in the inventory, absent from the cluster


def clean(text: str) -> str:
    return _CONTROL.sub("", _ESCAPES.sub("", text))[:TEXT_CHARS]


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("metadata") or {}


def _epoch(stamp: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(stamp)).timestamp() if stamp else None
    except ValueError:
        return None


def _live(cache: ListCache, ids: list[ObjectId]) -> dict[ObjectId, dict[str, Any] | None]:
    groups: dict[tuple[str, str, str], list[ObjectId]] = defaultdict(list)
    for oid in ids:
        groups[(oid.api_version, oid.kind, oid.namespace)].append(oid)
    out: dict[ObjectId, dict[str, Any] | None] = {}
    for (api_version, kind, namespace), members in groups.items():
        try:
            if len(members) < 4:
                out.update({oid: cache.get(oid) for oid in members})
                continue
            by_name = {_meta(o).get("name"): o for o in cache.fill(api_version, kind, namespace)}
        except Errors:
            by_name = {}
        out.update({oid: by_name.get(oid.name) for oid in members})
    return out


def _owned(cache: ListCache, namespaces: list[str], owner_kinds: dict[str, set[str]]
           ) -> dict[str, list[dict[str, Any]]]:
    """owner uid -> the objects it controls, newest first, from one list per child kind and namespace."""
    by_owner: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for ns in namespaces:
        wanted: set[tuple[str, str]] = set()
        frontier = set(owner_kinds.get(ns, ()))
        while frontier:  # Deployment -> ReplicaSet -> Pod: the kinds to list, transitively
            new = {c for k in frontier for c in OWNS.get(k, ())} - wanted
            wanted |= new
            frontier = {k for _, k in new}
        for api_version, kind in sorted(wanted):
            try:
                items = cache.fill(api_version, kind, ns)
            except Errors:
                continue
            for obj in items:
                for ref in _meta(obj).get("ownerReferences") or []:
                    if ref.get("controller") and ref.get("uid"):
                        by_owner[str(ref["uid"])].append(obj)
    for children in by_owner.values():
        children.sort(key=lambda o: str(_meta(o).get("creationTimestamp") or ""), reverse=True)
    return by_owner


def _events(cache: ListCache, namespaces: list[str]) -> dict[str, list[dict[str, Any]]]:
    """involved object's uid -> its newest events (at most MAX_EVENTS)."""
    by_uid: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for ns in namespaces:
        try:
            items = cache.fill("v1", "Event", ns)
        except Errors:
            continue
        for ev in items:
            uid = (ev.get("involvedObject") or {}).get("uid")
            if uid:
                at = _epoch(ev.get("lastTimestamp") or ev.get("eventTime") or _meta(ev).get("creationTimestamp"))
                by_uid[str(uid)].append({"type": clean(str(ev.get("type") or "")),
                                         "reason": clean(str(ev.get("reason") or "")),
                                         "message": clean(str(ev.get("message") or "")),
                                         "count": int(ev.get("count") or 1), "at": at})
    for uid, evs in by_uid.items():
        evs.sort(key=lambda e: e["at"] or 0.0, reverse=True)
        by_uid[uid] = evs[:MAX_EVENTS]
    return by_uid


def _health(cache: ListCache, obj: dict[str, Any] | None) -> health.Health:
    if obj is None:
        return health.Health(health.NOT_FOUND, "object not found")
    if _meta(obj).get("deletionTimestamp"):
        return health.Health(health.IN_PROGRESS, "being deleted")
    try:
        return health.evaluate(cache, obj)
    except Errors as exc:
        return health.Health(UNKNOWN, f"{type(exc).__name__}: {exc}")


def _node(oid: ObjectId, parent: str | None, h: health.Health, sync: SyncState | None, why: str,
          events: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": str(oid), "kind": oid.kind, "namespace": oid.namespace, "name": oid.name, "parent": parent,
            "health": h.status, "message": clean(h.message), "sync": sync.value if sync else None,
            "sync_message": clean(why), "events": events, "logs": None}


def observe(kube: Kube, entries: list[ObjectId], out_of_sync: dict[ObjectId, str]) -> list[dict[str, Any]]:
    """The sync's objects as a flat list in breadth-first order (a parent before its children, by id)."""
    cache = ListCache(kube)
    ids = sorted({*entries, *out_of_sync})
    live = _live(cache, ids)
    namespaces = sorted({i.namespace for i in ids if i.namespace})[:MAX_NAMESPACES]
    owner_kinds: dict[str, set[str]] = defaultdict(set)
    for oid in ids:
        owner_kinds[oid.namespace].add(oid.kind)
    owned = _owned(cache, namespaces, owner_kinds)
    events = _events(cache, namespaces)
    nodes: list[dict[str, Any]] = []
    queue: list[tuple[dict[str, Any], str]] = []  # (live object, its node id) whose children are still to add
    pods: list[tuple[dict[str, Any], dict[str, Any], str]] = []  # (pod, its node, its root's id)
    for oid in ids[:MAX_NODES]:
        obj = live.get(oid)
        sync = SyncState.MISSING if obj is None else \
            SyncState.OUT_OF_SYNC if oid in out_of_sync else SyncState.SYNCED
        uid = str(_meta(obj).get("uid")) if obj else ""
        nodes.append(_node(oid, None, _health(cache, obj), sync, out_of_sync.get(oid, ""), events.get(uid, [])))
        if obj is not None:
            queue.append((obj, str(oid)))
    roots = {n["id"]: n["id"] for n in nodes}
    while queue and len(nodes) < MAX_NODES:
        obj, node_id = queue.pop(0)
        for child in owned.get(str(_meta(obj).get("uid")), [])[:MAX_CHILDREN]:
            if len(nodes) >= MAX_NODES:
                break
            cid = ObjectId.of(child)  # (Kube.list puts apiVersion and kind back on listed items)
            node = _node(cid, node_id, _health(cache, child), None, "", events.get(str(_meta(child).get("uid")), []))
            nodes.append(node)
            roots[node["id"]] = roots[node_id]
            queue.append((child, node["id"]))
            if cid.kind == "Pod":
                pods.append((child, node, roots[node_id]))
    _attach_logs(kube, pods)
    return nodes


def _container(pod: dict[str, Any]) -> tuple[str, bool] | None:
    """The container whose log says most: the first not ready (its previous run when it is waiting to
    restart, e.g. CrashLoopBackOff), else the pod's first container."""
    status = pod.get("status") or {}
    for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        state = cs.get("state") or {}
        if cs.get("ready") or (state.get("terminated") or {}).get("exitCode") == 0:
            continue
        return str(cs.get("name")), bool(state.get("waiting")) and int(cs.get("restartCount") or 0) > 0
    containers = (pod.get("spec") or {}).get("containers") or []
    return (str(containers[0].get("name")), False) if containers else None


def _attach_logs(kube: Kube, pods: list[tuple[dict[str, Any], dict[str, Any], str]]) -> None:
    """Log lines for the pods that are not ready, then for the newest pod of each workload, within the caps."""
    newest: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {}
    for entry in pods:  # children come newest first, so the first pod seen under a root is its newest
        newest.setdefault(entry[2], entry)
    not_ready = [e for e in pods if e[1]["health"] != health.CURRENT]
    chosen = not_ready + [e for e in newest.values() if all(e[1] is not n[1] for n in not_ready)]
    budget = MAX_LOG_BYTES
    for pod, node, _root in chosen[:MAX_LOG_PODS]:
        which = _container(pod)
        if which is None or budget <= 0:
            continue
        container, previous = which
        try:
            text = kube.pod_log(node["namespace"], node["name"], container, tail_lines=LOG_LINES,
                                limit_bytes=min(LOG_BYTES_PER_POD, budget), previous=previous)
        except Errors:
            continue  # not started yet, or already gone: no log to show
        lines = [clean(line) for line in text.splitlines()[-LOG_LINES:]]
        budget -= sum(len(line.encode()) for line in lines)
        node["logs"] = {"container": clean(container), "previous": previous, "lines": lines}
