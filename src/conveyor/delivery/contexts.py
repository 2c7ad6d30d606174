"""The commit-status contexts delivery owns (see docs/security.md: who may post which context)."""

from __future__ import annotations

DIFF_CHECK = "conveyor/diff"  # on a GitOps PR head: the cluster's server-side dry run of the change
ENVIRONMENTS_CHECK = "conveyor/environments"  # on a GitOps main PR head: environment definitions valid
CD_PREFIX = "conveyor/cd/"  # on an application commit: its deployment to each environment
GATE_CHECK = "conveyor/cd/gate"  # on a GitOps PR head to an environment branch: the governance rules
DEPLOY_PREFIX = "conveyor/deploy/"  # posted by each cluster's agent: conveyor/deploy/<cluster>/<sync>


def cd_context(env: str) -> str:
    return f"{CD_PREFIX}{env}"


def deploy_prefix(cluster: str) -> str:
    return f"{DEPLOY_PREFIX}{cluster}/"
