"""Lifecycle of local clusters: create (or resume, or restart), status, delete.

``create`` is idempotent: it writes the spec first (phase ``creating``), then makes every file, the
node's network (network.py) and starts every process that is missing (or restarts one that no
longer matches its spec), applies the cluster DNS (dns.py), waits for the node and DNS to be Ready,
and marks the spec ``ready``. A create that fails is rolled back (all processes and files removed);
one that was killed midway leaves phase ``creating``, and the next ``create`` of that name resumes
it. ``create`` (or ``ensure_running``, which ``conveyor up`` calls) on a ready cluster restarts
whatever processes died. A per-cluster file lock keeps concurrent create/delete/supervise calls
apart.
"""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from conveyor.clusters import controlplane, dns, network, node
from conveyor.clusters import spec as specs
from conveyor.clusters.binaries import ensure_binaries
from conveyor.clusters.coredns import ensure_coredns
from conveyor.clusters.kubeapi import KubeClient, node_ready
from conveyor.clusters.kubeconfig import Credentials
from conveyor.clusters.layout import Layout
from conveyor.clusters.processes import ProcessGroup, ProcessSpec
from conveyor.clusters.spec import ClusterSpec, Ports
from conveyor.clusters.state import ClusterStatus
from conveyor.core.errors import Conflict, ConveyorError, InvalidInput
from conveyor.core.locks import file_lock

Progress = Callable[[str], None]

API_TIMEOUT = 180.0
PROCESS_ORDER = (*controlplane.CONTROL_PLANE, network.FORWARDER, *node.NODE)


class ClusterStartFailed(ConveyorError):
    status = 500
    title = "Cluster failed to start"


def _quiet(_: str) -> None:
    pass


def layout_of(data_dir: Path, spec: ClusterSpec) -> Layout:
    return Layout(data_dir, spec)


def processes_of(layout: Layout) -> ProcessGroup:
    return ProcessGroup(layout.run, layout.logs)


@contextmanager
def cluster_lock(data_dir: Path, name: str, blocking: bool = True) -> Iterator[bool]:
    with file_lock(specs.clusters_root(data_dir) / f".{name}.lock", blocking) as held:
        yield held


def admin_client(data_dir: Path, spec: ClusterSpec, timeout: float = 10.0) -> KubeClient:
    layout = layout_of(data_dir, spec)
    pki = layout.pki
    return KubeClient(
        Credentials(
            server=spec.api_url,
            ca_file=pki / "ca.crt",
            cert_file=pki / "admin.crt",
            key_file=pki / "admin.key",
        ),
        timeout=timeout,
    )


# ---- ports ---------------------------------------------------------------------------------


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _ephemeral_port(avoid: set[int]) -> int:
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in avoid:
            return port
    raise InvalidInput("no free port found", rule="cluster-ports")


def allocate_ports(data_dir: Path, api_port: int | None) -> Ports:
    taken = {p for s in specs.list_specs(data_dir) for _, p in s.ports.items() if p}
    if api_port is not None and (api_port in taken or not port_free(api_port)):
        raise Conflict(f"port {api_port} is already in use; pick another --api-port", rule="cluster-ports")
    ports = Ports()
    for name, _ in ports.items():
        value = api_port if name == "api" and api_port is not None else _ephemeral_port(taken)
        taken.add(value)
        setattr(ports, name, value)
    return ports


_PROCESS_PORTS = {
    controlplane.ETCD: ("etcd_client", "etcd_peer"),
    controlplane.APISERVER: ("api",),
    controlplane.CONTROLLER_MANAGER: ("controller_manager",),
    controlplane.SCHEDULER: ("scheduler",),
}  # the node's processes listen inside its own network namespace: no host port to collide with


def _check_ports(spec: ClusterSpec, process: str, wait: float = 0.0) -> None:
    """Refuse to start a process whose host port is taken, after waiting up to ``wait`` seconds for a
    process just stopped to let go of it."""
    deadline = time.monotonic() + wait
    for field_name in _PROCESS_PORTS.get(process, ()):
        port = getattr(spec.ports, field_name)
        while not port_free(port):
            if time.monotonic() >= deadline:
                raise Conflict(
                    f"cannot start {process} of cluster {spec.name!r}: port {port} ({field_name}) is taken "
                    "by another process",
                    rule="cluster-ports",
                )
            time.sleep(0.1)


# ---- create / start ------------------------------------------------------------------------


def create(
    data_dir: Path,
    name: str,
    *,
    api_port: int | None = None,
    registries: list[str] | None = None,
    host_ports: list[int] | None = None,
    progress: Progress = _quiet,
    wait_node: bool = True,
) -> ClusterSpec:
    """Create a cluster, resume a half-created one, or restart the dead processes of an existing one.

    ``registries`` (host:port, plain HTTP) and ``host_ports`` (host loopback ports) add to what the
    node and its pods may reach; ``wait_node`` waits for the node Ready and the cluster DNS."""
    specs.check_name(name)
    for port in host_ports or []:
        if not 0 < port < 65536:
            raise InvalidInput(f"host port {port} is not a TCP port (1-65535)", rule="cluster-host-ports")
    with cluster_lock(data_dir, name):
        resumed = specs.exists(data_dir, name)
        if resumed:
            spec = specs.load(data_dir, name)
            if spec.kind != specs.LOCAL:
                raise Conflict(f"cluster {name!r} is a registered external cluster", rule="cluster-exists")
            if api_port is not None and api_port != spec.ports.api:
                raise Conflict(
                    f"cluster {name!r} exists with API port {spec.ports.api}; delete it to change ports",
                    rule="cluster-exists",
                )
            for host in registries or []:
                if host not in spec.registries:
                    spec.registries.append(host)
            spec.host_ports = sorted({*spec.host_ports, *(host_ports or [])})
            progress(f"cluster {name} exists ({spec.phase}); resuming")
        else:
            layout_root = specs.clusters_root(data_dir) / name
            ports = allocate_ports(data_dir, api_port)
            spec = ClusterSpec(
                name=name, ports=ports, registries=list(registries or []), host_ports=sorted(set(host_ports or []))
            )
            spec.index = specs.claim_index(layout_root)
            network.teardown(spec)  # a namespace left by a cluster whose directory vanished
            specs.save(data_dir, spec)
        try:
            _start(data_dir, spec, progress, wait_node=wait_node)
        except BaseException:
            if spec.phase == specs.CREATING:
                progress(f"creating {name} failed; rolling back")
                _delete(data_dir, spec)
            raise
        if spec.phase != specs.READY:
            spec.phase = specs.READY
            specs.save(data_dir, spec)
        return spec


def ensure_running(data_dir: Path, name: str, progress: Progress = _quiet, wait_node: bool = False) -> bool:
    """Restart the dead processes of a ready local cluster; False when another caller holds it."""
    with cluster_lock(data_dir, name, blocking=False) as locked:
        if not locked or not specs.exists(data_dir, name):
            return False
        spec = specs.load(data_dir, name)
        if spec.kind != specs.LOCAL or spec.phase != specs.READY:
            return False
        _start(data_dir, spec, progress, wait_node=wait_node)
        return True


def dead_processes(data_dir: Path, spec: ClusterSpec) -> list[str]:
    group = processes_of(layout_of(data_dir, spec))
    return [p for p in PROCESS_ORDER if not group.running(p)]


def _start_process(group: ProcessGroup, spec: ClusterSpec, ps: ProcessSpec, progress: Progress) -> bool:
    """Start ``ps`` unless it runs as specified; True when it was (re)started."""
    stopped = False
    if group.running(ps.name):
        if group.matches(ps):
            return False
        progress(f"restarting {ps.name} (its command line or network namespace changed)")
        group.stop(ps.name, timeout=10)
        stopped = True
    stopped = group.kill_untracked(ps) > 0 or stopped
    _check_ports(spec, ps.name, wait=5.0 if stopped else 0.0)  # let the kernel release its ports
    progress(f"starting {ps.name}")
    group.start(ps)
    return True


def _died(group: ProcessGroup, names: list[str]) -> str | None:
    for n in names:
        if not group.running(n):
            return f"{n} exited; last lines of {group.log_file(n)}:\n{group.log_tail(n)}"
    return None


def _start(data_dir: Path, spec: ClusterSpec, progress: Progress, *, wait_node: bool) -> None:
    """Start what is not running, in dependency order, overlapping what can overlap: the node's
    runtime (forwarder, containerd, image imports: 2 s, 1.1 s of it the 52 MB CoreDNS image) needs no
    API server, so it comes up while the API server starts. With the controller-manager's raised
    client limits (controlplane.py) that took create -> DNS Ready from 15.6 s to 12.0 s (mean of
    three creates each, while other suites kept the 2 cores at load ~11)."""
    layout = layout_of(data_dir, spec)
    spec.index = specs.claim_index(layout.root, spec.index)
    bins = ensure_binaries(progress=progress)
    coredns = ensure_coredns(progress=progress)
    spec.version = bins.version
    specs.save(data_dir, spec)
    controlplane.prepare(layout)
    node.prepare(layout, bins, coredns)
    network.ensure(spec)
    group = processes_of(layout)
    t0 = time.monotonic()
    cp = controlplane.process_specs(layout, bins)
    storage_and_api, controllers = cp[:2], cp[2:]
    for ps in storage_and_api:
        _start_process(group, spec, ps, progress)
    containerd, kubelet, kube_proxy = node.process_specs(layout, bins)
    _start_node_runtime(layout, containerd, group, progress)
    _wait(lambda: _api_healthy(data_dir, spec), group, [p.name for p in storage_and_api], API_TIMEOUT,
          f"API server of {spec.name} at {spec.api_url} did not become healthy")
    progress(f"API server healthy at {spec.api_url} ({time.monotonic() - t0:.1f}s)")
    # the controllers read RBAC-protected objects at start: only once the API server is ready
    for ps in controllers:
        _start_process(group, spec, ps, progress)
    with admin_client(data_dir, spec) as kube:
        dns.apply(kube, spec)  # before the node registers, so its pod is scheduled the moment it is Ready
    _start_process(group, spec, kubelet, progress)
    _start_process(group, spec, kube_proxy, progress)
    if wait_node:
        everything = [*PROCESS_ORDER]
        _wait(lambda: _node_ready(data_dir, spec), group, everything, API_TIMEOUT,
              f"node {spec.node_name} did not become Ready")
        progress(f"node {spec.node_name} Ready ({time.monotonic() - t0:.1f}s)")
        _wait(lambda: _dns_ready(data_dir, spec), group, everything, API_TIMEOUT,
              f"the cluster DNS (kube-system/coredns) of {spec.name} did not become Available")
        progress(f"cluster DNS Ready at {spec.dns_ip} ({time.monotonic() - t0:.1f}s)")


def _start_node_runtime(layout: Layout, containerd: ProcessSpec, group: ProcessGroup, progress: Progress) -> None:
    """The forwarder (the node's way to the API server and registries) and containerd with its images."""
    spec = layout.spec
    started = _start_process(group, spec, network.forwarder_spec(layout), progress)
    if started or not network.ready_file(layout).exists():
        network.wait_forwarder(layout, group)
    _start_process(group, spec, containerd, progress)
    node.wait_containerd(layout)
    node.import_node_images(layout)


def _wait(check: Callable[[], bool], group: ProcessGroup, watched: list[str], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    grace = 2  # a process found dead twice in a row has really exited
    while time.monotonic() < deadline:
        if check():
            return
        died = _died(group, watched)
        if died:
            grace -= 1
            if grace <= 0:
                raise ClusterStartFailed(f"{what}: {died}", rule="cluster-start")
        time.sleep(0.5)
    raise ClusterStartFailed(f"{what} within {timeout:.0f}s; logs in {group.log_dir}", rule="cluster-start")


def _api_healthy(data_dir: Path, spec: ClusterSpec) -> bool:
    with admin_client(data_dir, spec, timeout=3) as kube:
        return kube.healthy()


def _dns_ready(data_dir: Path, spec: ClusterSpec) -> bool:
    try:
        with admin_client(data_dir, spec, timeout=3) as kube:
            return dns.ready(kube)
    except Exception:  # noqa: BLE001 - any failure means "not yet"
        return False


def _node_ready(data_dir: Path, spec: ClusterSpec) -> bool:
    try:
        with admin_client(data_dir, spec, timeout=3) as kube:
            return any(n["metadata"]["name"] == spec.node_name and node_ready(n) for n in kube.nodes())
    except Exception:  # noqa: BLE001 - any failure means "not yet"
        return False


# ---- status --------------------------------------------------------------------------------


def status(data_dir: Path, spec: ClusterSpec) -> ClusterStatus:
    from conveyor.clusters import external

    if spec.kind == specs.EXTERNAL:
        return external.status(data_dir, spec)
    layout = layout_of(data_dir, spec)
    group = processes_of(layout)
    procs = {p: group.pid(p) for p in PROCESS_ORDER}
    dead = [p for p, pid in procs.items() if pid is None]
    st = ClusterStatus(spec.name, spec.kind, spec.api_url, "", processes=procs, kubeconfig=str(layout.kubeconfig),
                       node_ip=spec.node_ip, host_gateway=spec.host_gateway)
    if len(dead) == len(procs):
        st.state = "stopped" if spec.phase == specs.READY else "creating (interrupted)"
        return st
    try:
        with admin_client(data_dir, spec, timeout=3) as kube:
            if not kube.healthy():
                raise OSError("not ready")
            st.version = kube.version()
            nodes = kube.nodes()
            ready = sum(1 for n in nodes if node_ready(n))
            st.nodes = f"{ready}/{len(nodes)} Ready"
    except Exception:  # noqa: BLE001 - unreachable API is a state, not an error
        st.state = "starting" if spec.phase == specs.CREATING else "unhealthy"
    if not st.state:
        st.state = "creating" if spec.phase == specs.CREATING else "running"
    if dead:
        st.state = f"degraded ({', '.join(dead)} not running)"
    return st


def list_status(data_dir: Path) -> list[ClusterStatus]:
    return [status(data_dir, s) for s in specs.list_specs(data_dir)]


# ---- delete --------------------------------------------------------------------------------


def running_workloads(data_dir: Path, spec: ClusterSpec) -> list[str]:
    """Pods outside kube-system that are not finished, as namespace/name."""
    try:
        with admin_client(data_dir, spec, timeout=5) as kube:
            if not kube.healthy():
                return []
            pods = kube.pods()
    except Exception:  # noqa: BLE001 - a cluster whose API is down runs nothing we can ask about
        return []
    return [
        f"{p['metadata']['namespace']}/{p['metadata']['name']}"
        for p in pods
        if p["metadata"]["namespace"] != "kube-system"
        and p.get("status", {}).get("phase") not in ("Succeeded", "Failed")
    ]


def delete(data_dir: Path, name: str, *, force: bool = False, progress: Progress = _quiet) -> None:
    with cluster_lock(data_dir, name):
        spec = specs.load(data_dir, name)
        if spec.kind == specs.LOCAL and not force:
            pods = running_workloads(data_dir, spec)
            if pods:
                shown = ", ".join(pods[:5]) + (" ..." if len(pods) > 5 else "")
                raise Conflict(
                    f"cluster {name!r} runs {len(pods)} workload pod(s) ({shown}); pass --force to delete it",
                    rule="cluster-delete-force",
                    pods=pods,
                )
        _delete(data_dir, spec, progress)


def _delete(data_dir: Path, spec: ClusterSpec, progress: Progress = _quiet) -> None:
    layout = layout_of(data_dir, spec)
    if spec.kind == specs.LOCAL:
        group = processes_of(layout)
        for name in (node.KUBELET, node.KUBE_PROXY):
            progress(f"stopping {name}")
            group.stop(name, timeout=10)
        if group.running(node.CONTAINERD):
            progress("removing containers")
            node.remove_containers(layout)
        for name in (node.CONTAINERD, network.FORWARDER, controlplane.SCHEDULER, controlplane.CONTROLLER_MANAGER,
                     controlplane.APISERVER, controlplane.ETCD):
            progress(f"stopping {name}")
            group.stop(name, timeout=10)
        node.kill_workloads(layout)
        progress(f"removing network namespace {spec.netns} and link {spec.host_veth}")
        network.teardown(spec)
        node.remove_network_leftovers(layout)
        with suppress(FileNotFoundError):
            shutil.rmtree(layout.runtime)
        specs.release_index(layout.root, spec.index)
    shutil.rmtree(layout.root, ignore_errors=True)
    (specs.clusters_root(data_dir) / f".{spec.name}.lock").unlink(missing_ok=True)
    progress(f"deleted cluster {spec.name}")
