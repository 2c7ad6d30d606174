"""One reconciler per sync: fetch, build, validate, apply, prune, wait for health, report. Then wait.

Like a Flux Kustomization controller: a failed attempt leaves the cluster at its last applied state, sets the
status to Stalled with the reason, and is retried with exponential backoff; a webhook or a newer revision
interrupts the wait.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
from lightkube.core.exceptions import ApiError

from conveyor.agent import agekey, health, observe
from conveyor.agent.apply import Applier, ApplyFailed, Outcome, RevisionInvalid
from conveyor.agent.build import BuildError, build
from conveyor.agent.config import AgentConfig, SyncConfig
from conveyor.agent.inventory import Inventory, ensure_namespace
from conveyor.agent.kube import Kube, NotServed, UnknownKind, api_error_text
from conveyor.agent.metrics import Metrics
from conveyor.agent.objects import ObjectId
from conveyor.agent.reporter import ERROR, FAILURE, PENDING, SUCCESS, Reporter
from conveyor.agent.secrets import DecryptionFailed, decrypt_objects
from conveyor.agent.source import GitSource, SourceError, redact
from conveyor.agent.status import READY, RECONCILING, STALLED, SUSPENDED, StatusBoard
from conveyor.agent.verify import Policy, Verifier, as_dicts

log = logging.getLogger("conveyor.agent")

MAX_BACKOFF = 600.0


class Failure(Exception):
    """A reconcile that ended Stalled: reason (CamelCase, machine readable) and message (for people)."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason, self.message = reason, message
        super().__init__(f"{reason}: {message}")


class Superseded(Exception):
    """A newer revision arrived while waiting for health: stop waiting, reconcile the new one."""


class SyncReconciler:
    def __init__(self, config: AgentConfig, sync: SyncConfig, kube: Kube, board: StatusBoard, metrics: Metrics,
                 reporter: Reporter, verifier: Verifier | None = None) -> None:
        self.config, self.sync, self.kube = config, sync, kube
        self.verifier = verifier
        self.board, self.metrics, self.reporter = board, metrics, reporter
        self.source = GitSource(sync.url, sync.branch, config.state_dir / "sources" / sync.name,
                                token=sync.git_token(config.forge))
        self.applier = Applier(kube)
        self.inventory = Inventory(kube, config.inventory_namespace, sync.name)
        self.trigger = threading.Event()
        self.failures = 0
        self.on_apply_start: Callable[[str], None] | None = None  # benchmarks: merge-to-apply-start latency
        self._reported: dict[str, str] = {}
        self.entries: list[ObjectId] | None = None  # the inventory as last applied (None: read it from the cluster)
        self.out_of_sync: dict[ObjectId, str] = {}  # objects the last reconcile could not apply, and why

    # ---- status helpers ------------------------------------------------------------------

    def _event(self, reason: str, message: str) -> None:
        log.info("%s: %s: %s", self.sync.name, reason, message)
        self.board.event(self.sync.name, reason, message)

    def _report(self, revision: str, state: str, description: str) -> None:
        key = f"{state}:{description}"
        if self._reported.get(revision) == key:
            return
        if self.reporter.report(self.sync.forge_repo(), revision, self.sync.name, state, description):
            self._reported[revision] = key

    # ---- one reconcile -------------------------------------------------------------------

    def dependencies_ready(self) -> list[str]:
        return [d for d in self.sync.depends_on if not self.board.get(d).ready]

    def reconcile(self) -> bool:
        """One attempt. True when the sync ended Ready."""
        name = self.sync.name
        self.trigger.clear()
        if self.sync.suspend:
            self.board.update(name, state=SUSPENDED, reason="Suspended", message="sync is suspended")
            return False
        waiting_for = self.dependencies_ready()
        if waiting_for:
            self.board.update(name, state=RECONCILING, reason="DependencyNotReady",
                              message=f"waiting for {', '.join(waiting_for)} to be Ready")
            return False
        started = time.monotonic()
        result = "success"
        try:
            self._reconcile()
            self.failures = 0
            return True
        except Failure as exc:
            result = "failure"
            self.failures += 1
            self.metrics.inc("conveyor_agent_failures_total", name)
            self.board.update(name, state=STALLED, reason=exc.reason, message=exc.message, last_error=exc.message)
            self._event(exc.reason, exc.message)
            return False
        except Superseded:
            result = "superseded"
            self.trigger.set()
            return False
        finally:
            self.board.update(name, last_reconcile_at=time.time())
            self.metrics.observe(name, result, time.monotonic() - started)
            self.metrics.inc("conveyor_agent_reconciles_total", name, result=result)
            self.metrics.set_ready(name, self.board.get(name).ready)

    def _reconcile(self) -> None:
        name = self.sync.name
        try:
            artifact = self.source.fetch()
        except SourceError as exc:
            raise Failure("GitOperationFailed", f"{redact(self.sync.url)} ({self.sync.branch}): {exc}") from exc
        revision = artifact.revision
        previous = self.board.get(name)
        new_revision = revision != previous.last_applied_revision
        self.board.update(name, last_attempted_revision=revision)
        if new_revision or previous.state != READY:
            self.board.update(name, state=RECONCILING, reason="Progressing", message=f"applying {revision[:12]}")
        try:
            objects = build(artifact.root, self.sync.path)
        except BuildError as exc:
            self._report(revision, FAILURE, f"build failed: {exc}")
            raise Failure("BuildFailed", str(exc)) from exc
        objects = self._decrypt(objects, revision)
        self._verify(objects, revision)
        if new_revision:
            self._report(revision, PENDING, f"applying {revision[:12]} to {self.config.cluster.name}")
        if self.on_apply_start:
            self.on_apply_start(revision)
        try:
            outcome, entries = self._apply(objects, revision)
        except RevisionInvalid as exc:
            self.out_of_sync = {e.id: e.message for e in exc.errors}
            first = exc.errors[0]
            self._report(revision, FAILURE, f"{first.id} invalid: {first.message}")
            raise Failure("ValidationFailed", str(exc)) from exc
        except ApplyFailed as exc:
            self.out_of_sync = {exc.error.id: exc.error.message}
            self._report(revision, FAILURE, f"{exc.error.id}: {exc.error.message}")
            raise Failure("ApplyFailed", str(exc)) from exc
        except UnknownKind as exc:
            self._report(revision, FAILURE, str(exc))
            raise Failure("ValidationFailed", str(exc)) from exc
        except (httpx2.TransportError, OSError) as exc:
            raise Failure("ClusterUnreachable", f"{type(exc).__name__}: {exc}") from exc
        except (ApiError, httpx2.HTTPError, NotServed) as exc:
            text = api_error_text(exc) if isinstance(exc, ApiError) else str(exc)
            self._report(revision, FAILURE, text)
            raise Failure("ApplyFailed", text) from exc

        written = outcome.written
        if written:
            if not new_revision:
                self.metrics.inc("conveyor_agent_drift_corrections_total", name, len(written))
                drifted = [str(o) for o in written]
                self.board.update(name, drifted=drifted)
                self._event("DriftCorrected", f"re-applied {len(drifted)} drifted object(s): {', '.join(drifted)}")
            else:
                self._event("Applied", f"{revision[:12]}: {len(outcome.created)} created, "
                                       f"{len(outcome.configured)} configured, {len(outcome.recreated)} recreated, "
                                       f"{outcome.unchanged} unchanged")
            self.metrics.inc("conveyor_agent_applies_total", name, len(written))
        if outcome.pruned:
            self.metrics.inc("conveyor_agent_prunes_total", name, len(outcome.pruned))
            self._event("Pruned", ", ".join(str(o) for o in outcome.pruned))
        self.entries, self.out_of_sync = entries, {}
        self.board.update(name, inventory=[str(e) for e in entries])

        try:
            self._wait_healthy(entries, revision)
        except Failure as exc:
            self._report(revision, FAILURE, exc.message)
            raise
        self.board.update(name, state=READY, reason="ReconciliationSucceeded",
                          message=f"applied revision {revision}", last_applied_revision=revision,
                          last_error=None, last_success_at=time.time(),
                          **({} if written and not new_revision else {"drifted": []}))
        self._report(revision, SUCCESS, f"{revision[:12]} applied and healthy on {self.config.cluster.name}")

    def _decrypt(self, objects: list[dict[str, Any]], revision: str) -> list[dict[str, Any]]:
        """The revision's encrypted Secrets, opened in memory with the cluster's age key (secrets.py)."""
        try:
            return decrypt_objects(objects, lambda: agekey.identities(self.kube, self.config.inventory_namespace))
        except DecryptionFailed as exc:
            names = ", ".join(label for label, _ in exc.failures)
            self._report(revision, FAILURE, f"refused: cannot decrypt {names}")
            raise Failure("DecryptionFailed", f"revision {revision[:12]} refused, nothing applied: {exc}") from exc
        except (ApiError, httpx2.HTTPError, OSError) as exc:
            raise Failure("ClusterUnreachable", f"reading the cluster's age key: {exc}") from exc

    def _verify(self, objects: list[dict[str, Any]], revision: str) -> None:
        """Signatures of the revision's Conveyor-built images, before anything of it is applied."""
        if self.verifier is None or self.sync.verify == Policy.OFF:
            return
        results = self.verifier.check(objects)
        self.board.update(self.sync.name, signatures=as_dicts(results))
        failed = [r for r in results if r.failed]
        if not failed:
            return
        what = "; ".join(r.message for r in failed)
        if self.sync.verify == Policy.WARN:
            self._event("SignatureWarning", f"{revision[:12]}: applied anyway (verify: warn): {what}")
            return
        first = failed[0]
        self._report(revision, FAILURE, f"refused: image {first.image} failed signature verification "
                                        f"({first.result}): {first.message}")
        raise Failure("VerificationFailed", f"revision {revision[:12]} refused, nothing applied: {what}")

    def _apply(self, objects: list[dict[str, Any]], revision: str) -> tuple[Outcome, list[ObjectId]]:
        ensure_namespace(self.kube, self.config.inventory_namespace)
        if self.sync.target_namespace:
            ensure_namespace(self.kube, self.sync.target_namespace)
        objects_n = self.applier.normalize(objects, self.sync.target_namespace)
        if self.sync.create_namespaces:
            for ns in missing_namespaces(objects_n):
                ensure_namespace(self.kube, ns)
        entries = [ObjectId.of(o) for o in objects_n]
        planned = self.applier.validate(objects_n)
        old, inventory_revision = self.inventory.read()
        # recorded before writing: whatever a kill -9 interrupts is still listed for the next prune
        union = list({*old, *entries})
        if set(union) != set(old):
            self.inventory.write(union, revision)
        outcome, _changed = self.applier.execute(planned)
        if self.sync.prune:
            self.applier.prune(old, entries, outcome)
        if set(entries) != set(old) or inventory_revision != revision:
            self.inventory.write(entries if self.sync.prune else union, revision)
        return outcome, entries

    def _wait_healthy(self, entries: list[ObjectId], revision: str) -> None:
        if self.sync.wait:
            targets = entries
        elif self.sync.health_checks:
            targets = [ObjectId(h.api_version, h.kind, h.namespace or "", h.name) for h in self.sync.health_checks]
        else:
            return
        deadline = time.monotonic() + self.sync.timeout
        next_remote_check = time.monotonic() + min(self.sync.interval, 30.0)
        pending = list(targets)
        while True:
            still: list[ObjectId] = []
            last = ""
            for oid in pending:
                try:
                    h = health.check(self.kube, oid)
                except (ApiError, httpx2.HTTPError, OSError) as exc:
                    still.append(oid)
                    last = f"{oid}: {exc}"
                    continue
                if h.status == health.FAILED:
                    raise Failure("HealthCheckFailed", f"{oid}: {h.message}")
                if h.status != health.CURRENT:
                    still.append(oid)
                    last = f"{oid}: {h.status} {h.message}"
            if not still:
                return
            pending = still
            self.board.update(self.sync.name, state=RECONCILING, reason="Progressing",
                              message=f"waiting for {len(pending)} object(s): {last}")
            if time.monotonic() > deadline:
                raise Failure("HealthCheckFailed", f"timeout after {self.sync.timeout:.0f}s; {last}")
            signalled = self.trigger.wait(1.0)
            if signalled or time.monotonic() > next_remote_check:
                next_remote_check = time.monotonic() + min(self.sync.interval, 30.0)
                try:
                    newer = self.source.remote_revision() != revision
                except SourceError:
                    newer = signalled  # cannot ask git: trust the webhook
                if newer:
                    self._event("Superseded", f"a newer revision is on {self.sync.branch}: stop waiting on "
                                              f"{revision[:12]}")
                    self._report(revision, ERROR, "superseded by a newer revision before it became healthy")
                    raise Superseded()
                self.trigger.clear()

    def observe(self) -> None:
        """Put the live tree of the sync's objects (observe.py) on the status board, for the dashboard."""
        try:
            if self.entries is None:
                self.entries = self.inventory.read()[0]
            objects = observe.observe(self.kube, self.entries, self.out_of_sync)
        except (ApiError, httpx2.HTTPError, OSError, NotServed, UnknownKind) as exc:
            log.debug("%s: objects not observed: %s", self.sync.name, exc)
            return
        self.board.update(self.sync.name, objects=objects)

    # ---- the loop ------------------------------------------------------------------------

    def next_delay(self, ready: bool) -> float:
        if ready or self.failures == 0:
            return self.sync.interval
        return float(min(self.sync.retry_seconds * 2 ** (self.failures - 1), MAX_BACKOFF))

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                ready = self.reconcile()
            except Exception as exc:  # noqa: BLE001 - the loop must survive anything and report it
                log.exception("%s: unexpected error", self.sync.name)
                self.failures += 1
                self.board.update(self.sync.name, state=STALLED, reason="InternalError", message=str(exc),
                                  last_error=str(exc))
                ready = False
            if self.trigger.is_set():
                continue
            delay = self.next_delay(ready)
            if not ready and self.dependencies_ready():
                delay = min(delay, 2.0)
            self.trigger.wait(delay)


def state_path(config: AgentConfig) -> Path:
    return config.state_dir / "status.json"


def missing_namespaces(objects: list[dict[str, Any]]) -> list[str]:
    """Namespaces objects of the revision live in that the revision itself does not define."""
    defined = {o["metadata"]["name"] for o in objects if o.get("kind") == "Namespace" and o.get("apiVersion") == "v1"}
    used = {str(ns) for o in objects if (ns := (o.get("metadata") or {}).get("namespace"))}
    return sorted(used - defined)
