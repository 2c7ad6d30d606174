"""kube-proxy of a local cluster: iptables mode, inside the node's network namespace (network.py).

Settings and why:

* ``mode: iptables``: Debian's iptables 1.8.9 (nf_tables backend) is installed; kube-proxy's
  nftables mode would need the ``nft`` binary, which these machines do not have.
* ``nodePortAddresses: [primary]``: NodePorts answer on the node IP only (the veth end the host
  routes to), not on the bridge address where the forwarder listens for host ports.
* ``localhostNodePorts: false``: no ``route_localnet`` and no NodePorts on the node's 127.0.0.1,
  where forwarded host ports live.
* ``conntrack``: every limit and timeout 0 = "leave as is". ``nf_conntrack_max`` is one value for
  the whole machine; a cluster must not change it for the host and the other clusters.
* ``oomScoreAdj: 0``: root here lacks CAP_SYS_RESOURCE and cannot lower OOM scores (see node.py).
* the kubeconfig says ``https://127.0.0.1:API``, which inside the namespace is the forwarder.
"""

from __future__ import annotations

import yaml

from conveyor.clusters.binaries import KubeBinaries
from conveyor.clusters.layout import Layout, write_if_changed
from conveyor.clusters.processes import ProcessSpec

KUBE_PROXY = "kube-proxy"


def config(layout: Layout) -> dict[str, object]:
    spec = layout.spec
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(layout.component_kubeconfig("kube-proxy"))},
        "mode": "iptables",
        "clusterCIDR": spec.pod_subnet,
        "detectLocalMode": "ClusterCIDR",
        "hostnameOverride": spec.node_name,
        "bindAddress": spec.node_ip,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "nodePortAddresses": ["primary"],
        "oomScoreAdj": 0,
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
            "udpTimeout": "0s",
            "udpStreamTimeout": "0s",
        },
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False, "syncPeriod": "30s",
                     "minSyncPeriod": "0s"},
    }


def prepare(layout: Layout) -> None:
    write_if_changed(layout.kube_proxy_config, yaml.safe_dump(config(layout)))


def process_spec(layout: Layout, bins: KubeBinaries) -> ProcessSpec:
    return ProcessSpec(
        KUBE_PROXY,
        [str(bins[KUBE_PROXY]), f"--config={layout.kube_proxy_config}", "--v=1"],
        netns=layout.spec.netns,
    )
