"""The node of a local cluster: its own containerd, the real kubelet and kube-proxy.

All three run in the node's network namespace (network.py has the addresses and why). Every cluster
gets a containerd of its own (root under the cluster dir, state and socket under
``/run/conveyor/c<index>``), so two clusters share no images, containers or sockets. Settings that
these machines need, measured while preparing the component:

* cgroup layout is hybrid (v1 controllers): the kubelet runs with ``failCgroupV1: false`` and
  the cgroupfs driver; containerd's runc uses ``SystemdCgroup = false`` (there is no systemd).
* each kubelet's pods live below its own cgroup ``/conveyor<index>`` (``cgroupRoot``), which is
  created here in every v1 hierarchy because the kubelet refuses a missing cgroup root.
* pods attach to a bridge of the cluster's own (``cnv<index>br``, 10.<200+index>.0.0/24, inside the
  node's namespace) with the upstream bridge + host-local CNI plugins; no masquerading (there is no
  way out to masquerade to). The node IP is the node's end of its veth pair.
* pods get the cluster DNS (``clusterDNS``: the kube-dns Service, see dns.py); ``resolvConf`` is a
  file of the cluster's own with no nameserver, since the host's resolvers are unreachable from
  the node's namespace (pods with ``dnsPolicy: Default`` get it).
* pod network namespaces are mounted under containerd's state dir (``netns_mounts_under_state_dir``)
  so deleting a cluster can find and remove all of them.
* root here lacks CAP_SYS_RESOURCE, so no process may lower its OOM score below 0; the CRI's
  sandboxes ask for -998 and runc then fails ("can't get final child's PID from pipe").
  ``restrict_oom_score_adj`` clamps every container's score to containerd's own.
* registries named in the spec are plain HTTP (``certs.d/<host>/hosts.toml``); a registry on host
  loopback is reached at the same ``127.0.0.1:PORT`` through the forwarder, so image names are the
  same inside and outside. The sandbox and CoreDNS images are imported from tarballs (images.py),
  never pulled.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from pathlib import Path

import yaml

from conveyor.clusters import kubeproxy
from conveyor.clusters.binaries import PAUSE, KubeBinaries
from conveyor.clusters.coredns import COREDNS_IMAGE
from conveyor.clusters.images import SANDBOX_IMAGE, write_single_binary_image
from conveyor.clusters.layout import Layout, write_if_changed
from conveyor.clusters.pki import ClusterPKI
from conveyor.clusters.processes import ProcessSpec, kill_pids, pids_with_arg
from conveyor.core.errors import ConveyorError

CONTAINERD = "containerd"
KUBELET = "kubelet"
KUBE_PROXY = kubeproxy.KUBE_PROXY
NODE = (CONTAINERD, KUBELET, KUBE_PROXY)

CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
CGROUP_ROOT = Path("/sys/fs/cgroup")


class NodeError(ConveyorError):
    status = 500
    title = "Node setup failed"


def _tool(name: str) -> str:
    for d in ("/usr/bin", "/usr/sbin", "/usr/local/bin", "/sbin", "/bin"):
        if os.access(f"{d}/{name}", os.X_OK):
            return f"{d}/{name}"
    raise NodeError(
        f"{name} is not installed (Debian package: {_PACKAGES.get(name, name)}); scripts/setup.sh installs it",
        rule="node-prerequisites",
    )


_PACKAGES = {"containerd": "containerd", "ctr": "containerd", "runc": "runc", "ip": "iproute2"}


def cni_bin_dir() -> str:
    for d in CNI_BIN_DIRS:
        if os.access(f"{d}/bridge", os.X_OK):
            return d
    raise NodeError(
        "CNI plugins are not installed (Debian package: containernetworking-plugins)", rule="node-prerequisites"
    )


def check_prerequisites() -> None:
    for tool in ("containerd", "ctr", "runc", "ip"):
        _tool(tool)
    cni_bin_dir()


# ---- cgroups -------------------------------------------------------------------------------


def _v1_hierarchies(with_v2: bool = False) -> list[Path]:
    """Mounted cgroup hierarchies; ``with_v2`` adds the (empty, hybrid-mode) v2 one runc also uses."""
    kinds = ("cgroup", "cgroup2") if with_v2 else ("cgroup",)
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, _, post = line.partition(" - ")
        if post.split()[0] in kinds:
            out.append(Path(pre.split()[4]))
    return out


def ensure_cgroup(name: str) -> None:
    for hierarchy in _v1_hierarchies():
        path = hierarchy / name
        if path.is_dir():
            continue
        path.mkdir()
        if (hierarchy / "cpuset.cpus").exists():  # a new cpuset cgroup starts with no CPUs or memory nodes
            for f in ("cpuset.cpus", "cpuset.mems"):
                (path / f).write_text((hierarchy / f).read_text().strip())


def cgroup_pids(name: str) -> list[int]:
    pids: set[int] = set()
    for hierarchy in _v1_hierarchies(with_v2=True):
        root = hierarchy / name
        if not root.is_dir():
            continue
        for procs in root.rglob("cgroup.procs"):
            try:
                pids.update(int(p) for p in procs.read_text().split())
            except OSError:
                continue
    return sorted(pids)


def remove_cgroup(name: str) -> None:
    for hierarchy in _v1_hierarchies(with_v2=True):
        root = hierarchy / name
        if not root.is_dir():
            continue
        # children first; rmdir is the only way to remove a cgroup
        for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                d.rmdir()
        with contextlib.suppress(OSError):
            root.rmdir()


# ---- configuration files -------------------------------------------------------------------


def registry_hosts(layout: Layout) -> Path:
    return layout.containerd / "certs.d"


def add_registry(layout: Layout, host: str) -> None:
    """Let the node pull from a plain-HTTP registry at ``host`` (``127.0.0.1:PORT``)."""
    d = registry_hosts(layout) / host
    d.mkdir(parents=True, exist_ok=True)
    write_if_changed(
        d / "hosts.toml",
        f'server = "http://{host}"\n\n[host."http://{host}"]\n  capabilities = ["pull", "resolve"]\n'
        "  skip_verify = true\n"
    )


def containerd_config(layout: Layout) -> str:
    spec = layout.spec
    return f"""version = 2
root = "{layout.containerd / 'root'}"
state = "{layout.containerd_state}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{layout.containerd_socket}"

[ttrpc]
  address = "{layout.runtime / 'containerd.sock.ttrpc'}"

[debug]
  level = "warn"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{layout.containerd / 'opt'}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{SANDBOX_IMAGE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  netns_mounts_under_state_dir = true
  restrict_oom_score_adj = true
  max_container_log_line_size = 16384
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{_tool('runc')}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin_dir()}"
    conf_dir = "{layout.cni_conf / 'net.d'}"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{registry_hosts(layout)}"
# cluster {spec.name}, index {spec.index}
"""


def cni_config(layout: Layout) -> dict[str, object]:
    spec = layout.spec
    return {
        "cniVersion": "0.4.0",
        "name": f"conveyor{spec.index}",
        "plugins": [
            {
                "type": "bridge",
                "bridge": spec.bridge,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": spec.pod_subnet, "gateway": spec.pod_gateway}]],
                    # Service IPs are not on the bridge: pods send them to the gateway, where
                    # kube-proxy's rules rewrite them (the node routes nothing else anywhere)
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(layout.cni_conf / "ipam"),
                },
            }
        ],
    }


def kubelet_config(layout: Layout) -> dict[str, object]:
    spec = layout.spec
    pki = ClusterPKI(layout.pki)
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": spec.node_ip,
        "clusterDNS": [spec.dns_ip],
        "port": spec.ports.kubelet,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": spec.ports.kubelet_healthz,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki.ca_crt)},
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(pki.crt("kubelet-server")),
        "tlsPrivateKeyFile": str(pki.key("kubelet-server")),
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "imageServiceEndpoint": f"unix://{layout.containerd_socket}",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{spec.cgroup_root}",
        "cgroupsPerQOS": True,
        "enforceNodeAllocatable": ["pods"],
        "failCgroupV1": False,
        "failSwapOn": False,
        "clusterDomain": "cluster.local",
        "resolvConf": str(layout.resolv_conf),
        "podLogsDir": str(layout.kubelet / "pod-logs"),
        "serializeImagePulls": False,
        "registerNode": True,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "syncFrequency": "10s",
        "fileCheckFrequency": "20s",
        "nodeStatusUpdateFrequency": "5s",
        "nodeStatusReportFrequency": "1m",
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "50Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
        },
        "maxPods": 110,
        "protectKernelDefaults": False,
        "localStorageCapacityIsolation": True,
        "shutdownGracePeriod": "0s",
    }


def prepare(layout: Layout, bins: KubeBinaries, coredns: Path) -> None:
    """Configuration files, image archives and the cgroup root (idempotent)."""
    check_prerequisites()
    spec = layout.spec
    longest = layout.kubelet / "root" / "pod-resources" / "kubelet.sock"
    if len(str(longest)) > 100:  # Unix socket paths end at 108 bytes
        raise NodeError(
            f"the cluster directory {layout.root} is too deep for the kubelet's sockets; use a shorter --data-dir",
            rule="node-socket-path",
        )
    for d in (layout.containerd, layout.kubelet, layout.cni_conf / "net.d", layout.runtime, layout.images):
        d.mkdir(parents=True, exist_ok=True)
    write_if_changed(layout.containerd / "config.toml", containerd_config(layout))
    write_if_changed(layout.cni_conf / "net.d" / "10-conveyor.conflist", json.dumps(cni_config(layout), indent=2))
    write_if_changed(layout.kubelet / "config.yaml", yaml.safe_dump(kubelet_config(layout)))
    write_if_changed(
        layout.resolv_conf,
        f"# cluster {spec.name}: pods use the cluster DNS ({spec.dns_ip}); the node has no upstream resolver\n",
    )
    kubeproxy.prepare(layout)
    for host in spec.registries:
        add_registry(layout, host)
    for binary, ref, user in ((bins[PAUSE], SANDBOX_IMAGE, "65535:65535"), (coredns, COREDNS_IMAGE, "65532:65532")):
        archive = image_archive(layout, ref)
        if not archive.exists() or archive.stat().st_mtime < binary.stat().st_mtime:
            write_single_binary_image(binary, ref, archive, user=user)
    ensure_cgroup(spec.cgroup_root)


def image_archive(layout: Layout, ref: str) -> Path:
    return layout.images / (ref.rpartition("/")[2].replace(":", "-") + ".tar")


def process_specs(layout: Layout, bins: KubeBinaries) -> list[ProcessSpec]:
    spec = layout.spec
    containerd = ProcessSpec(
        CONTAINERD, [_tool("containerd"), "--config", str(layout.containerd / "config.toml")], netns=spec.netns
    )
    kubelet = ProcessSpec(
        KUBELET,
        [
            str(bins[KUBELET]),
            f"--config={layout.kubelet / 'config.yaml'}",
            f"--kubeconfig={layout.component_kubeconfig('kubelet')}",
            f"--root-dir={layout.kubelet / 'root'}",
            f"--hostname-override={spec.node_name}",
            f"--node-ip={spec.node_ip}",
            "--v=1",
        ],
        netns=spec.netns,
    )
    return [containerd, kubelet, kubeproxy.process_spec(layout, bins)]


def ctr(layout: Layout, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_tool("ctr"), "--address", str(layout.containerd_socket), "--namespace", "k8s.io", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_containerd(layout: Layout, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if layout.containerd_socket.exists() and ctr(layout, "version", timeout=10).returncode == 0:
            return
        time.sleep(0.2)
    raise NodeError(f"containerd did not come up on {layout.containerd_socket}", rule="node-containerd")


def import_node_images(layout: Layout) -> None:
    """The sandbox and CoreDNS images, unless containerd has them already."""
    present = set(ctr(layout, "images", "ls", "-q").stdout.split())
    for ref in (SANDBOX_IMAGE, COREDNS_IMAGE):
        if ref in present:
            continue
        out = ctr(layout, "images", "import", str(image_archive(layout, ref)))
        if out.returncode != 0:
            raise NodeError(f"cannot import {ref}: {out.stderr.strip()}", rule="node-images")


def import_image(layout: Layout, archive: Path) -> None:
    """Load an image archive (docker or OCI) into the node, as if it had been pulled."""
    out = ctr(layout, "images", "import", str(archive))
    if out.returncode != 0:
        raise NodeError(f"cannot import {archive}: {out.stderr.strip()}", rule="node-image-import")


# ---- teardown ------------------------------------------------------------------------------


def _mounts_under(*roots: Path) -> list[str]:
    prefixes = tuple(str(r).rstrip("/") + "/" for r in roots)
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mount_point = line.split()[4].replace("\\040", " ")
        if mount_point.startswith(prefixes) or mount_point in {str(r) for r in roots}:
            out.append(mount_point)
    return out


def unmount_all(*roots: Path) -> None:
    """Unmount everything below ``roots`` (deepest first): overlay snapshots, pod volumes, netns."""
    for _ in range(3):
        mounts = _mounts_under(*roots)
        if not mounts:
            return
        for m in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True)


def kill_workloads(layout: Layout) -> None:
    """Kill every container, shim and process left in the cluster's cgroup root."""
    spec = layout.spec
    kill_pids(pids_with_arg(str(layout.containerd_socket)))  # containerd-shim-runc-v2 -address <socket>
    for _ in range(20):
        pids = cgroup_pids(spec.cgroup_root)
        if not pids:
            break
        kill_pids(pids)
        time.sleep(0.1)
    unmount_all(layout.root, layout.runtime)
    remove_cgroup(spec.cgroup_root)


def remove_containers(layout: Layout) -> None:
    """Kill and delete every task and container through containerd, so shims exit cleanly."""
    tasks = ctr(layout, "tasks", "ls", "-q", timeout=30)
    for task in tasks.stdout.split():
        ctr(layout, "tasks", "kill", "--signal", "SIGKILL", task, timeout=30)
    deadline = time.monotonic() + 10
    for task in tasks.stdout.split():
        while time.monotonic() < deadline:
            if ctr(layout, "tasks", "delete", "--force", task, timeout=30).returncode == 0:
                break
            time.sleep(0.2)
    for container in ctr(layout, "containers", "ls", "-q", timeout=30).stdout.split():
        ctr(layout, "containers", "delete", container, timeout=30)


def remove_network_leftovers(layout: Layout) -> None:
    """CNI's cached results of this cluster's pods (their namespaces are gone by now)."""
    results = Path("/var/lib/cni/results")
    if results.is_dir():
        for f in results.glob(f"conveyor{layout.spec.index}-*"):
            f.unlink(missing_ok=True)
