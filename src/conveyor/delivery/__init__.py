"""Delivery: the CD stage. Renders each environment, opens GitOps PRs, waits for merge and deployment,
verifies, promotes and rolls back, and keeps the records the DORA metrics come from.

Public interface for other components (web, demo):
"""

from conveyor.delivery.environments import Environment, load_environments, promotion_order
from conveyor.delivery.gitops import init_gitops_repo
from conveyor.delivery.start import promote, rollback
from conveyor.delivery.status import EnvStatus, app_status, dora_for, running_version

__all__ = [
    "EnvStatus",
    "Environment",
    "app_status",
    "dora_for",
    "init_gitops_repo",
    "load_environments",
    "promote",
    "promotion_order",
    "rollback",
    "running_version",
]
