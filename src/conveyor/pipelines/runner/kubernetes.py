"""The Kubernetes executor: each run a pod in a namespace of a cluster (``kubepod.py`` says what the pod
holds and why), its steps followed one by one through the API server.

The runner talks to the cluster with the credentials of a kubeconfig (``--kubeconfig``, or the one a
local Conveyor cluster has: ``--cluster NAME``); what it needs there is create/get/delete of pods and
secrets, pod logs, in one namespace. A step's log is read from ``pods/log?follow=true`` while its
container runs, masked line by line (the same ``Masker`` as the podman executor) and sent through
the same ``LogBuffer``; its exit code comes from the pod's status.

Stopping: a cancel, a step's timeout or its output limit deletes the pod at once (grace 0), which
stops every container in it; the pod's ``activeDeadlineSeconds`` (the steps' timeouts plus slack)
bounds a pod whose runner died, and a runner starting again deletes the pods and secrets earlier
instances of it left (``sweep``: by the labels runner, server and instance).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from conveyor.clusters import KubeClient, Layout, kubeconfig_credentials
from conveyor.clusters import load as load_cluster
from conveyor.pipelines.process import Outcome, emit_lines
from conveyor.pipelines.runner import kubepod
from conveyor.pipelines.runner.kubepod import LABEL_PREFIX, PodStep, RunPod

log = logging.getLogger("conveyor.runner")
POLL_SECONDS = 0.3
PULL_FAILURES = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
                 "CreateContainerError", "ErrImageNeverPull")


class KubeError(RuntimeError):
    """The cluster refused or failed a request the executor needs (no permission, no namespace)."""


@dataclass(frozen=True)
class KubeTarget:
    """Where runs go: a cluster (its API client factory), a namespace, and how pods see Conveyor."""

    client: Callable[[], KubeClient]
    namespace: str
    pod_server: str  # the server's URL as pods reach it (CONVEYOR_SERVER)
    pod_registry: str  # host:port of Conveyor's registry as the nodes pull from it

    def check(self) -> None:
        """The namespace exists (created if the credentials allow it)."""
        with self.client() as kube:
            r = kube.request("GET", f"/api/v1/namespaces/{self.namespace}")
            if r.status_code == 404:
                r = kube.request("POST", "/api/v1/namespaces",
                                 {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}})
            if r.status_code >= 400 and r.status_code != 409:
                raise KubeError(f"namespace {self.namespace}: {r.status_code} {_reason(r)}")


LOCAL_HOST_NAME = "host.conveyor.internal"  # a local cluster's CoreDNS answers it with the host gateway


def kubeconfig_target(kubeconfig: Path, context: str | None, namespace: str, server: str, secrets_dir: Path,
                      pod_server: str | None = None) -> KubeTarget:
    """A cluster of a kubeconfig; pods reach Conveyor at ``pod_server`` (default: the runner's URL)."""
    creds = kubeconfig_credentials(kubeconfig, context, secrets_dir)
    url = (pod_server or server).rstrip("/")
    return KubeTarget(lambda: KubeClient(creds, timeout=30), namespace, url, urlsplit(url).netloc)


def local_cluster_target(data_dir: Path, name: str, namespace: str, server: str, secrets_dir: Path) -> KubeTarget:
    """A local Conveyor cluster of ``data_dir``: its pods reach the server at host.conveyor.internal and its
    node pulls Conveyor's registry as 127.0.0.1:PORT — both only if the cluster forwards the server's
    port (it does for each ``--registry`` it was created with)."""
    spec = load_cluster(data_dir, name)
    port = urlsplit(server).port
    if port is None or port not in spec.forwarded_ports:
        raise KubeError(f"cluster {name} does not forward the server's port {port} (its registries: "
                        f"{', '.join(spec.registries) or 'none'}); create it with --registry 127.0.0.1:{port}")
    creds = kubeconfig_credentials(Layout(data_dir, spec).kubeconfig, None, secrets_dir)
    return KubeTarget(lambda: KubeClient(creds, timeout=30), namespace, f"http://{LOCAL_HOST_NAME}:{port}",
                      f"127.0.0.1:{port}")


def _reason(r: httpx.Response) -> str:
    try:
        return str(r.json().get("message") or r.text[:300])
    except ValueError:
        return r.text[:300]


def sweep(target: KubeTarget, runner: str, server: str, keep_instance: str) -> int:
    """Delete the pods and secrets earlier instances of this runner (of this server) left behind."""
    selector = (f"{LABEL_PREFIX}/runner={runner[:63]},{LABEL_PREFIX}/server={kubepod.server_key(server)},"
                f"{LABEL_PREFIX}/instance!={keep_instance[:63]}")
    removed = 0
    with target.client() as kube:
        for kind in ("pods", "secrets"):
            base = f"/api/v1/namespaces/{target.namespace}/{kind}"
            r = kube.request("GET", base, params={"labelSelector": selector})
            if r.status_code >= 400:
                raise KubeError(f"listing {kind} in {target.namespace}: {r.status_code} {_reason(r)}")
            for item in r.json().get("items", []):
                kube.request("DELETE", f"{base}/{item['metadata']['name']}", params={"gracePeriodSeconds": "0"})
                removed += kind == "pods"
    return removed


class PodSession:
    """One run's pod from ``create`` to ``delete``."""

    def __init__(self, target: KubeTarget, run: RunPod) -> None:
        self.target, self.run = target, run
        self.kube = target.client()
        self.path = f"/api/v1/namespaces/{run.namespace}/pods/{run.name}"
        self.deleted = False

    def create(self, steps: list[PodStep], source: bytes) -> None:
        base = f"/api/v1/namespaces/{self.run.namespace}"
        for obj in kubepod.secrets(self.run, steps, source):
            self._post(f"{base}/secrets", obj)
        created = self._post(f"{base}/pods", kubepod.pod(self.run, steps))
        # The secrets go with the pod (garbage collection), whoever deletes it.
        owner = {"apiVersion": "v1", "kind": "Pod", "name": self.run.name, "uid": created["metadata"]["uid"]}
        for name in (self.run.name, self.run.pull_secret):
            self.kube.http.patch(f"{base}/secrets/{name}", json={"metadata": {"ownerReferences": [owner]}},
                                 headers={"Content-Type": "application/merge-patch+json"})

    def _post(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        r = self.kube.request("POST", path, obj)
        if r.status_code >= 400:
            raise KubeError(f"creating {obj['kind']} {obj['metadata']['name']}: {r.status_code} {_reason(r)}")
        return dict(r.json())

    def delete(self) -> None:
        """Delete the pod now (grace 0) and its secrets; safe to call twice."""
        base = f"/api/v1/namespaces/{self.run.namespace}"
        self.deleted = True
        for path in (self.path, f"{base}/secrets/{self.run.name}", f"{base}/secrets/{self.run.pull_secret}"):
            try:
                self.kube.request("DELETE", path, params={"gracePeriodSeconds": "0"})
            except httpx.HTTPError as exc:
                log.warning("deleting %s failed: %s (the runner's next start sweeps it)", path, exc)

    def close(self) -> None:
        self.kube.close()

    def status(self, container: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the pod's status, the container's state) — empty when absent."""
        r = self.kube.request("GET", self.path)
        if r.status_code == 404:
            return {"phase": "Gone"}, {}
        r.raise_for_status()
        st = dict(r.json().get("status", {}))
        for cs in st.get("initContainerStatuses", []) + st.get("containerStatuses", []):
            if cs["name"] == container:
                return st, dict(cs.get("state") or {})
        return st, {}

    def follow(self, container: str, timeout: int, *, sink: Callable[[str], None], mask: Callable[[str], str],
               should_cancel: Callable[[], bool], max_output: int, tick: Callable[[], None]) -> Outcome:
        """Wait for ``container`` to start, stream its log to its end, and return how it ended."""
        waited = self._wait_started(container, should_cancel, tick)
        if waited is not None:
            return waited
        reader = _LogReader(self.kube, f"{self.path}/log", container, sink, mask, max_output)
        reader.start()
        started = time.monotonic()
        while reader.is_alive():
            reason = self._stop_reason(should_cancel, started, timeout, reader)
            if reason:
                self.delete()
                reader.join(10)
                return Outcome(None, reason)
            tick()
            reader.join(POLL_SECONDS)
        if reader.over_limit.is_set():
            self.delete()
            return Outcome(None, "output-limit")
        return self._ended(container, should_cancel, tick)

    @staticmethod
    def _stop_reason(should_cancel: Callable[[], bool], started: float, timeout: int,
                     reader: _LogReader) -> str | None:
        if should_cancel():
            return "cancelled"
        if time.monotonic() - started > timeout:
            return "timeout"
        if reader.over_limit.is_set():
            return "output-limit"
        return None

    def _wait_started(self, container: str, should_cancel: Callable[[], bool],
                      tick: Callable[[], None]) -> Outcome | None:
        """None once the container runs (or ran); an Outcome if it never will."""
        while True:
            if should_cancel():
                self.delete()
                return Outcome(None, "cancelled")
            pod, state = self.status(container)
            if "running" in state or "terminated" in state:
                return None
            waiting = state.get("waiting") or {}
            if waiting.get("reason") in PULL_FAILURES:
                self.delete()
                return Outcome(None, "start-failed", f"the container could not start: {waiting['reason']}: "
                                                     f"{waiting.get('message', '')}".strip())
            if pod.get("phase") in ("Failed", "Gone", "Succeeded"):
                return Outcome(None, "start-failed", _pod_ended(pod))
            tick()
            time.sleep(POLL_SECONDS)

    def _ended(self, container: str, should_cancel: Callable[[], bool], tick: Callable[[], None]) -> Outcome:
        """The container's exit code, once the kubelet reports it."""
        while True:
            pod, state = self.status(container)
            if "terminated" in state:
                return Outcome(int(state["terminated"].get("exitCode", 1)), "exited")
            if should_cancel():
                self.delete()
                return Outcome(None, "cancelled")
            if pod.get("phase") in ("Failed", "Gone"):
                reason = "timeout" if pod.get("reason") == "DeadlineExceeded" else "start-failed"
                return Outcome(None, reason, _pod_ended(pod))
            tick()
            time.sleep(POLL_SECONDS)


def _pod_ended(pod: dict[str, Any]) -> str:
    if pod.get("phase") == "Gone":
        return "the run's pod was deleted"
    why = pod.get("reason") or pod.get("phase")
    return f"the run's pod ended ({why}): {pod.get('message', '')}".strip().rstrip(":")


class _LogReader(threading.Thread):
    """Streams one container's log (follow), masks whole lines and hands them to ``sink``."""

    def __init__(self, kube: KubeClient, path: str, container: str, sink: Callable[[str], None],
                 mask: Callable[[str], str], limit: int) -> None:
        super().__init__(daemon=True, name=f"log-{container}")
        self.kube, self.path, self.container = kube, path, container
        self.sink, self.mask, self.limit = sink, mask, limit
        self.total = 0
        self.over_limit = threading.Event()

    def run(self) -> None:
        pending = ""
        try:
            with self.kube.http.stream("GET", self.path, params={"container": self.container, "follow": "true"},
                                       timeout=httpx.Timeout(30.0, read=None)) as r:
                if r.status_code >= 400:
                    self.sink(f"(the container's log could not be read: {r.status_code})\n")
                    return
                for text in r.iter_text():
                    self.total += len(text.encode())
                    if self.total > self.limit:
                        self.over_limit.set()
                        return
                    pending = emit_lines(pending + text, self.sink, self.mask)
        except httpx.HTTPError as exc:
            log.debug("log stream of %s ended: %s", self.container, exc)
        if pending:
            self.sink(self.mask(pending))
