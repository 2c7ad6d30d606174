"""Real local clusters: two side by side, workloads pulled from Conveyor's registry, failures, cleanup."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conveyor.clusters import local, network, node
from conveyor.clusters import spec as specs
from conveyor.clusters.layout import Layout
from conveyor.clusters.processes import pids_with_arg
from tests.support.clusters import (
    HELLO_TEXT,
    ClusterHandle,
    create_cluster,
    deployment,
    deployment_available,
    pod_waiting_reasons,
    service,
)
from tests.support.server import ServerHandle


def cli(data_dir: Path, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CONVEYOR_DATA_DIR=str(data_dir), COLUMNS="250")
    p = subprocess.run(
        [sys.executable, "-m", "conveyor", "cluster", *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and p.returncode != 0:
        raise AssertionError(f"conveyor cluster {' '.join(args)} failed ({p.returncode}): {p.stderr}{p.stdout}")
    return p


def listed(data_dir: Path) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in json.loads(cli(data_dir, "list", "--json").stdout)}


def test_two_clusters_run_side_by_side(cluster_pair: tuple[ClusterHandle, ClusterHandle], clusters_home: Path) -> None:
    alpha, beta = cluster_pair
    rows = listed(clusters_home)
    for c in (alpha, beta):
        row = rows[c.name]
        assert row["state"] == "running"
        assert row["nodes"] == "1/1 Ready"
        assert row["version"] == "v1.34.4"
        assert row["api_url"] == c.spec.api_url
        assert (row["node_ip"], row["host_gateway"]) == (c.spec.node_ip, c.spec.host_gateway)
        assert cli(clusters_home, "kubeconfig", c.name).stdout.strip() == str(c.kubeconfig)
        nodes = c.kubectl("get", "nodes", "-o", "json")
        assert [n["metadata"]["name"] for n in json.loads(nodes.stdout)["items"]] == [c.spec.node_name]
    assert alpha.spec.api_url != beta.spec.api_url
    assert Layout(clusters_home, alpha.spec).runtime != Layout(clusters_home, beta.spec).runtime
    # each cluster has its own CA: alpha's admin certificate is refused by beta
    beta_with_alpha_cert = alpha.kubectl("--server", beta.spec.api_url, "get", "ns", check=False)
    assert beta_with_alpha_cert.returncode != 0


def test_deployment_from_the_registry_answers_through_the_service_proxy(
    cluster_pair: tuple[ClusterHandle, ClusterHandle], hello_image: str
) -> None:
    for cluster, replicas in zip(cluster_pair, (3, 1), strict=True):
        cluster.apply(deployment("hello", hello_image, replicas=replicas), service("hello"))
    for cluster in cluster_pair:
        cluster.wait_for("Deployment hello Available", lambda c=cluster: deployment_available(c, "default", "hello"))
        with cluster.client() as kube:
            r = kube.request("GET", "/api/v1/namespaces/default/services/hello:http/proxy/")
        assert r.status_code == 200, r.text
        assert r.text.strip() == HELLO_TEXT
        # kubectl against the written kubeconfig sees the same objects
        via_kubectl = json.loads(cluster.kubectl("get", "deployment", "hello", "-o", "json").stdout)
        via_api = cluster.get("/apis/apps/v1/namespaces/default/deployments/hello")
        assert via_kubectl["metadata"]["uid"] == via_api["metadata"]["uid"]
        pods = json.loads(cluster.kubectl("get", "pods", "-l", "app=hello", "-o", "json").stdout)["items"]
        assert all(p["status"]["phase"] == "Running" for p in pods)
        assert {p["spec"]["nodeName"] for p in pods} == {cluster.spec.node_name}
    alpha_pods = cluster_pair[0].get("/api/v1/namespaces/default/pods?labelSelector=app=hello")["items"]
    assert len(alpha_pods) == 3 and len({p["status"]["podIP"] for p in alpha_pods}) == 3


def test_failures_show_in_pod_status(cluster_pair: tuple[ClusterHandle, ClusterHandle], hello_image: str) -> None:
    alpha = cluster_pair[0]
    registry = hello_image.split("/", 1)[0]
    alpha.apply(
        deployment("crasher", hello_image, command=["/bin/busybox", "false"]),
        deployment("nopull", f"{registry}/demo/does-not-exist:1"),
        deployment("unready", hello_image, readinessProbe={"httpGet": {"path": "/missing", "port": 8080},
                                                            "periodSeconds": 1}),
    )
    alpha.wait_for(
        "CrashLoopBackOff", lambda: "CrashLoopBackOff" in pod_waiting_reasons(alpha, "default", "app=crasher")
    )
    alpha.wait_for(
        "ImagePullBackOff",
        lambda: "ImagePullBackOff" in pod_waiting_reasons(alpha, "default", "app=nopull"),
    )

    def probe_failed() -> bool:
        events = alpha.get("/api/v1/namespaces/default/events")["items"]
        return any(
            e["reason"] == "Unhealthy" and e["involvedObject"]["name"].startswith("unready-") for e in events
        )

    alpha.wait_for("a failed readiness probe", probe_failed)
    pod = alpha.get("/api/v1/namespaces/default/pods?labelSelector=app=unready")["items"][0]
    assert pod["status"]["containerStatuses"][0]["state"].get("running")  # it runs...
    assert pod["status"]["containerStatuses"][0]["ready"] is False  # ...but is not ready
    assert not deployment_available(alpha, "default", "unready")
    alpha.kubectl("delete", "deployment", "crasher", "nopull", "unready", "--wait=false")


def _kill(cluster: ClusterHandle, process: str) -> int:
    group = local.processes_of(cluster.layout)
    pid = group.pid(process)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    while group.running(process):
        time.sleep(0.05)
    return pid


def test_dead_processes_show_and_are_restarted(
    cluster_pair: tuple[ClusterHandle, ClusterHandle], clusters_home: Path
) -> None:
    beta = cluster_pair[1]
    _kill(beta, "kube-scheduler")
    assert "kube-scheduler not running" in listed(clusters_home)["beta"]["state"]
    out = cli(clusters_home, "create", "beta")
    assert "starting kube-scheduler" in out.stderr
    assert listed(clusters_home)["beta"]["state"] == "running"

    # `conveyor up` restarts what died while it runs
    old = _kill(beta, "kubelet")
    server = ServerHandle(data_dir=clusters_home, database_url=None).start()
    try:
        beta.wait_for("kubelet restarted by conveyor up", lambda: local.processes_of(beta.layout).running("kubelet"))
    finally:
        server.stop()
        (clusters_home.parent / f"{clusters_home.name}.log").unlink(missing_ok=True)
    assert local.processes_of(beta.layout).pid("kubelet") != old
    beta.wait_for("node Ready again", lambda: listed(clusters_home)["beta"]["nodes"] == "1/1 Ready")


def test_registered_external_cluster(cluster_pair: tuple[ClusterHandle, ClusterHandle], tmp_path: Path) -> None:
    alpha = cluster_pair[0]
    home = tmp_path / "other-install"
    cli(home, "add", "prod", "--kubeconfig", str(alpha.kubeconfig))
    row = listed(home)["prod"]
    assert row["kind"] == "external" and row["state"] == "reachable"
    assert row["api_url"] == alpha.spec.api_url and row["version"] == "v1.34.4" and row["nodes"] == "1/1 Ready"
    bad = cli(home, "add", "nope", "--kubeconfig", str(alpha.kubeconfig), "--context", "missing", check=False)
    assert bad.returncode == 1 and "no context named 'missing'" in bad.stderr
    cli(home, "delete", "prod")
    assert listed(home) == {}
    assert alpha.client().healthy()  # forgetting it leaves the cluster alone


def test_taken_api_port_is_refused(clusters_home: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = cli(clusters_home, "create", "porty", "--api-port", str(port), check=False)
    assert p.returncode == 1 and f"port {port} is already in use" in p.stderr
    assert not specs.exists(clusters_home, "porty")


def _leftovers(home: Path, spec: specs.ClusterSpec) -> dict[str, Any]:
    layout = Layout(home, spec)
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return {
        "processes": pids_with_arg(str(layout.root)) + pids_with_arg(str(layout.containerd_socket)),
        "cgroup pids": node.cgroup_pids(spec.cgroup_root),
        "cgroups": [p for p in Path("/sys/fs/cgroup").glob(f"*/{spec.cgroup_root}")],
        "mounts": [m for m in mounts if m.startswith((str(layout.root), str(layout.runtime)))],
        "files": [p for p in (layout.root, layout.runtime) if p.exists()],
        "bridge": subprocess.run(["ip", "link", "show", spec.bridge], capture_output=True).returncode == 0,
        "slot": (specs.SLOTS_DIR / str(spec.index)).exists(),
        "forwarder": pids_with_arg(f"forward {spec.netns} "),
        "host rules": [line for line in subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
                       .splitlines() if spec.pod_subnet.rsplit(".", 2)[0] + "." in line or spec.host_veth in line],
        **{k: v for k, v in network.leftovers(spec).items() if v},
    }


def test_interrupted_create_resumes_and_delete_needs_force_then_removes_everything(
    clusters_home: Path, registry_host: str, hello_image: str
) -> None:
    # a create killed midway leaves a half-made cluster ...
    env = dict(os.environ, CONVEYOR_DATA_DIR=str(clusters_home))
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "cluster", "create", "gamma", "--registry", registry_host],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    etcd_pid = clusters_home / "clusters" / "gamma" / "run" / "etcd.pid"
    while not etcd_pid.exists() and proc.poll() is None:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert listed(clusters_home)["gamma"]["state"] != "running"
    assert specs.load(clusters_home, "gamma").phase == specs.CREATING
    # ... which the next create finishes
    cli(clusters_home, "create", "gamma", "--registry", registry_host)
    gamma = ClusterHandle(clusters_home, specs.load(clusters_home, "gamma"))
    assert gamma.spec.phase == specs.READY and listed(clusters_home)["gamma"]["state"] == "running"

    gamma.apply(deployment("hello", hello_image))
    gamma.wait_for("Deployment Available", lambda: deployment_available(gamma, "default", "hello"))
    refused = cli(clusters_home, "delete", "gamma", check=False)
    assert refused.returncode == 1 and "--force" in refused.stderr and "default/hello-" in refused.stderr
    assert listed(clusters_home)["gamma"]["state"] == "running"

    assert any(_leftovers(clusters_home, gamma.spec).values())  # the check below can see things
    cli(clusters_home, "delete", "gamma", "--force")
    left = _leftovers(clusters_home, gamma.spec)
    assert not any(left.values()), left
    assert "gamma" not in listed(clusters_home)


def test_create_of_a_running_cluster_keeps_it(cluster_pair: tuple[ClusterHandle, ClusterHandle]) -> None:
    alpha = cluster_pair[0]
    before = {p: local.processes_of(alpha.layout).pid(p) for p in local.PROCESS_ORDER}
    again = create_cluster(alpha.data_dir, "alpha", [])
    assert again.spec.ports == alpha.spec.ports
    assert {p: local.processes_of(alpha.layout).pid(p) for p in local.PROCESS_ORDER} == before
    with pytest.raises(Exception, match="delete it to change ports"):
        local.create(alpha.data_dir, "alpha", api_port=alpha.spec.ports.api + 1)
    # one more host port for the node: only the forwarder restarts, with it
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        extra = s.getsockname()[1]
    spec = local.create(alpha.data_dir, "alpha", host_ports=[extra])
    assert extra in spec.forwarded_ports and extra in specs.load(alpha.data_dir, "alpha").host_ports
    after = {p: local.processes_of(alpha.layout).pid(p) for p in local.PROCESS_ORDER}
    assert {p for p in after if after[p] != before[p]} == {network.FORWARDER}
    assert f"{alpha.spec.host_gateway}:{extra}=127.0.0.1:{extra}" in " ".join(network.forwarder_spec(
        Layout(alpha.data_dir, spec)).argv)
