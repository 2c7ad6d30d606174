"""Cluster networking as users meet it: Services by IP and DNS name from pods, NodePorts and
port-forward from the host, two clusters side by side with their own rules, and pods that reach the
host only through the forwarded ports."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from conveyor.clusters import local, network
from conveyor.clusters.processes import pids_with_arg
from conveyor.core import netns
from tests.support.clusters import (
    HELLO_TEXT,
    ClusterHandle,
    busybox,
    deployment,
    deployment_available,
    kubectl_path,
    pod_ready,
    service,
    shell_pod,
)
from tests.support.server import ServerHandle

pytestmark = pytest.mark.slow

Pair = tuple[ClusterHandle, ClusterHandle]


@pytest.fixture(scope="module")
def web(cluster_pair: Pair, hello_image: str) -> Pair:
    """In each cluster: Deployment `web` (2 replicas) behind a ClusterIP Service and a NodePort one, and a
    shell pod `client` to run commands in."""
    for cluster in cluster_pair:
        cluster.apply(
            deployment("web", hello_image, replicas=2),
            service("web"),
            service("web-np", app="web", type="NodePort"),
            shell_pod("client", hello_image),
        )
    for cluster in cluster_pair:
        cluster.wait_for("Deployment web Available", lambda c=cluster: deployment_available(c, "default", "web"))
        cluster.wait_for("pod client Ready", lambda c=cluster: pod_ready(c, "default", "client"))
    return cluster_pair


def _cluster_ip(cluster: ClusterHandle, name: str, namespace: str = "default") -> str:
    return str(cluster.get(f"/api/v1/namespaces/{namespace}/services/{name}")["spec"]["clusterIP"])


def _wget(cluster: ClusterHandle, url: str, timeout: int = 5) -> subprocess.CompletedProcess[str]:
    # busybox 1.35's own `wget -T` crashes (SIGSEGV); its `timeout` applet bounds the call instead
    return busybox(cluster, "client", "timeout", str(timeout), "/bin/busybox", "wget", "-q", "-O", "-", url)


def test_a_pod_reaches_a_service_by_cluster_ip_and_by_dns_name(web: Pair) -> None:
    for cluster in web:
        ip = _cluster_ip(cluster, "web")
        assert ip.startswith(cluster.spec.service_cidr.rsplit(".", 2)[0] + "."), ip
        for url in (f"http://{ip}/", "http://web.default.svc.cluster.local/", "http://web/"):
            got = _wget(cluster, url)
            assert got.returncode == 0 and got.stdout.strip() == HELLO_TEXT, (cluster.name, url, got.stderr)
        looked_up = busybox(cluster, "client", "nslookup", "web.default.svc.cluster.local")
        assert looked_up.returncode == 0 and ip in looked_up.stdout, looked_up.stdout + looked_up.stderr
        assert f"Server:\t\t{cluster.spec.dns_ip}" in looked_up.stdout
        # another namespace's Service, by its full name
        other = busybox(cluster, "client", "nslookup", "kubernetes.default.svc.cluster.local")
        assert other.returncode == 0 and cluster.spec.service_ip in other.stdout, other.stdout
        missing = busybox(cluster, "client", "nslookup", "nothing-here.default.svc.cluster.local")
        assert missing.returncode != 0 and "NXDOMAIN" in missing.stdout + missing.stderr


def test_a_nodeport_service_answers_on_the_node_address_from_the_host(web: Pair) -> None:
    """And ClusterIPs answer from the host too: the host routes the Service range to the node."""
    for cluster in web:
        svc = cluster.get("/api/v1/namespaces/default/services/web-np")
        node_port = svc["spec"]["ports"][0]["nodePort"]
        node = cluster.get(f"/api/v1/nodes/{cluster.spec.node_name}")
        internal = [a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP"]
        assert internal == [cluster.spec.node_ip]
        r = httpx.get(f"http://{cluster.spec.node_ip}:{node_port}/", timeout=10)
        assert r.status_code == 200 and r.text.strip() == HELLO_TEXT
        r = httpx.get(f"http://{_cluster_ip(cluster, 'web')}/", timeout=10)
        assert r.status_code == 200 and r.text.strip() == HELLO_TEXT


def test_kubectl_port_forward_reaches_the_service(web: Pair) -> None:
    alpha = web[0]
    proc = subprocess.Popen(
        [kubectl_path(), "--kubeconfig", str(alpha.kubeconfig), "port-forward", "svc/web", ":80"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"Forwarding from 127\.0\.0\.1:(\d+)", line)
        assert m, line + (proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
        for _ in range(3):  # several connections over one port-forward session
            r = httpx.get(f"http://127.0.0.1:{m.group(1)}/", timeout=10)
            assert r.status_code == 200 and r.text.strip() == HELLO_TEXT
    finally:
        proc.terminate()
        proc.wait(10)


def _rules(cluster: ClusterHandle) -> str:
    return netns.run(cluster.spec.netns, ["iptables-save"], capture_output=True, text=True, check=True).stdout


def test_two_clusters_keep_their_rules_and_addresses_apart(web: Pair) -> None:
    alpha, beta = web
    assert alpha.spec.netns != beta.spec.netns
    for mine, other in ((alpha, beta), (beta, alpha)):
        rules = _rules(mine)
        assert f"{_cluster_ip(mine, 'web')}/32" in rules  # its kube-proxy wrote its own Services ...
        assert _cluster_ip(other, "web") not in rules  # ... and nothing of the other cluster's
        assert other.spec.pod_subnet not in rules
        # the other cluster's Services do not answer from this cluster's pods
        assert _wget(mine, f"http://{_cluster_ip(other, 'web')}/", timeout=2).returncode != 0
    host_rules = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    for c in web:  # the host's own tables hold nothing of either cluster
        for marker in (c.spec.service_cidr.rsplit(".", 2)[0] + ".", c.spec.pod_subnet.rsplit(".", 2)[0] + ".",
                       c.spec.bridge, c.spec.host_veth):
            assert marker not in host_rules, marker


def _isolation_hits(cluster: ClusterHandle) -> int:
    out = netns.run(cluster.spec.netns, ["iptables", "-w", "5", "-L", "FORWARD", "-v", "-x", "-n"],
                    capture_output=True, text=True, check=True).stdout
    return sum(int(line.split()[0]) for line in out.splitlines() if "pods reach the host only" in line)


def test_pods_reach_the_host_only_through_its_forwarded_ports(web: Pair, registry_server: ServerHandle) -> None:
    alpha = web[0]
    port = registry_server.port
    assert port in alpha.spec.forwarded_ports
    for host in (alpha.spec.host_gateway, "host.conveyor.internal"):
        got = _wget(alpha, f"http://{host}:{port}/healthz")
        assert got.returncode == 0 and '"ok"' in got.stdout, (host, got.stdout, got.stderr)
    # the host's own end of the link is not a way in: new connections from pods are rejected there
    before = _isolation_hits(alpha)
    refused = _wget(alpha, f"http://{alpha.spec.host_link_ip}:{port}/healthz", timeout=2)
    assert refused.returncode != 0
    assert _isolation_hits(alpha) > before
    # and there is no route anywhere else (an unassigned address of the cluster's own range: the
    # packet dies in the node's namespace, "network unreachable")
    unrouted = alpha.spec.node_ip.rsplit(".", 2)[0] + ".253.1"
    assert _wget(alpha, f"http://{unrouted}/", timeout=2).returncode != 0


def test_a_killed_forwarder_and_kube_proxy_are_restarted_and_dns_answers_again(web: Pair) -> None:
    beta = web[1]
    group = local.processes_of(beta.layout)
    for name in (network.FORWARDER, "kube-proxy"):
        pid = group.pid(name)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        while group.running(name):
            time.sleep(0.05)
    assert set(local.dead_processes(beta.data_dir, beta.spec)) == {network.FORWARDER, "kube-proxy"}
    assert local.ensure_running(beta.data_dir, beta.name)
    assert local.dead_processes(beta.data_dir, beta.spec) == []
    # a Service created after the restart: the new kube-proxy wrote its rules, CoreDNS (which watches
    # the API server through the new forwarder) knows its name
    beta.apply(service("web2", app="web"))
    beta.wait_for("web2 by DNS name", lambda: _wget(beta, "http://web2.default.svc.cluster.local/").stdout.strip()
                  == HELLO_TEXT, timeout=60)


def _stable_rules(cluster: ClusterHandle) -> list[str]:
    return sorted(line for line in _rules(cluster).splitlines() if not line.startswith("#"))


def _routes() -> set[str]:
    return set(subprocess.run(["ip", "route", "show"], capture_output=True, text=True, check=True).stdout.splitlines())


def _of_another_cluster(route: str, ours: set[str]) -> bool:
    """A route on a local cluster's host link (`cnvNh`) that is neither ``ours``."""
    dev = route.split(" dev ", 1)[1].split()[0] if " dev " in route else ""
    return dev.startswith("cnv") and dev.endswith("h") and dev not in ours


def test_deleting_a_cluster_removes_its_network_and_nothing_else(web: Pair, clusters_home: Path) -> None:
    alpha = web[0]
    rules_before = _stable_rules(alpha)
    routes_before = _routes()
    delta = local.create(clusters_home, "delta")
    assert network.leftovers(delta)["netns"] and network.leftovers(delta)["host link"]
    local.delete(clusters_home, "delta", force=True)
    left = network.leftovers(delta)
    assert not any(left.values()), left
    assert not pids_with_arg(f"forward {delta.netns} ")
    # Other test workers create and delete clusters meanwhile: compare every route but theirs.
    others = _routes() ^ routes_before
    assert all(_of_another_cluster(line, {alpha.spec.host_veth, delta.host_veth}) for line in others), others
    assert _stable_rules(alpha) == rules_before
    got = _wget(alpha, "http://web.default.svc.cluster.local/")
    assert got.returncode == 0 and got.stdout.strip() == HELLO_TEXT
