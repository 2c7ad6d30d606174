"""Flux v2 as a cluster's agent: its controllers (built here for tests and the demo), the manifests
that point it at Conveyor, and the events endpoint that turns its events into deploy statuses.

Public interface for other components (server, web, demo, tests):
"""

from conveyor.clusters.flux.build import FLUX_VERSION, FluxControllers, FluxUnavailable, ensure_controllers
from conveyor.clusters.flux.events import DeployState, FluxEvent, parse, parse_revision, state_of
from conveyor.clusters.flux.manifests import FluxSetup, SyncTarget, events_addr, receiver_path
from conveyor.clusters.flux.report import last_reports
from conveyor.clusters.models import FluxReport  # the record type last_reports returns

__all__ = [
    "FLUX_VERSION",
    "FluxReport",
    "DeployState",
    "FluxControllers",
    "FluxEvent",
    "FluxSetup",
    "FluxUnavailable",
    "SyncTarget",
    "ensure_controllers",
    "events_addr",
    "last_reports",
    "parse",
    "parse_revision",
    "receiver_path",
    "state_of",
]
