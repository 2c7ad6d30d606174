"""Starting promotions: from a successful CI run (the outbox event) or by hand (`conveyor promote`)."""

from __future__ import annotations

import json
import logging
import tarfile
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.core import Conflict, NotFound, Settings, Unprocessable, record
from conveyor.delivery.environments import Environment, promotion_order
from conveyor.delivery.gitops import current_environments, gitops_repo_names
from conveyor.delivery.governance import hold
from conveyor.delivery.models import App, Promotion
from conveyor.delivery.records import SERVICE_USER, note
from conveyor.delivery.states import PromotionState as S
from conveyor.delivery.trust import SourceFacts, judge_source
from conveyor.forge import bare, get_repo, pr_merged_as, protection_for
from conveyor.pipelines import blob_path, get_by_digest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Release:
    """One CI-built version of an app: what CD deploys."""

    app: str
    version: str
    source_repo: str
    source_commit: str
    committed_at: datetime | None
    author: str
    ci_run: str | None
    image: str
    image_tag: str
    image_digest: str
    templates_artifact: str
    # Set when CI rebuilt the app because its base image changed (the CI event's ``security_update``):
    # the risk rule treats it as a security-related change.
    security_update: str | None = None


def _templates_meta(settings: Settings, session: Session, digest: str) -> dict[str, Any]:
    get_by_digest(session, digest)
    with tarfile.open(blob_path(settings, digest), "r:gz") as tar:
        member = tar.extractfile("conveyor-templates.json")
        if member is None:
            raise Unprocessable("templates artifact has no conveyor-templates.json", rule="cd.artifact")
        meta: dict[str, Any] = json.loads(member.read())
        return meta


def change_author(session: Session, repo_name: str, sha: str, fallback: str) -> str:
    """Whose change this is: the author of the PR whose merge produced ``sha``, else who started its CI."""
    pr = pr_merged_as(session, get_repo(session, repo_name), sha)
    return pr.author if pr is not None else fallback


def source_facts(session: Session, settings: Settings, repo_name: str, sha: str) -> SourceFacts:
    """What the forge says about the commit a CI run built: is it on the protected default branch?"""
    repo = get_repo(session, repo_name)
    git = bare(settings, repo)
    tip = git.branch_tip(repo.default_branch)
    on_branch = tip is not None and git.has_commit(sha) and git.is_ancestor(sha, tip)
    return SourceFacts(repo.default_branch, protection_for(repo, repo.default_branch) is not None, on_branch)


def release_from_ci_event(session: Session, settings: Settings, p: dict[str, Any], actor: str) -> Release | None:
    image = p.get("image") or {}
    templates = next((a for a in p.get("artifacts", []) if a.get("kind") == "templates"), None)
    if not image.get("digest") or templates is None:
        log.info("CI run %s published no image or no templates: nothing to deliver", p.get("run_id"))
        return None
    meta = _templates_meta(settings, session, templates["digest"])
    sha = str(p["sha"])
    tags = [t for t in image.get("tags", []) if t != sha]
    git = bare(settings, get_repo(session, p["repo"]))
    committed = git.run("show", "-s", "--format=%cI", sha, check=False).stdout.strip()
    return Release(
        app=str(meta["app"]),
        version=f"{meta['version']}-{meta['build']}" if meta.get("build") else str(meta["version"]),
        source_repo=str(p["repo"]),
        source_commit=sha,
        committed_at=datetime.fromisoformat(committed) if committed else None,
        author=change_author(session, p["repo"], sha, str(p.get("created_by") or actor)),
        ci_run=str(p.get("run_id")),
        image=str(image["repository"]),
        image_tag=tags[0] if tags else sha,
        image_digest=str(image["digest"]),
        templates_artifact=str(templates["digest"]),
        security_update=(p.get("security_update") or {}).get("reason"),
    )


def app_gitops_repo(session: Session, release: Release) -> str:
    app = session.execute(select(App).where(App.name == release.app)).scalar_one_or_none()
    if app is not None:
        return app.gitops_repo
    names = gitops_repo_names(session)
    if not names:
        raise NotFound("no GitOps repository: run `conveyor gitops init REPO` first", rule="gitops.exists")
    session.add(App(name=release.app, source_repo=release.source_repo, gitops_repo=names[0]))
    return names[0]


def create_promotion(
    session: Session, release: Release, env: Environment, gitops_repo: str, promoted_from: int | None = None
) -> Promotion:
    p = Promotion(
        app=release.app, env=env.name, version=release.version, source_repo=release.source_repo,
        source_commit=release.source_commit, source_committed_at=release.committed_at, author=release.author,
        ci_run=release.ci_run, image=release.image, image_digest=release.image_digest,
        image_tag=release.image_tag, templates_artifact=release.templates_artifact, gitops_repo=gitops_repo,
        promoted_from=promoted_from, state=S.PENDING, security_update=release.security_update,
    )
    session.add(p)
    session.flush()
    note(session, p, "created", f"{release.app} {release.version} queued for {env.name}",
         image=f"{release.image}:{release.image_tag}@{release.image_digest}", commit=release.source_commit)
    return p


def release_of(p: Promotion) -> Release:
    return Release(
        app=p.app, version=p.version, source_repo=p.source_repo, source_commit=p.source_commit,
        committed_at=p.source_committed_at, author=p.author, ci_run=p.ci_run, image=p.image,
        image_tag=p.image_tag, image_digest=p.image_digest, templates_artifact=p.templates_artifact or "",
        security_update=p.security_update,
    )


def on_ci_succeeded(session: Session, settings: Settings, p: dict[str, Any], actor: str) -> None:
    """Outbox consumer: a successful CI run of a commit on the protected default branch starts its
    promotion to the first environment(s); any other CI run is recorded as not deployable."""
    if session.execute(select(Promotion.id).where(Promotion.ci_run == str(p.get("run_id")))).first():
        return  # redelivered event
    refusal = judge_source(p, source_facts(session, settings, str(p["repo"]), str(p["sha"])))
    if refusal is not None:
        record(session, actor=SERVICE_USER, action="delivery.release_refused",
               target=f"{p['repo']}#run-{p.get('number')}",
               payload={"repo": p["repo"], "run_id": p.get("run_id"), "number": p.get("number"), "sha": p["sha"],
                        "ref": p.get("ref"), "trigger": p.get("trigger"), "deployable": False,
                        "rule": refusal.rule, "message": refusal.message})
        log.info("CI run %s not delivered: %s", p.get("run_id"), refusal.message)
        return
    release = release_from_ci_event(session, settings, p, actor)
    if release is None:
        return
    repo = app_gitops_repo(session, release)
    envs = current_environments(session, settings, repo)
    for env in promotion_order(envs):
        if env.after is None:
            create_promotion(session, release, env, repo)


def _app_env(session: Session, settings: Settings, app: str, env_name: str) -> tuple[App, Environment]:
    row = session.execute(select(App).where(App.name == app)).scalar_one_or_none()
    if row is None:
        raise NotFound(f"no app named '{app}' has been delivered yet", rule="app.exists")
    env = current_environments(session, settings, row.gitops_repo).get(env_name)
    if env is None:
        raise NotFound(f"no environment '{env_name}' in '{row.gitops_repo}'", rule="env.exists")
    return row, env


def promote(session: Session, settings: Settings, app: str, env_name: str, version: str | None,
            by: str | None = None) -> Promotion:
    """By hand: deploy a version (default: the one verified in the previous environment) to ``env_name``.

    A person's decision: holds and bad versions do not stop it (freezes and approvals still do)."""
    row, env = _app_env(session, settings, app, env_name)
    q = select(Promotion).where(Promotion.app == app, Promotion.is_rollback.is_(False))
    if version:
        q = q.where(Promotion.version == version)
    elif env.after:
        q = q.where(Promotion.env == env.after, Promotion.state == S.VERIFIED)
    source = session.execute(q.order_by(Promotion.id.desc()).limit(1)).scalar_one_or_none()
    if source is None:
        what = f"version {version}" if version else f"a version verified in {env.after}"
        raise NotFound(f"no record of {what} of '{app}'", rule="promote.source")
    active = session.execute(select(Promotion).where(
        Promotion.app == app, Promotion.env == env_name, Promotion.version == source.version,
        Promotion.state.in_((S.PENDING, S.PR_OPEN, S.MERGED, S.APPLIED)))).scalar_one_or_none()
    if active is not None:
        raise Conflict(f"{app} {source.version} is already being promoted to {env_name} (#{active.id})",
                       rule="promote.active")
    p = create_promotion(session, release_of(source), env, row.gitops_repo, promoted_from=source.id)
    p.started_by = by or "someone"
    return p


def rollback(session: Session, settings: Settings, app: str, env_name: str, to: str | None,
             by: str | None = None) -> Promotion:
    """Deploy an earlier verified version again (default: the one before what runs now), and hold the
    environment: the next build does not undo the rollback without a decision."""
    row, env = _app_env(session, settings, app, env_name)
    verified = list(session.execute(select(Promotion).where(
        Promotion.app == app, Promotion.env == env_name, Promotion.state == S.VERIFIED)
        .order_by(Promotion.id.desc())).scalars())
    if to is not None:
        target = next((p for p in verified if p.version == to), None)
    else:
        current = verified[0].version if verified else None
        target = next((p for p in verified if p.version != current), None)
    if target is None:
        raise NotFound(f"no earlier verified version{' ' + to if to else ''} of '{app}' in {env_name}",
                       rule="rollback.target")
    p = create_promotion(session, release_of(target), env, row.gitops_repo, promoted_from=target.id)
    p.is_rollback = True
    p.started_by = by or "someone"
    hold(session, app, env_name, f"rolled back to {target.version} by {p.started_by}", by=p.started_by, promotion=p.id)
    return p
