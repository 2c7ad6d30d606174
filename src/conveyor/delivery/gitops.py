"""The GitOps repository: ``main`` holds environment definitions, ``env/<name>`` what each cluster runs.

Every branch is protected: ``main`` changes by cluster administrators' reviewed PRs, each environment
branch by PRs that meet that environment's approval policy. The protection of environment branches
follows ``environments/*.yaml`` on ``main`` and is re-applied whenever ``main`` changes.
"""

from __future__ import annotations

from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.core import Conflict, NotFound, Principal, Settings, record
from conveyor.delivery.contexts import DIFF_CHECK, ENVIRONMENTS_CHECK, GATE_CHECK
from conveyor.delivery.environments import ENV_DIR, Environment, load_environments
from conveyor.delivery.models import GitopsRepo
from conveyor.delivery.records import SERVICE_USER
from conveyor.forge import bare, create_repo, get_repo, set_protection, write_branch

DEFAULT_ENVIRONMENTS: dict[str, dict[str, Any]] = {
    "dev": {
        "cluster": "nonprod",
        "namespace": "{app}-dev",
        "auto_merge": True,
        "approvals": {"required": 0},
        "verify": {"path": "/healthz", "expect_status": 200, "timeout": "2m"},
        "values": {"replicaCount": 1},
    },
    "qa": {
        "cluster": "nonprod",
        "namespace": "{app}-qa",
        "after": "dev",
        "approvals": {"required": 1, "approver_roles": ["reviewer", "cluster-admin"]},
        "verify": {"path": "/healthz", "expect_status": 200, "timeout": "2m"},
        "values": {"replicaCount": 1},
    },
    "prod": {
        "cluster": "prod",
        "namespace": "{app}-prod",
        "after": "qa",
        "approvals": {"required": 2, "approver_roles": ["cluster-admin"], "allow_author": False},
        "verify": {"path": "/healthz", "expect_status": 200, "timeout": "3m"},
        "values": {"replicaCount": 2},
    },
}

README = """# GitOps repository

Desired state of every environment, changed only through reviewed pull requests.

- `main`: `environments/<env>.yaml` (cluster, namespace, promotion order, approvals, verification,
  values) and `environments/<env>/<app>.yaml` (per-app values). Owned by cluster administrators.
- `env/<env>`: what the environment's cluster runs. `rendered/<app>.yaml` is applied by the
  cluster's agent; `source/<app>/` holds the templates and the exact values used, for review.
"""


def gitops_repo_names(session: Session) -> list[str]:
    return list(session.execute(select(GitopsRepo.name).order_by(GitopsRepo.id)).scalars())


def is_gitops_repo(session: Session, name: str | None) -> bool:
    return bool(name) and session.execute(
        select(GitopsRepo.id).where(GitopsRepo.name == name)).first() is not None


def protect_environments(
    session: Session, settings: Settings, principal: Principal, repo_name: str, envs: dict[str, Environment]
) -> None:
    repo = get_repo(session, repo_name)
    set_protection(session, settings, principal, repo, "main", approvals=1, required_checks=[ENVIRONMENTS_CHECK],
                   approver_roles=["cluster-admin"], no_self_approval=True)
    for env in envs.values():
        set_protection(
            session, settings, principal, repo, env.branch,
            approvals=env.approvals.required,
            required_checks=[DIFF_CHECK, GATE_CHECK],
            approver_roles=list(env.approvals.approver_roles),
            no_self_approval=not env.approvals.allow_author,
            # Only delivery's own PRs (from a CI release) follow the environment's rule as it is;
            # any other change to what a cluster runs needs a second person.
            trusted_openers=[SERVICE_USER],
            approvals_for_others=max(1, env.approvals.required),
        )


def init_gitops_repo(
    session: Session,
    settings: Settings,
    principal: Principal,
    name: str,
    environments: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Environment]:
    """Create the GitOps repository with its environments, branches and protection."""
    if session.execute(select(GitopsRepo).where(GitopsRepo.name == name)).scalar_one_or_none():
        raise Conflict(f"'{name}' is already a GitOps repository", rule="gitops.exists")
    repo = create_repo(session, settings, principal, name, "main", "GitOps: desired state of every environment",
                       kind="gitops")
    defs = environments or DEFAULT_ENVIRONMENTS
    files: dict[str, bytes | None] = {"README.md": README.encode()}
    for env_name, spec in defs.items():
        files[f"{ENV_DIR}/{env_name}.yaml"] = yaml.safe_dump(spec, sort_keys=False).encode()
    main = write_branch(session, settings, principal, repo, "main", files, "Define environments")
    envs = load_environments(bare(settings, repo), main)  # validates what we wrote
    for env in envs.values():
        readme = (f"# Environment {env.name}\n\nApplied by the agent of cluster `{env.cluster}` "
                  f"from `rendered/`. Changed only by pull requests.\n")
        write_branch(session, settings, principal, repo, env.branch,
                     {"README.md": readme.encode(), "rendered/.keep": b""}, f"Start environment {env.name}")
    session.add(GitopsRepo(name=name))
    session.flush()
    protect_environments(session, settings, principal, name, envs)
    record(session, actor=principal.name, action="gitops.initialized", target=name,
           payload={"repo": name, "environments": sorted(envs)})
    return envs


def current_environments(session: Session, settings: Settings, name: str) -> dict[str, Environment]:
    repo = get_repo(session, name)
    git = bare(settings, repo)
    tip = git.branch_tip("main")
    if tip is None:
        raise NotFound(f"GitOps repository '{name}' has no main branch", rule="gitops.main")
    return load_environments(git, tip)
