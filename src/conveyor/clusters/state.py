"""What `conveyor cluster list` shows about one cluster."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ClusterStatus:
    name: str
    kind: str
    api_url: str
    state: str
    nodes: str = "-"
    version: str = "-"
    processes: dict[str, int | None] = field(default_factory=dict)
    kubeconfig: str = ""
    node_ip: str = ""  # local clusters: NodePorts answer here, from the host
    host_gateway: str = ""  # local clusters: where pods reach the host's forwarded ports
