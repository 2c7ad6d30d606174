"""Repositories: the DB row and the bare repository on disk, kept in step."""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.core import Conflict, InvalidInput, NotFound, Principal, Settings, after_commit, record
from conveyor.forge import receive_hooks
from conveyor.forge.git import BareRepo
from conveyor.forge.models import BranchProtection, Repository
from conveyor.forge.names import validate_branch_name, validate_repo_name

REPO_KINDS = ("app", "gitops")


def repo_path(settings: Settings, name: str) -> Path:
    return settings.repos_dir / f"{validate_repo_name(name)}.git"


def bare(settings: Settings, repo: Repository) -> BareRepo:
    return BareRepo(repo_path(settings, repo.name))


def get_repo(session: Session, name: str) -> Repository:
    validate_repo_name(name)
    repo = session.execute(select(Repository).where(Repository.name == name)).scalar_one_or_none()
    if repo is None:
        raise NotFound(f"no repository named '{name}'", rule="repo.exists")
    return repo


def repo_by_id(session: Session, repo_id: int) -> Repository | None:
    return session.get(Repository, repo_id)


def install_hooks(path: Path) -> None:
    hooks = path / "hooks"
    hooks.mkdir(exist_ok=True)
    script = Path(receive_hooks.__file__).resolve()
    for name in ("pre-receive", "post-receive"):
        target = hooks / name
        tmp = hooks / f".{name}.tmp"
        tmp.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S -I "{script}" {name}\n')
        tmp.chmod(0o755)
        os.replace(tmp, target)
    (path / "conveyor" / "spool").mkdir(parents=True, exist_ok=True)


# Branches of GitOps repositories that only the server writes (delivery's deploy branches).
SERVER_ONLY_BRANCHES = {"gitops": ["deploy/"]}
# Branches of GitOps repositories that only cluster-admins and admins push (environment branches:
# protected ones refuse every push anyway; this keeps a developer from creating `env/<name>` with
# manifests of their choice before an environment of that name exists, or pushing to one whose
# protection was not set up).
MANAGER_ONLY_BRANCHES = {"gitops": ["env/"]}


def write_protection_file(settings: Settings, repo: Repository, session: Session | None = None) -> None:
    """Mirror what the pre-receive hook enforces into ``conveyor/protected.json`` (the hook has no DB).

    Protected branch names; branch prefixes only the server writes; and the source branch of every
    open PR with its author, so that nobody else force-pushes or deletes it (``push.pr-branch``).
    """
    conf_dir = repo_path(settings, repo.name) / "conveyor"
    conf_dir.mkdir(parents=True, exist_ok=True)
    policy: dict[str, object] = {
        "protected": sorted(p.branch for p in repo.protections),
        "server_only": SERVER_ONLY_BRANCHES.get(repo.kind, []),
        "managers_only": MANAGER_ONLY_BRANCHES.get(repo.kind, []),
        "pr_branches": open_pr_branches(session, repo) if session is not None else _kept_pr_branches(conf_dir),
    }
    tmp = conf_dir / f".protected.{uuid.uuid4().hex}.tmp"
    tmp.write_text(json.dumps(policy))
    os.replace(tmp, conf_dir / "protected.json")


def _kept_pr_branches(conf_dir: Path) -> dict[str, str]:
    try:
        data = json.loads((conf_dir / "protected.json").read_text())
    except (OSError, ValueError):
        return {}
    return dict(data.get("pr_branches", {})) if isinstance(data, dict) else {}


def open_pr_branches(session: Session, repo: Repository) -> dict[str, str]:
    from conveyor.forge.models import PullRequest

    rows = session.execute(select(PullRequest.source_branch, PullRequest.author).where(
        PullRequest.repo_id == repo.id, PullRequest.state.in_(("open", "merging"))).order_by(PullRequest.id))
    return {branch: author for branch, author in rows}


def create_repo(
    session: Session, settings: Settings, principal: Principal, name: str, default_branch: str = "main",
    description: str = "", kind: str = "app",
) -> Repository:
    validate_repo_name(name)
    validate_branch_name(default_branch)
    if session.execute(select(Repository).where(Repository.name == name)).scalar_one_or_none():
        raise Conflict(f"repository '{name}' already exists", rule="repo.unique-name")
    path = repo_path(settings, name)
    if path.exists():
        # Left over by a crash between mkdir and commit: nothing references it, start afresh.
        shutil.rmtree(path)
    tmp = settings.repos_dir / f".new-{uuid.uuid4().hex}.git"
    BareRepo.init(tmp, default_branch)
    install_hooks(tmp)
    if kind not in REPO_KINDS:
        raise InvalidInput(f"repository kind must be one of {', '.join(REPO_KINDS)}", rule="repo.kind")
    repo = Repository(name=name, default_branch=default_branch, created_by=principal.name, description=description,
                      kind=kind)
    session.add(repo)
    session.flush()
    os.rename(tmp, path)
    write_protection_file(settings, repo, session)
    record(session, actor=principal.name, action="repo.created", target=name, payload={"repo": name})
    return repo


def delete_repo(session: Session, settings: Settings, principal: Principal, name: str) -> None:
    repo = get_repo(session, name)
    path = repo_path(settings, name)
    session.delete(repo)
    record(session, actor=principal.name, action="repo.deleted", target=name, payload={"repo": name})
    session.flush()

    def _remove_from_disk() -> None:
        if path.exists():
            trash = settings.repos_dir / f".deleted-{uuid.uuid4().hex}"
            os.rename(path, trash)
            shutil.rmtree(trash, ignore_errors=True)

    after_commit(session, _remove_from_disk)


def list_repos(session: Session) -> list[Repository]:
    return list(session.execute(select(Repository).order_by(Repository.name)).scalars())


def protection_for(repo: Repository, branch: str) -> BranchProtection | None:
    return next((p for p in repo.protections if p.branch == branch), None)


def set_protection(
    session: Session,
    settings: Settings,
    principal: Principal,
    repo: Repository,
    branch: str,
    *,
    approvals: int,
    required_checks: list[str],
    approver_roles: list[str],
    no_self_approval: bool,
    trusted_openers: list[str] | None = None,
    approvals_for_others: int | None = None,
) -> BranchProtection:
    from conveyor.core.auth import parse_role

    validate_branch_name(branch)
    for r in approver_roles:
        parse_role(r)
    if approvals < 0 or approvals > 20:
        raise InvalidInput("approvals must be between 0 and 20", rule="protect.approvals")
    if approvals_for_others is not None and not 1 <= approvals_for_others <= 20:
        raise InvalidInput("approvals_for_others must be between 1 and 20", rule="protect.approvals")
    rule = protection_for(repo, branch)
    if rule is None:
        rule = BranchProtection(repo_id=repo.id, branch=branch)
        repo.protections.append(rule)
    rule.required_approvals = approvals
    rule.required_checks = sorted(set(required_checks))
    rule.approver_roles = sorted(set(approver_roles))
    rule.no_self_approval = no_self_approval
    rule.trusted_openers = sorted(set(trusted_openers or []))
    rule.approvals_for_others = approvals_for_others
    session.flush()
    write_protection_file(settings, repo, session)
    record(
        session,
        actor=principal.name,
        action="repo.protection_changed",
        target=f"{repo.name}:{branch}",
        payload={
            "repo": repo.name,
            "branch": branch,
            "approvals": approvals,
            "required_checks": rule.required_checks,
            "approver_roles": rule.approver_roles,
            "no_self_approval": no_self_approval,
            "trusted_openers": rule.trusted_openers,
            "approvals_for_others": approvals_for_others,
        },
    )
    return rule


def remove_protection(
    session: Session, settings: Settings, principal: Principal, repo: Repository, branch: str
) -> None:
    rule = protection_for(repo, branch)
    if rule is None:
        raise NotFound(f"branch '{branch}' of '{repo.name}' is not protected")
    repo.protections.remove(rule)
    session.flush()
    write_protection_file(settings, repo, session)
    record(
        session,
        actor=principal.name,
        action="repo.protection_removed",
        target=f"{repo.name}:{branch}",
        payload={"repo": repo.name, "branch": branch},
    )
