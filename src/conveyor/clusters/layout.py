"""Where a local cluster's files live.

``<data_dir>/clusters/<name>/``::

    cluster.json        the spec (see spec.py)
    kubeconfig          admin kubeconfig (embedded certificates); `conveyor cluster kubeconfig` prints it
    pki/                CA, certificates, service-account keys
    kubeconfigs/        one per component (controller-manager, scheduler, kubelet)
    etcd/               etcd data
    containerd/         containerd root (images, snapshots), config.toml, certs.d/ (registry hosts)
    kubelet/            kubelet root dir, config, resolv.conf (what pods with dnsPolicy Default get);
                        pod-logs/ container logs
    kube-proxy/         kube-proxy config
    cni/                CNI network config
    images/             image archives imported into the node (sandbox, CoreDNS)
    run/                pid files, forwarder.ready
    logs/               one log per process

The node's network namespace is ``/run/netns/conveyor<index>`` (see network.py).

Sockets and containerd's state live under ``/run/conveyor/c<index>/``: Unix socket paths are limited
to 108 bytes and a data dir can be deep.
"""

from __future__ import annotations

from pathlib import Path

from conveyor.clusters.spec import ClusterSpec, clusters_root


def write_if_changed(path: Path, text: str) -> None:
    """Rewrite a configuration file only when its content changes: kube-proxy watches its file and
    exits on any write, even one that leaves the content as it was (measured: "content of the proxy
    server's configuration file was updated"), and containerd's CNI loader reloads on writes too."""
    try:
        if path.read_text() == text:
            return
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


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
    def kube_proxy_config(self) -> Path:
        return self.root / "kube-proxy" / "config.yaml"

    @property
    def resolv_conf(self) -> Path:
        return self.kubelet / "resolv.conf"

    @property
    def images(self) -> Path:
        return self.root / "images"

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
