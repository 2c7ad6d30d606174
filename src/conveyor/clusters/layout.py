"""Where a local cluster's files live.

``<data_dir>/clusters/<name>/``::

    cluster.json        the spec (see spec.py)
    kubeconfig          admin kubeconfig (embedded certificates); `conveyor cluster kubeconfig` prints it
    pki/                CA, certificates, service-account keys
    kubeconfigs/        one per component (controller-manager, scheduler, kubelet)
    etcd/               etcd data
    containerd/         containerd root (images, snapshots), config.toml, certs.d/ (registry hosts)
    kubelet/            kubelet root dir, config; pod-logs/ container logs
    cni/                CNI network config
    run/                pid files
    logs/               one log per process

Sockets and containerd's state live under ``/run/conveyor/c<index>/``: Unix socket paths are limited
to 108 bytes and a data dir can be deep.
"""

from __future__ import annotations

from pathlib import Path

from conveyor.clusters.spec import ClusterSpec, clusters_root

RUNTIME_ROOT = Path("/run/conveyor")


class Layout:
    def __init__(self, data_dir: Path, spec: ClusterSpec) -> None:
        self.spec = spec
        self.root = clusters_root(data_dir) / spec.name

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    def component_kubeconfig(self, component: str) -> Path:
        return self.root / "kubeconfigs" / f"{component}.kubeconfig"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def containerd(self) -> Path:
        return self.root / "containerd"

    @property
    def kubelet(self) -> Path:
        return self.root / "kubelet"

    @property
    def cni_conf(self) -> Path:
        return self.root / "cni"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def secrets(self) -> Path:  # external clusters: credentials extracted from the kubeconfig
        return self.root / "credentials"

    @property
    def runtime(self) -> Path:
        return RUNTIME_ROOT / f"c{self.spec.index}"

    @property
    def containerd_socket(self) -> Path:
        return self.runtime / "containerd.sock"

    @property
    def containerd_state(self) -> Path:
        return self.runtime / "containerd"
