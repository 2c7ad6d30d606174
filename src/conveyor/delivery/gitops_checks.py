"""Keeping the GitOps repository honest.

- A PR to ``main`` gets the ``conveyor/environments`` check: every environment file parses, names a
  known cluster and forms a promotion order. ``main`` requires it, so a broken definition never lands.
- When ``main`` changes, the protection of every environment branch is brought in line with it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from conveyor.clusters import list_specs
from conveyor.core import ConveyorError, Role, Settings, service_principal
from conveyor.delivery.contexts import ENVIRONMENTS_CHECK
from conveyor.delivery.environments import Environment, load_environments, promotion_order
from conveyor.delivery.gates import refresh_gates
from conveyor.delivery.gitops import is_gitops_repo, protect_environments
from conveyor.delivery.records import SERVICE_USER
from conveyor.forge import bare, get_repo, post_status

DELIVERY = service_principal(SERVICE_USER, Role.CLUSTER_ADMIN)


def check_environments(settings: Settings, envs: dict[str, Environment]) -> list[str]:
    problems = []
    promotion_order(envs)  # raises on cycles
    known = {c.name for c in list_specs(settings.data_dir)}
    for env in envs.values():
        if env.cluster not in known:
            problems.append(f"environments/{env.name}.yaml: unknown cluster '{env.cluster}' "
                            "(see `conveyor cluster list`)")
    return problems


def on_pull_request(session: Session, settings: Settings, p: dict[str, Any]) -> None:
    """A PR to a GitOps repository's main: the ``conveyor/environments`` check on its head; to an
    environment branch: the ``conveyor/cd/gate`` check."""
    if not is_gitops_repo(session, p.get("repo")):
        return
    if p.get("target_branch") != "main":
        refresh_gates(session, settings, [p["repo"]])
        return
    repo = get_repo(session, p["repo"])
    try:
        envs = load_environments(bare(settings, repo), p["head_sha"])
        problems = check_environments(settings, envs)
    except ConveyorError as exc:
        problems = [exc.detail]
    post_status(session, settings, DELIVERY, repo, p["head_sha"],
                state="failure" if problems else "success", context=ENVIRONMENTS_CHECK,
                description=("; ".join(problems) or f"{len(envs)} environment(s) valid")[:900])


def on_push(session: Session, settings: Settings, p: dict[str, Any]) -> None:
    """main of a GitOps repository moved: environment branches get the protection it defines."""
    if p.get("branch") != "main" or p.get("deleted") or not is_gitops_repo(session, p.get("repo")):
        return
    repo = get_repo(session, p["repo"])
    try:
        envs = load_environments(bare(settings, repo), p["after"])
    except ConveyorError:
        return  # the environments check keeps such a main from merging; nothing to sync
    protect_environments(session, settings, DELIVERY, repo.name, envs)
