"""Local Kubernetes clusters (control plane + a real kubelet node per cluster) and registered ones.

Public interface for other components (the agent, delivery, tests):
"""

from conveyor.clusters.agent_reports import last_report as last_agent_report
from conveyor.clusters.agent_reports import sanitise as sanitise_agent_status
from conveyor.clusters.binaries import KUBERNETES_VERSION, BinariesMissing, KubeBinaries, ensure_binaries
from conveyor.clusters.external import add as add_external
from conveyor.clusters.kubeapi import KubeClient, node_ready
from conveyor.clusters.kubeconfig import Credentials
from conveyor.clusters.kubeconfig import credentials as kubeconfig_credentials
from conveyor.clusters.layout import Layout
from conveyor.clusters.local import admin_client, create, delete, ensure_running, list_status, status
from conveyor.clusters.registration import AgentKind, age_recipient, get_registration, registrations
from conveyor.clusters.spec import ClusterSpec, list_specs, load
from conveyor.clusters.state import ClusterStatus

__all__ = [
    "AgentKind",
    "age_recipient",
    "get_registration",
    "registrations",
    "last_agent_report",
    "sanitise_agent_status",
    "KUBERNETES_VERSION",
    "BinariesMissing",
    "ClusterSpec",
    "ClusterStatus",
    "Credentials",
    "KubeBinaries",
    "KubeClient",
    "Layout",
    "add_external",
    "admin_client",
    "create",
    "kubeconfig_credentials",
    "delete",
    "ensure_binaries",
    "ensure_running",
    "list_specs",
    "list_status",
    "load",
    "node_ready",
    "status",
]
