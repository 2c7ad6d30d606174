"""Validate a whole revision with a server-side dry run, then apply it in stages with server-side apply.

Stage one holds CustomResourceDefinitions and Namespaces; the rest of the revision may need them, so objects
whose dry run fails only because their namespace or kind comes from stage one are validated again right after
stage one is established (what Flux does). Every other object is validated before anything is written: one
invalid object means nothing of the revision is applied.

The dry run is also the diff: an object whose dry-run result equals the live object would not change and is not
written, which keeps unchanged re-reconciles cheap, and is how drift (someone edited a field the agent owns) is
found.

An object is not even dry-run when its manifest is the one last applied and the agent's own managedFields entry
(the fields it owns) and the object's uid are as they were then: a field the agent owns that anyone else changes
(an Update such as ``kubectl edit``/``patch``, or a forced apply) or removes leaves the agent's entry, and a
deleted and recreated object has a new uid. Before, the mark was the resourceVersion, which every status
write of a controller moves: the first re-reconcile after a cold apply of the benchmark's 500 objects dry-ran
all 150 Deployments again (1.19 s; the deployment controller also writes their revision annotation).

Concurrency, measured with benchmarks/agent_apply.py's 500 objects on this 2-core machine (load 4-8): both the
dry runs and the writes of a stage do go in parallel (7.7-7.9 requests in flight on average with 8 workers),
but a create costs ~100 ms of which most is waiting for etcd's commit, which batches concurrent writes: the
writes took 6.3 s with 8 workers, 3.2 with 16, 2.6 with 32. Dry runs do not touch etcd and are bound by the
API server's CPU (1.5-3.6 s with 8 workers, no better with 32). Hence ``workers`` = 16 for reads and dry runs
and ``write_workers`` = 32 for writes (the HTTP pool keeps 20 connections alive; the rest are re-opened).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from lightkube.core.exceptions import ApiError

from conveyor.agent import health
from conveyor.agent.kube import Kube, NotServed, UnknownKind, api_error_text
from conveyor.agent.objects import (
    FIELD_MANAGER,
    FORCE_ANNOTATION,
    PRUNE_ANNOTATION,
    ObjectId,
    annotation,
    is_stage_one,
)

T = TypeVar("T")
R = TypeVar("R")

VOLATILE_METADATA = ("managedFields", "resourceVersion", "generation")


@dataclass(frozen=True)
class ObjectError:
    id: ObjectId
    message: str

    def __str__(self) -> str:
        return f"{self.id}: {self.message}"


class RevisionInvalid(Exception):
    """Validation failed: nothing (or, for objects depending on stage one, nothing further) was applied."""

    def __init__(self, errors: list[ObjectError]) -> None:
        self.errors = errors
        head = "; ".join(str(e) for e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        super().__init__(f"{len(errors)} invalid object(s), nothing applied: {head}{more}")


class ApplyFailed(Exception):
    def __init__(self, error: ObjectError) -> None:
        self.error = error
        super().__init__(str(error))


@dataclass
class Outcome:
    created: list[ObjectId] = field(default_factory=list)
    configured: list[ObjectId] = field(default_factory=list)
    recreated: list[ObjectId] = field(default_factory=list)
    unchanged: int = 0
    pruned: list[ObjectId] = field(default_factory=list)
    prune_skipped: list[ObjectId] = field(default_factory=list)

    @property
    def written(self) -> list[ObjectId]:
        return self.created + self.configured + self.recreated


@dataclass
class _Planned:
    obj: dict[str, Any]
    id: ObjectId
    dry: dict[str, Any] | None = None
    live: dict[str, Any] | None = None
    recreate: bool = False
    deferred: bool = False
    known: bool = False  # same manifest, live object untouched since we last saw it: no dry run needed

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.obj, sort_keys=True).encode()).hexdigest()

    @property
    def changed(self) -> bool:
        if self.known:
            return False
        return self.live is None or self.recreate or comparable(self.dry) != comparable(self.live)


def comparable(obj: dict[str, Any] | None) -> Any:
    """An object as compared for "changed": without volatile metadata and status."""
    if obj is None:
        return None
    out = dict(obj)
    out["metadata"] = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in VOLATILE_METADATA}
    out.pop("status", None)
    return out


def ownership(obj: dict[str, Any] | None) -> str | None:
    """The object's uid and the agent's own managedFields entries (what it owns, without their times):
    unchanged as long as nobody else changed, took or removed a field the agent applied."""
    meta = (obj or {}).get("metadata") or {}
    mine = [{k: v for k, v in m.items() if k != "time"} for m in meta.get("managedFields") or []
            if m.get("manager") == FIELD_MANAGER and m.get("operation") == "Apply"]
    if not meta.get("uid") or not mine:
        return None
    return json.dumps([meta["uid"], sorted(mine, key=lambda m: json.dumps(m, sort_keys=True))], sort_keys=True)


def _immutable(message: str) -> bool:
    return "immutable" in message.lower()


class Applier:
    def __init__(self, kube: Kube, workers: int = 16, write_workers: int = 32) -> None:
        self.kube = kube
        self.workers, self.write_workers = workers, write_workers
        self._seen: dict[ObjectId, tuple[str, str]] = {}  # id -> (manifest digest, ownership fingerprint)
        self._seen_lock = threading.Lock()

    def _remember(self, p: _Planned, result: dict[str, Any] | None) -> None:
        mark = ownership(result)
        with self._seen_lock:
            if mark:
                self._seen[p.id] = (p.digest, mark)
            else:
                self._seen.pop(p.id, None)

    def _is_known(self, p: _Planned) -> bool:
        mark = ownership(p.live)
        with self._seen_lock:
            return mark is not None and self._seen.get(p.id) == (p.digest, mark)

    def _parallel(self, fn: Callable[[T], R], items: Iterable[T], workers: int | None = None) -> list[R]:
        items = list(items)
        if len(items) <= 1:
            return [fn(i) for i in items]
        with ThreadPoolExecutor(max_workers=workers or self.workers) as pool:
            return list(pool.map(fn, items))

    # ---- preparation ---------------------------------------------------------------------

    def normalize(self, objects: list[dict[str, Any]], target_namespace: str | None) -> list[dict[str, Any]]:
        """Learn the revision's CRDs, put namespaced objects in a namespace, keep cluster objects out of one."""
        for obj in objects:
            if obj["kind"] == "CustomResourceDefinition":
                self.kube.kinds.learn_crd(obj)
        out = []
        errors = []
        for obj in objects:
            obj = dict(obj)
            meta = dict(obj.get("metadata") or {})
            try:
                namespaced = self.kube.kinds.namespaced(obj["apiVersion"], obj["kind"])
            except UnknownKind as exc:
                errors.append(ObjectError(ObjectId.of(obj), str(exc)))
                continue
            if namespaced:
                meta["namespace"] = target_namespace or meta.get("namespace") or "default"
            else:
                meta.pop("namespace", None)
            obj["metadata"] = meta
            out.append(obj)
        if errors:
            raise RevisionInvalid(errors)
        return out

    # ---- dry run -------------------------------------------------------------------------

    def _dry_run(self, p: _Planned, stage_one_namespaces: set[str], stage_one_kinds: set[tuple[str, str]]
                 ) -> ObjectError | None:
        try:
            p.dry = self.kube.apply(p.obj, dry_run=True)
            return None
        except NotServed as exc:
            if (p.id.api_version, p.id.kind) in stage_one_kinds:
                p.deferred = True
                return None
            return ObjectError(p.id, str(exc))
        except ApiError as exc:
            message = api_error_text(exc)
            details = exc.status.details
            if exc.status.code == 404 and details is not None and details.kind == "namespaces" \
                    and details.name in stage_one_namespaces:
                p.deferred = True
                return None
            if exc.status.code == 404 and (p.id.api_version, p.id.kind) in stage_one_kinds:
                p.deferred = True
                return None
            if _immutable(message):
                if annotation(p.obj, FORCE_ANNOTATION) == "true":
                    p.recreate = True
                    return None
                return ObjectError(p.id, f"immutable field changed ({message}); set annotation "
                                         f"{FORCE_ANNOTATION}: \"true\" on the object to delete and recreate it")
            return ObjectError(p.id, message)

    def _live(self, planned: list[_Planned]) -> None:
        """Fetch live objects with one list per kind and namespace rather than one GET per object."""
        groups: dict[tuple[str, str, str], list[_Planned]] = {}
        for p in planned:
            groups.setdefault((p.id.api_version, p.id.kind, p.id.namespace), []).append(p)

        def fetch(key: tuple[str, str, str]) -> None:
            api_version, kind, namespace = key
            members = groups[key]
            try:
                if len(members) < 4:
                    for p in members:
                        p.live = self.kube.get(p.id)
                    return
                live = {o["metadata"]["name"]: o for o in self.kube.list(api_version, kind, namespace or None)}
            except NotServed:  # a kind whose CRD is still to come in stage one
                live = {}
            for p in members:
                p.live = live.get(p.id.name)

        self._parallel(fetch, list(groups))

    def plan(self, objects: list[dict[str, Any]]) -> list[_Planned]:
        planned = [_Planned(o, ObjectId.of(o)) for o in objects]
        stage_one_namespaces = {p.id.name for p in planned if p.id.kind == "Namespace"}
        stage_one_kinds: set[tuple[str, str]] = set()
        for p in planned:
            if p.id.kind == "CustomResourceDefinition":
                spec = p.obj.get("spec") or {}
                for v in spec.get("versions") or []:
                    kind = str((spec.get("names") or {}).get("kind"))
                    stage_one_kinds.add((f"{spec.get('group')}/{v.get('name')}", kind))
        self._live(planned)
        for p in planned:
            p.known = self._is_known(p)
        unknown = [p for p in planned if not p.known]
        errors = [e for e in self._parallel(
            lambda p: self._dry_run(p, stage_one_namespaces, stage_one_kinds), unknown) if e]
        if errors:
            raise RevisionInvalid(sorted(errors, key=lambda e: e.id))
        for p in unknown:
            if not p.deferred and not p.changed:
                self._remember(p, p.live)
        return planned

    # ---- apply ---------------------------------------------------------------------------

    def _write(self, p: _Planned, outcome: Outcome) -> None:
        try:
            if p.recreate:
                self.kube.delete(p.id)
                deadline = time.monotonic() + 120
                while self.kube.get(p.id) is not None:
                    if time.monotonic() > deadline:
                        raise ApplyFailed(ObjectError(p.id, "timed out waiting for deletion before recreating"))
                    time.sleep(0.2)
                self._remember(p, self.kube.apply(p.obj))
                outcome.recreated.append(p.id)
            else:
                self._remember(p, self.kube.apply(p.obj))
                (outcome.created if p.live is None else outcome.configured).append(p.id)
        except ApiError as exc:
            self._remember(p, None)
            raise ApplyFailed(ObjectError(p.id, api_error_text(exc))) from exc

    def _apply_stage(self, stage: list[_Planned], outcome: Outcome) -> None:
        changed = [p for p in stage if p.changed]
        outcome.unchanged += len(stage) - len(changed)
        self._parallel(lambda p: self._write(p, outcome), changed, self.write_workers)

    def _wait_established(self, stage: list[_Planned], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for p in stage:
            while True:
                h = health.check(self.kube, p.id)
                if h.status == health.CURRENT:
                    break
                if time.monotonic() > deadline:
                    raise ApplyFailed(ObjectError(p.id, f"not established after {timeout:.0f}s: {h.message}"))
                time.sleep(0.2)
            if p.id.kind == "CustomResourceDefinition":
                self.kube.kinds.learn_crd(p.obj)

    def validate(self, objects: list[dict[str, Any]]) -> list[_Planned]:
        """Dry-run the whole (normalized) revision; raises RevisionInvalid before anything is written."""
        return self.plan(objects)

    def execute(self, planned: list[_Planned]) -> tuple[Outcome, list[ObjectId]]:
        """Apply a validated revision in stages; returns the outcome and the ids of objects that changed."""
        outcome = Outcome()
        one = [p for p in planned if is_stage_one(p.id)]
        two = [p for p in planned if not is_stage_one(p.id)]
        self._apply_stage(one, outcome)
        self._wait_established([p for p in one if p.changed])
        deferred = [p for p in two if p.deferred]
        if deferred:
            for p in deferred:
                p.deferred = False
            self._live(deferred)
            errors = [e for e in self._parallel(lambda p: self._dry_run(p, set(), set()), deferred) if e]
            if errors:
                raise RevisionInvalid(sorted(errors, key=lambda e: e.id))
        changed_ids = [p.id for p in planned if p.changed]
        self._apply_stage(two, outcome)
        return outcome, changed_ids

    def apply(self, objects: list[dict[str, Any]], target_namespace: str | None = None
              ) -> tuple[Outcome, list[ObjectId]]:
        return self.execute(self.validate(self.normalize(objects, target_namespace)))

    # ---- prune ---------------------------------------------------------------------------

    def prune(self, old: list[ObjectId], keep: list[ObjectId], outcome: Outcome) -> None:
        """Delete what the inventory holds and the revision no longer does; nothing else is ever touched."""
        gone = [o for o in old if not any(o.same_object(k) for k in keep)]
        # namespaces and CRDs last: deleting them first would take their contents with them unrecorded
        gone.sort(key=lambda o: (is_stage_one(o), o))

        def one(oid: ObjectId) -> None:
            try:
                live = self.kube.get(oid)
            except UnknownKind:
                return
            if live is None:
                return
            if annotation(live, PRUNE_ANNOTATION) == "disabled":
                outcome.prune_skipped.append(oid)
                return
            if self.kube.delete(oid):
                outcome.pruned.append(oid)

        self._parallel(one, [o for o in gone if not is_stage_one(o)])
        for oid in gone:
            if is_stage_one(oid):
                one(oid)
