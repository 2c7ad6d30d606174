"""Existing clusters registered by kubeconfig: Conveyor only talks to them, never runs them.

``conveyor cluster add NAME --kubeconfig FILE [--context C]`` copies the kubeconfig into the
cluster directory (so later edits or removal of FILE don't change what Conveyor uses) and records
the context. Deleting such a cluster forgets it; the cluster itself is untouched.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from conveyor.clusters import spec as specs
from conveyor.clusters.kubeapi import KubeClient, node_ready
from conveyor.clusters.kubeconfig import Credentials, credentials
from conveyor.clusters.layout import Layout
from conveyor.clusters.spec import ClusterSpec
from conveyor.clusters.state import ClusterStatus
from conveyor.core.errors import Conflict


def add(data_dir: Path, name: str, kubeconfig: Path, context: str | None = None) -> ClusterSpec:
    specs.check_name(name)
    if specs.exists(data_dir, name):
        raise Conflict(f"a cluster named {name!r} exists already", rule="cluster-exists")
    spec = ClusterSpec(name=name, kind=specs.EXTERNAL, phase=specs.READY, context=context)
    layout = Layout(data_dir, spec)
    creds = credentials(kubeconfig, context, layout.secrets)  # validates before anything is kept
    spec.context = creds.context
    layout.root.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(kubeconfig, layout.kubeconfig)
    layout.kubeconfig.chmod(0o600)
    credentials(layout.kubeconfig, spec.context, layout.secrets)
    specs.save(data_dir, spec)
    return spec


def creds_of(data_dir: Path, spec: ClusterSpec) -> Credentials:
    layout = Layout(data_dir, spec)
    return credentials(layout.kubeconfig, spec.context, layout.secrets)


def client(data_dir: Path, spec: ClusterSpec, timeout: float = 10.0) -> KubeClient:
    return KubeClient(creds_of(data_dir, spec), timeout=timeout)


def status(data_dir: Path, spec: ClusterSpec) -> ClusterStatus:
    layout = Layout(data_dir, spec)
    try:
        creds = creds_of(data_dir, spec)
    except Exception as exc:  # noqa: BLE001
        return ClusterStatus(spec.name, spec.kind, "-", f"invalid kubeconfig: {exc}", kubeconfig=str(layout.kubeconfig))
    st = ClusterStatus(spec.name, spec.kind, creds.server, "unreachable", kubeconfig=str(layout.kubeconfig))
    try:
        with KubeClient(creds, timeout=5) as kube:
            if kube.healthy():
                st.state = "reachable"
                st.version = kube.version()
                nodes = kube.nodes()
                st.nodes = f"{sum(1 for n in nodes if node_ready(n))}/{len(nodes)} Ready"
    except Exception:  # noqa: BLE001 - e.g. forbidden to list nodes: still reachable
        pass
    return st
