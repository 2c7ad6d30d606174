"""A local cluster's node network: a network namespace of its own, joined to the host by a veth pair.

Why: kind isolates each node in a container; here the node is a handful of processes, and the part
of a container that networking needs is its network namespace. kube-proxy's iptables chains have
fixed names (``KUBE-SERVICES`` ...), so two clusters in one namespace would overwrite each other's
rules; inside its own namespace each cluster's kube-proxy owns the whole table, and deleting the
namespace deletes its rules, its pods' veths and its bridge in one step. containerd, the kubelet,
kube-proxy (and so every pod's sandbox) run in it; the control plane stays on host loopback.

For cluster index ``i`` (spec.py has the properties)::

    host namespace                              node namespace  conveyor<i>
    cnv<i>h  10.(200+i).254.1/30 ----- veth ---- eth0      10.(200+i).254.2/30  node IP, NodePorts
    route 10.(200+i).0.0/24 via .254.2           cnv<i>br  10.(200+i).0.1/24    pods' gateway = host gateway
    route 10.(150+i).0.0/24 via .254.2           lo        127.0.0.1            the node's view of host ports

The host can reach the node IP (NodePorts, the kubelet for logs/exec/port-forward), pod IPs (the
API server's service proxy) and ClusterIPs. The node's namespace has no default route, and one rule
in its own filter table rejects new connections from pods to the host's end of the link, so pods
reach the host only through the forwarder. The host gets no firewall rule and no sysctl change:
the host's rules and every other cluster's stay untouched.

The forwarder (core/netns.py) is one supervised host process per cluster. It listens, inside the
node's namespace, on 127.0.0.1:P (the kubelet and kube-proxy reach the API server as
``https://127.0.0.1:API``, containerd pulls ``127.0.0.1:REGISTRY/...`` with the same image names
as everywhere else) and on the host gateway's P (pods; the ``kubernetes`` Service's endpoint is
host-gateway:API), and dials 127.0.0.1:P on the host, for each P of ``spec.forwarded_ports``.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from conveyor.clusters.layout import Layout
from conveyor.clusters.processes import ProcessGroup, ProcessSpec, kill_pids
from conveyor.clusters.spec import ClusterSpec
from conveyor.core import netns
from conveyor.core.errors import ConveyorError

FORWARDER = "forwarder"
NODE_LINK = "eth0"  # the node's end of the veth pair, named as in a kind node


class NetworkError(ConveyorError):
    status = 500
    title = "Node network setup failed"


def _ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = ["ip", *(["-n", ns] if ns else []), *args]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and out.returncode != 0:
        raise NetworkError(f"{' '.join(argv)} failed: {out.stderr.strip()}", rule="node-network")
    return out


def _link_exists(name: str, ns: str | None = None) -> bool:
    return _ip("link", "show", name, ns=ns, check=False).returncode == 0


def _ensure_link(spec: ClusterSpec) -> None:
    if _link_exists(spec.host_veth) and not _link_exists(NODE_LINK, ns=spec.netns):
        _ip("link", "del", spec.host_veth)  # its peer is in an older namespace of the same name
    if not _link_exists(spec.host_veth):
        _ip("link", "add", spec.host_veth, "type", "veth", "peer", "name", NODE_LINK, "netns", spec.netns)
    _ip("addr", "replace", f"{spec.host_link_ip}/30", "dev", spec.host_veth)
    _ip("link", "set", spec.host_veth, "up")
    _ip("addr", "replace", f"{spec.node_ip}/30", "dev", NODE_LINK, ns=spec.netns)
    _ip("link", "set", NODE_LINK, "up", ns=spec.netns)


def _ensure_bridge(spec: ClusterSpec) -> None:
    """The pods' bridge, made before CNI would make it so the host gateway has its address early."""
    if not _link_exists(spec.bridge, ns=spec.netns):
        _ip("link", "add", spec.bridge, "type", "bridge", ns=spec.netns)
    _ip("addr", "replace", f"{spec.pod_gateway}/24", "dev", spec.bridge, ns=spec.netns)
    _ip("link", "set", spec.bridge, "up", ns=spec.netns)


def _isolation_rule(spec: ClusterSpec) -> list[str]:
    return ["FORWARD", "-i", spec.bridge, "-o", NODE_LINK, "-m", "conntrack", "--ctstate", "NEW",
            "-m", "comment", "--comment", "conveyor: pods reach the host only via forwarded ports", "-j", "REJECT"]


def _ensure_isolation(spec: ClusterSpec) -> None:
    rule = _isolation_rule(spec)
    present = netns.run(spec.netns, ["iptables", "-w", "5", "-C", *rule], capture_output=True)
    if present.returncode != 0:
        added = netns.run(spec.netns, ["iptables", "-w", "5", "-I", *rule], capture_output=True, text=True)
        if added.returncode != 0:
            raise NetworkError(f"cannot add the node's isolation rule: {added.stderr.strip()}", rule="node-network")


def remove_legacy_bridge(spec: ClusterSpec) -> None:
    """Clusters made before nodes had namespaces kept their bridge in the host's namespace."""
    if _link_exists(spec.bridge):
        _ip("link", "del", spec.bridge, check=False)


def ensure(spec: ClusterSpec) -> None:
    """Namespace, veth pair, addresses, bridge, routes, sysctls and the isolation rule (idempotent)."""
    netns.create(spec.netns)
    remove_legacy_bridge(spec)
    _ensure_link(spec)
    _ensure_bridge(spec)
    for subnet in (spec.pod_subnet, spec.service_cidr):
        _ip("route", "replace", subnet, "via", spec.node_ip, "dev", spec.host_veth)
    netns.sysctl(spec.netns, "net.ipv4.ip_forward", "1")  # per namespace: the host's stays as it is
    bridge_nf = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
    if bridge_nf.exists():  # Service traffic between pods of one bridge must pass kube-proxy's rules
        netns.sysctl(spec.netns, "net.bridge.bridge-nf-call-iptables", "1")
    _ensure_isolation(spec)


def teardown(spec: ClusterSpec) -> None:
    """Remove the veth pair (and with it the host routes) and the namespace (with every rule in it)."""
    if netns.exists(spec.netns):
        for _ in range(20):  # the cluster's processes are stopped by now; anything left is a straggler
            left = netns.pids(spec.netns)
            if not left:
                break
            kill_pids(left)
            time.sleep(0.1)
    _ip("link", "del", spec.host_veth, check=False)
    remove_legacy_bridge(spec)
    netns.delete(spec.netns)


def leftovers(spec: ClusterSpec) -> dict[str, object]:
    """What of this cluster's network still exists on the host (for delete's tests and `status`)."""
    routes = _ip("route", "show", check=False).stdout
    return {
        "netns": netns.exists(spec.netns),
        "netns processes": netns.pids(spec.netns),
        "host link": _link_exists(spec.host_veth),
        "routes": [line for line in routes.splitlines() if spec.host_veth in line or spec.node_ip in line],
    }


# ---- the forwarder -------------------------------------------------------------------------


def forwards(spec: ClusterSpec) -> list[netns.Forward]:
    out = []
    for port in spec.forwarded_ports:
        for listen in ("127.0.0.1", spec.host_gateway):
            out.append(netns.Forward((listen, port), ("127.0.0.1", port)))
    return out


def ready_file(layout: Layout) -> Path:
    return layout.run / f"{FORWARDER}.ready"


def forwarder_spec(layout: Layout) -> ProcessSpec:
    """The forwarder runs in the host's namespace (it dials host loopback); its sockets live in the node's."""
    return ProcessSpec(FORWARDER, netns.forward_command(layout.spec.netns, forwards(layout.spec), ready_file(layout)))


def wait_forwarder(layout: Layout, group: ProcessGroup, timeout: float = 15.0) -> None:
    """Until the running forwarder reports that every socket listens."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = group.pid(FORWARDER)
        if pid is None:
            break
        try:
            if ready_file(layout).read_text().strip() == str(pid):
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise NetworkError(
        f"the forwarder of cluster {layout.spec.name} did not start listening; last lines of "
        f"{group.log_file(FORWARDER)}:\n{group.log_tail(FORWARDER)}",
        rule="node-forwarder",
    )
