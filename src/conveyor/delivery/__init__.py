"""Delivery: the CD stage. Renders each environment, opens GitOps PRs, waits for merge and deployment,
verifies, promotes and rolls back, and keeps the records the DORA metrics come from.

Public interface for other components (web, demo, cli, server):

- the promotion state machine: ``PromotionState``, ``TRANSITIONS`` (state -> handler, allowed next
  states, what it waits for), ``transitions_markdown()`` (the table as docs/architecture.md shows it),
  ``ACTIVE_STATES``, ``TERMINAL_STATES``, ``FAILURE_STATES``;
- the engine and its injected interfaces: ``PromotionEngine``, ``Ports``, ``real_ports``;
- read models and queries: ``App``, ``Promotion``, ``PromotionEvent``, ``EnvStatus``, ``app_status``,
  ``running_version``, ``waiting_on``, ``promotion_of_pr``, ``dora_for``, ``gitops_repo_names``;
- environments: ``Environment``, ``load_environments``, ``promotion_order``, ``DEFAULT_ENVIRONMENTS``;
- actions: ``init_gitops_repo``, ``promote``, ``rollback``; ``probe_endpoint`` (GET an app's endpoint
  as verification does: by default through the Service's NodePort on a local cluster's node, through
  the API server's service proxy on a registered one; ``Via`` picks) and ``probe_service`` (always
  the service proxy).
"""

from conveyor.delivery.adapters import real_ports
from conveyor.delivery.clusters_access import probe_endpoint, probe_service
from conveyor.delivery.engine import PromotionEngine
from conveyor.delivery.environments import Environment, Via, load_environments, promotion_order
from conveyor.delivery.gitops import DEFAULT_ENVIRONMENTS, gitops_repo_names, init_gitops_repo
from conveyor.delivery.models import App, Promotion, PromotionEvent
from conveyor.delivery.ports import Ports
from conveyor.delivery.start import promote, rollback
from conveyor.delivery.states import ACTIVE_STATES, FAILURE_STATES, TERMINAL_STATES, PromotionState
from conveyor.delivery.status import (
    EnvStatus,
    app_status,
    dora_for,
    promotion_of_pr,
    running_version,
    waiting_on,
)
from conveyor.delivery.transitions import TRANSITIONS, Transition
from conveyor.delivery.transitions import markdown_table as transitions_markdown

__all__ = [
    "ACTIVE_STATES",
    "DEFAULT_ENVIRONMENTS",
    "FAILURE_STATES",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "App",
    "EnvStatus",
    "Environment",
    "Ports",
    "Promotion",
    "PromotionEngine",
    "PromotionEvent",
    "PromotionState",
    "Transition",
    "Via",
    "app_status",
    "dora_for",
    "gitops_repo_names",
    "init_gitops_repo",
    "load_environments",
    "promote",
    "promotion_of_pr",
    "probe_endpoint",
    "probe_service",
    "promotion_order",
    "real_ports",
    "rollback",
    "running_version",
    "transitions_markdown",
    "waiting_on",
]
