"""Which clusters exist: one ``cluster.json`` per cluster directory, no database table.

Choice: the registry of clusters is the set of directories ``<data_dir>/clusters/<name>/`` holding a
``cluster.json``. A local cluster *is* a set of files and processes under that directory, so the
directory is already the source of truth: ``conveyor cluster list/create/delete`` work with no
server running (they manage local processes directly), a crash cannot leave a table row and a
directory disagreeing, and deleting the directory is deleting the cluster. ``conveyor up`` reads
the same files to restart local clusters. The file is rewritten atomically (write + rename).

The spec records what must stay stable across restarts: ports, address ranges, the Kubernetes
version, and how far creation got (``phase``), which makes an interrupted create resumable.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from conveyor.core.errors import InvalidInput, NotFound
from conveyor.core.locks import file_lock

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,19}$")
MAX_CLUSTERS = 50

LOCAL = "local"
EXTERNAL = "external"

# phases of a local cluster's creation
CREATING = "creating"
READY = "ready"


def check_name(name: str) -> str:
    if not NAME_RE.match(name) or name.endswith("-"):
        raise InvalidInput(
            f"invalid cluster name {name!r}: 1-20 characters, lowercase letters, digits and '-', "
            "starting with a letter",
            rule="cluster-name",
        )
    return name


@dataclass
class Ports:
    api: int = 0
    etcd_client: int = 0
    etcd_peer: int = 0
    controller_manager: int = 0
    scheduler: int = 0
    kubelet: int = 0
    kubelet_healthz: int = 0

    def items(self) -> list[tuple[str, int]]:
        return list(asdict(self).items())


@dataclass
class ClusterSpec:
    name: str
    kind: str = LOCAL
    phase: str = CREATING
    created_at: float = field(default_factory=time.time)
    version: str = ""
    index: int = 0  # picks this cluster's address ranges and bridge
    ports: Ports = field(default_factory=Ports)
    registries: list[str] = field(default_factory=list)  # host:port of plain-HTTP registries
    host_ports: list[int] = field(default_factory=list)  # more host loopback ports the node may reach
    context: str | None = None  # external clusters: the kubeconfig context used

    @property
    def node_name(self) -> str:
        return f"{self.name}-node"

    @property
    def api_url(self) -> str:
        return f"https://127.0.0.1:{self.ports.api}"

    # Addresses (index i picks 10.200+i for the node side and 10.150+i for Services). The node lives in
    # network namespace `netns`, joined to the host by a veth pair on the /30 `link_subnet`; its pods
    # sit on `bridge` inside that namespace. The host routes the pod and Service ranges to the node.

    @property
    def netns(self) -> str:
        return f"conveyor{self.index}"

    @property
    def pod_subnet(self) -> str:
        return f"10.{200 + self.index}.0.0/24"

    @property
    def pod_gateway(self) -> str:  # the bridge's address inside the node's namespace
        return f"10.{200 + self.index}.0.1"

    @property
    def host_gateway(self) -> str:
        """Where pods (and the node) reach the host's Conveyor: the forwarder listens here, inside the
        node's namespace, on `forwarded_ports`, and dials 127.0.0.1:PORT on the host. Pods reach it as
        their default gateway; CoreDNS also answers `host.conveyor.internal` with it."""
        return self.pod_gateway

    @property
    def link_subnet(self) -> str:
        return f"10.{200 + self.index}.254.0/30"

    @property
    def host_link_ip(self) -> str:  # the host's end of the veth pair
        return f"10.{200 + self.index}.254.1"

    @property
    def node_ip(self) -> str:  # the node's end: InternalIP, kubelet address, NodePorts
        return f"10.{200 + self.index}.254.2"

    @property
    def host_veth(self) -> str:
        return f"cnv{self.index}h"

    @property
    def service_cidr(self) -> str:
        return f"10.{150 + self.index}.0.0/24"

    @property
    def service_ip(self) -> str:  # the `kubernetes` Service
        return f"10.{150 + self.index}.0.1"

    @property
    def dns_ip(self) -> str:  # the `kube-dns` Service, the kubelet's clusterDNS
        return f"10.{150 + self.index}.0.10"

    @property
    def bridge(self) -> str:
        return f"cnv{self.index}br"

    @property
    def forwarded_ports(self) -> list[int]:
        """Host loopback ports the node and its pods reach through the host gateway: the API server's,
        each loopback registry's (normally Conveyor's own port: registry, git and API in one) and
        `host_ports`."""
        ports = {self.ports.api, *self.host_ports}
        for host in self.registries:
            name, _, port = host.rpartition(":")
            if name in ("127.0.0.1", "localhost") and port.isdigit():
                ports.add(int(port))
        return sorted(ports)

    @property
    def cgroup_root(self) -> str:  # parent cgroup of everything the node runs
        return f"conveyor{self.index}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClusterSpec:
        data = dict(data)
        ports = Ports(**data.pop("ports", {}))
        known = {f for f in cls.__dataclass_fields__}
        return cls(ports=ports, **{k: v for k, v in data.items() if k in known})


def clusters_root(data_dir: Path) -> Path:
    return data_dir / "clusters"


def spec_path(data_dir: Path, name: str) -> Path:
    return clusters_root(data_dir) / name / "cluster.json"


def save(data_dir: Path, spec: ClusterSpec) -> None:
    path = spec_path(data_dir, spec.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(spec.to_json(), indent=2) + "\n")
    tmp.replace(path)


def load(data_dir: Path, name: str) -> ClusterSpec:
    check_name(name)
    path = spec_path(data_dir, name)
    if not path.exists():
        raise NotFound(f"no cluster named {name!r} in {clusters_root(data_dir)}", rule="cluster-exists")
    return ClusterSpec.from_json(json.loads(path.read_text()))


def exists(data_dir: Path, name: str) -> bool:
    return spec_path(data_dir, name).exists()


def list_specs(data_dir: Path) -> list[ClusterSpec]:
    root = clusters_root(data_dir)
    if not root.is_dir():
        return []
    out = []
    for path in sorted(root.glob("*/cluster.json")):
        try:
            out.append(ClusterSpec.from_json(json.loads(path.read_text())))
        except (ValueError, TypeError):
            continue  # a file being written by a crashed create; `create` of that name repairs it
    return out


# Address ranges, bridge and cgroup names are machine-wide, while data dirs are not: slots in
# /run/conveyor/slots/<index> name the cluster directory holding each index, so two Conveyor
# installations (a user's and a test run's) never pick the same one.
SLOTS_DIR = Path("/run/conveyor/slots")


def _slot_owner(index: int) -> Path | None:
    slot = SLOTS_DIR / str(index)
    try:
        owner = Path(slot.read_text().strip())
    except OSError:
        return None
    if not (owner / "cluster.json").exists():
        return None  # its cluster was deleted without releasing the slot
    return owner


def claim_index(cluster_dir: Path, index: int | None = None) -> int:
    """Claim (or re-claim after a reboot) a machine-wide index for a local cluster."""
    with file_lock(SLOTS_DIR / ".lock"):
        candidates = [index] if index is not None else list(range(MAX_CLUSTERS))
        for i in candidates:
            owner = _slot_owner(i)
            if owner is None or owner == cluster_dir:
                (SLOTS_DIR / str(i)).write_text(str(cluster_dir))
                return i
        if index is not None:
            raise InvalidInput(
                f"address slot {index} of this cluster is held by {_slot_owner(index)}", rule="cluster-slot"
            )
    raise InvalidInput(f"at most {MAX_CLUSTERS} local clusters per machine", rule="cluster-count")


def release_index(cluster_dir: Path, index: int) -> None:
    slot = SLOTS_DIR / str(index)
    try:
        if Path(slot.read_text().strip()) == cluster_dir:
            slot.unlink()
    except OSError:
        pass
