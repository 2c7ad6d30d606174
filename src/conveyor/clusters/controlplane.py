"""The control plane of a local cluster: etcd, kube-apiserver, kube-controller-manager, kube-scheduler.

Everything listens on 127.0.0.1 only, speaks TLS with the cluster's own CA (etcd included, with
client-certificate authentication), and authorizes with Node + RBAC. The API server advertises the
host gateway (an address inside the node's network namespace where the forwarder listens on the
API port, see network.py), so the `kubernetes` Service's endpoint is one that pods reach: in-cluster
clients (CoreDNS, the agent) use it as in any cluster. Its certificate names that address too.
"""

from __future__ import annotations

from conveyor.clusters import kubeconfig
from conveyor.clusters.binaries import KubeBinaries
from conveyor.clusters.layout import Layout
from conveyor.clusters.pki import ClusterPKI, cluster_cert_specs
from conveyor.clusters.processes import ProcessSpec

ETCD = "etcd"
APISERVER = "kube-apiserver"
CONTROLLER_MANAGER = "kube-controller-manager"
SCHEDULER = "kube-scheduler"
CONTROL_PLANE = (ETCD, APISERVER, CONTROLLER_MANAGER, SCHEDULER)

# component kubeconfigs: file name -> certificate name
_COMPONENT_CERTS = {
    "controller-manager": "controller-manager",
    "scheduler": "scheduler",
    "kubelet": "kubelet-client",
    "kube-proxy": "kube-proxy",
}


def prepare(layout: Layout) -> ClusterPKI:
    """TLS material and kubeconfigs (idempotent: existing files are kept)."""
    spec = layout.spec
    pki = ClusterPKI(layout.pki)
    pki.ensure_ca(spec.name)
    for cert_spec in cluster_cert_specs(spec.node_name, spec.service_ip, spec.node_ip, spec.host_gateway):
        pki.ensure_cert(cert_spec)
    pki.ensure_service_account_keys()
    for component, cert in _COMPONENT_CERTS.items():
        kubeconfig.write(
            layout.component_kubeconfig(component),
            kubeconfig.render(
                cluster=f"conveyor-{spec.name}",
                server=spec.api_url,
                ca=pki.ca_crt,
                user=component,
                cert=pki.crt(cert),
                key=pki.key(cert),
                embed=False,
            ),
        )
    kubeconfig.write(
        layout.kubeconfig,
        kubeconfig.render(
            cluster=f"conveyor-{spec.name}",
            server=spec.api_url,
            ca=pki.ca_crt,
            user=f"conveyor-{spec.name}-admin",
            cert=pki.crt("admin"),
            key=pki.key("admin"),
        ),
    )
    return pki


def process_specs(layout: Layout, bins: KubeBinaries) -> list[ProcessSpec]:
    spec = layout.spec
    p = spec.ports
    pki = ClusterPKI(layout.pki)
    ca = str(pki.ca_crt)
    etcd_url = f"https://127.0.0.1:{p.etcd_client}"
    peer_url = f"http://127.0.0.1:{p.etcd_peer}"
    etcd = ProcessSpec(
        ETCD,
        [
            str(bins[ETCD]),
            f"--name={spec.name}",
            f"--data-dir={layout.etcd_data}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster={spec.name}={peer_url}",
            f"--cert-file={pki.crt('etcd-server')}",
            f"--key-file={pki.key('etcd-server')}",
            f"--trusted-ca-file={ca}",
            "--client-cert-auth=true",
            "--log-level=warn",
            "--snapshot-count=10000",
            "--quota-backend-bytes=2147483648",
        ],
        env={"ETCD_UNSUPPORTED_ARCH": ""},
    )
    apiserver = ProcessSpec(
        APISERVER,
        [
            str(bins[APISERVER]),
            f"--advertise-address={spec.host_gateway}",
            "--bind-address=127.0.0.1",
            f"--secure-port={p.api}",
            f"--etcd-servers={etcd_url}",
            f"--etcd-cafile={ca}",
            f"--etcd-certfile={pki.crt('etcd-client')}",
            f"--etcd-keyfile={pki.key('etcd-client')}",
            f"--tls-cert-file={pki.crt('apiserver')}",
            f"--tls-private-key-file={pki.key('apiserver')}",
            f"--client-ca-file={ca}",
            f"--kubelet-client-certificate={pki.crt('apiserver-kubelet-client')}",
            f"--kubelet-client-key={pki.key('apiserver-kubelet-client')}",
            f"--kubelet-certificate-authority={ca}",
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            f"--service-cluster-ip-range={spec.service_cidr}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=true",
            "--profiling=false",
            "--event-ttl=1h",
        ],
    )
    controller_manager = ProcessSpec(
        CONTROLLER_MANAGER,
        [
            str(bins[CONTROLLER_MANAGER]),
            f"--kubeconfig={layout.component_kubeconfig('controller-manager')}",
            f"--authentication-kubeconfig={layout.component_kubeconfig('controller-manager')}",
            f"--authorization-kubeconfig={layout.component_kubeconfig('controller-manager')}",
            "--bind-address=127.0.0.1",
            f"--secure-port={p.controller_manager}",
            f"--service-account-private-key-file={pki.sa_key}",
            f"--root-ca-file={ca}",
            f"--cluster-signing-cert-file={ca}",
            f"--cluster-signing-key-file={pki.key('ca')}",
            "--use-service-account-credentials=true",
            f"--service-cluster-ip-range={spec.service_cidr}",
            f"--cluster-name=conveyor-{spec.name}",
            "--leader-elect=false",
            "--profiling=false",
            # the default client-side limit (20 requests/s) spaces its ~40 controller starts ~150 ms
            # apart, and no informer syncs before the last one started: ~3 s before the first pod
            "--kube-api-qps=200",
            "--kube-api-burst=400",
        ],
    )
    scheduler = ProcessSpec(
        SCHEDULER,
        [
            str(bins[SCHEDULER]),
            f"--kubeconfig={layout.component_kubeconfig('scheduler')}",
            f"--authentication-kubeconfig={layout.component_kubeconfig('scheduler')}",
            f"--authorization-kubeconfig={layout.component_kubeconfig('scheduler')}",
            "--bind-address=127.0.0.1",
            f"--secure-port={p.scheduler}",
            "--leader-elect=false",
            "--profiling=false",
        ],
    )
    return [etcd, apiserver, controller_manager, scheduler]
