"""Keeping the GitOps repository honest.

- A PR to ``main`` gets the ``conveyor/environments`` check: every environment file parses, names a
  known cluster and forms a promotion order. ``main`` requires it, so a broken definition never lands.
- When ``main`` changes, the protection of every environment branch is brought in line with it.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.clusters import spec as cluster_specs
from conveyor.core import ConveyorError, Role, Settings, service_principal
from conveyor.core.models import Event
from conveyor.delivery.environments import Environment, load_environments, promotion_order
from conveyor.delivery.models import GitopsRepo
from conveyor.delivery.records import SERVICE_USER
from conveyor.forge import bare, get_repo, post_status

ENVIRONMENTS_CHECK = "conveyor/environments"
DELIVERY = service_principal(SERVICE_USER, Role.CLUSTER_ADMIN)


def _is_gitops(session: Session, name: str | None) -> bool:
    return bool(name) and session.execute(
        select(GitopsRepo.id).where(GitopsRepo.name == name)).first() is not None


def check_environments(settings: Settings, envs: dict[str, Environment]) -> list[str]:
    problems = []
    promotion_order(envs)  # raises on cycles
    for env in envs.values():
        if not cluster_specs.exists(settings.data_dir, env.cluster):
            problems.append(f"environments/{env.name}.yaml: unknown cluster '{env.cluster}' "
                            "(see `conveyor cluster list`)")
    return problems


def on_pull_request(session: Session, settings: Settings, event: Event) -> None:
    p = event.payload
    if p.get("target_branch") != "main" or not _is_gitops(session, p.get("repo")):
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


def on_push(session: Session, settings: Settings, event: Event) -> None:
    from conveyor.delivery.gitops import protect_environments

    p = event.payload
    if p.get("branch") != "main" or p.get("deleted") or not _is_gitops(session, p.get("repo")):
        return
    repo = get_repo(session, p["repo"])
    try:
        envs = load_environments(bare(settings, repo), p["after"])
    except ConveyorError:
        return  # the environments check keeps such a main from merging; nothing to sync
    protect_environments(session, settings, DELIVERY, repo, envs)
