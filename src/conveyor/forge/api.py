"""The forge's REST routes under /api/v1/repos."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse

from conveyor.core import Permission, PrincipalDep, Role, SessionDep, Settings, outbound, state_of
from conveyor.core.limits import LIST_BODY_CHARS
from conveyor.forge import pulls, repos, statuses, webhooks
from conveyor.forge.models import CommitStatus, PullRequest, Repository, Review, Webhook
from conveyor.forge.schemas import (
    BlockerOut,
    BranchOut,
    CombinedStatusOut,
    CommitOut,
    DeliveryOut,
    FileStatOut,
    HookIn,
    HookOut,
    MergeabilityOut,
    MergeIn,
    ProtectionIn,
    ProtectionOut,
    PullCreate,
    PullDetailOut,
    PullOut,
    RepoCreate,
    RepoOut,
    ReviewIn,
    ReviewOut,
    StatusIn,
    StatusOut,
)
from conveyor.forge.statuses import CombinedStatus, StatusView

router = APIRouter(prefix="/api/v1/repos", tags=["forge"])


def _settings(request: Request) -> Settings:
    return state_of(request).settings


def _repo_out(settings: Settings, r: Repository) -> RepoOut:
    return RepoOut(
        name=r.name,
        default_branch=r.default_branch,
        description=r.description,
        created_by=r.created_by,
        created_at=r.created_at,
        clone_url=f"{settings.base_url}/git/{r.name}.git",
        kind=r.kind,
    )


def _pull_out(pr: PullRequest, listing: bool = False) -> PullOut:
    cut = listing and len(pr.body) > LIST_BODY_CHARS
    return PullOut(
        number=pr.number,
        title=pr.title,
        body=pr.body[:LIST_BODY_CHARS] if cut else pr.body,
        body_truncated=cut,
        author=pr.author,
        opened_by=pr.opened_by,
        source_branch=pr.source_branch,
        target_branch=pr.target_branch,
        head_sha=pr.head_sha,
        base_sha=pr.base_sha,
        state=pr.state,
        merge_method=pr.merge_method,
        merge_commit_sha=pr.merge_commit_sha,
        merged_by=pr.merged_by,
        merged_at=pr.merged_at,
        reverts_number=pr.reverts_number,
        created_at=pr.created_at,
        updated_at=pr.updated_at,
    )


def _status_out(s: StatusView | CommitStatus) -> StatusOut:
    updated = s.updated_at if isinstance(s, StatusView) else s.created_at
    return StatusOut(context=s.context, state=s.state, description=s.description, target_url=s.target_url,
                     creator=s.creator, updated_at=updated)


def _combined_out(c: CombinedStatus) -> CombinedStatusOut:
    return CombinedStatusOut(sha=c.sha, state=c.state, statuses=[_status_out(s) for s in c.statuses])


def _review_out(rv: Review) -> ReviewOut:
    return ReviewOut(
        reviewer=rv.reviewer, role=rv.reviewer_role, state=rv.state, body=rv.body, head_sha=rv.head_sha,
        dismissed=rv.dismissed, dismissed_reason=rv.dismissed_reason, created_at=rv.created_at,
    )


def _hook_out(h: Webhook) -> HookOut:
    return HookOut(id=h.id, url=h.url, events=h.events, active=h.active, created_by=h.created_by,
                   created_at=h.created_at)


# --- repositories ------------------------------------------------------------------------------
@router.post("", response_model=RepoOut, status_code=201)
def create_repo(body: RepoCreate, request: Request, session: SessionDep, principal: PrincipalDep) -> RepoOut:
    principal.require(Permission.CREATE_REPO)
    if body.kind == "gitops":
        principal.require(Permission.MANAGE_REPO)  # agents of every cluster read it
    settings = _settings(request)
    repo = repos.create_repo(session, settings, principal, body.name, body.default_branch, body.description,
                             kind=body.kind)
    return _repo_out(settings, repo)


@router.get("", response_model=list[RepoOut])
def list_repos(request: Request, session: SessionDep, principal: PrincipalDep) -> list[RepoOut]:
    principal.require(Permission.READ)
    settings = _settings(request)
    return [_repo_out(settings, r) for r in repos.list_repos(session)]


@router.get("/{repo}", response_model=RepoOut)
def get_repo(repo: str, request: Request, session: SessionDep, principal: PrincipalDep) -> RepoOut:
    principal.require(Permission.READ)
    return _repo_out(_settings(request), repos.get_repo(session, repo))


@router.delete("/{repo}", status_code=204)
def delete_repo(repo: str, request: Request, session: SessionDep, principal: PrincipalDep) -> Response:
    principal.require(Permission.DELETE_REPO)
    repos.delete_repo(session, _settings(request), principal, repo)
    return Response(status_code=204)


@router.get("/{repo}/branches", response_model=list[BranchOut])
def list_branches(repo: str, request: Request, session: SessionDep, principal: PrincipalDep) -> list[BranchOut]:
    principal.require(Permission.READ)
    r = repos.get_repo(session, repo)
    protected = {p.branch for p in r.protections}
    tips = repos.bare(_settings(request), r).branches()
    return [BranchOut(name=b, sha=sha, protected=b in protected) for b, sha in sorted(tips.items())]


# --- branch protection -------------------------------------------------------------------------
@router.get("/{repo}/protection", response_model=list[ProtectionOut])
def list_protection(repo: str, session: SessionDep, principal: PrincipalDep) -> list[ProtectionOut]:
    principal.require(Permission.READ)
    r = repos.get_repo(session, repo)
    return [
        ProtectionOut(
            branch=p.branch,
            approvals=p.required_approvals,
            required_checks=p.required_checks,
            approver_roles=p.approver_roles,
            no_self_approval=p.no_self_approval,
            trusted_openers=p.trusted_openers or [],
            approvals_for_others=p.approvals_for_others,
        )
        for p in sorted(r.protections, key=lambda p: p.branch)
    ]


@router.put("/{repo}/protection/{branch:path}", response_model=ProtectionOut)
def protect(
    repo: str, branch: str, body: ProtectionIn, request: Request, session: SessionDep, principal: PrincipalDep
) -> ProtectionOut:
    principal.require(Permission.MANAGE_REPO)
    r = repos.get_repo(session, repo)
    p = repos.set_protection(
        session,
        _settings(request),
        principal,
        r,
        branch,
        approvals=body.approvals,
        required_checks=body.required_checks,
        approver_roles=body.approver_roles,
        no_self_approval=body.no_self_approval,
        trusted_openers=body.trusted_openers,
        approvals_for_others=body.approvals_for_others,
    )
    return ProtectionOut(
        branch=p.branch,
        approvals=p.required_approvals,
        required_checks=p.required_checks,
        approver_roles=p.approver_roles,
        no_self_approval=p.no_self_approval,
        trusted_openers=p.trusted_openers or [],
        approvals_for_others=p.approvals_for_others,
    )


@router.delete("/{repo}/protection/{branch:path}", status_code=204)
def unprotect(repo: str, branch: str, request: Request, session: SessionDep, principal: PrincipalDep) -> Response:
    principal.require(Permission.MANAGE_REPO)
    repos.remove_protection(session, _settings(request), principal, repos.get_repo(session, repo), branch)
    return Response(status_code=204)


# --- pull requests -----------------------------------------------------------------------------
@router.post("/{repo}/pulls", response_model=PullOut, status_code=201)
def create_pull(
    repo: str, body: PullCreate, request: Request, session: SessionDep, principal: PrincipalDep
) -> PullOut:
    principal.require(Permission.WRITE)
    r = repos.get_repo(session, repo)
    pr = pulls.create_pr(
        session, _settings(request), principal, r, source=body.source, target=body.target, title=body.title,
        body=body.body,
    )
    return _pull_out(pr)


@router.get("/{repo}/pulls", response_model=list[PullOut])
def list_pulls(
    repo: str, session: SessionDep, principal: PrincipalDep, state: str | None = None
) -> list[PullOut]:
    principal.require(Permission.READ)
    return [_pull_out(p, listing=True) for p in pulls.list_prs(session, repos.get_repo(session, repo), state)]


@router.get("/{repo}/pulls/{number}", response_model=PullDetailOut)
def get_pull(repo: str, number: int, request: Request, session: SessionDep, principal: PrincipalDep) -> PullDetailOut:
    principal.require(Permission.READ)
    settings = _settings(request)
    r = repos.get_repo(session, repo)
    pr = pulls.get_pr(session, r, number)
    git = repos.bare(settings, r)
    base = pr.base_before_merge or git.merge_base(pr.base_sha, pr.head_sha) or pr.base_sha
    m = pulls.evaluate(session, settings, r, pr)
    return PullDetailOut(
        **_pull_out(pr).model_dump(),
        commits=[
            CommitOut(sha=c.sha, subject=c.subject, author=c.author) for c in git.commits_between(base, pr.head_sha)
        ],
        files=[FileStatOut(path=f.path, added=f.added, deleted=f.deleted) for f in git.diffstat(base, pr.head_sha)],
        reviews=[_review_out(rv) for rv in pr.reviews],
        checks=_combined_out(statuses.combined_status(session, r, pr.head_sha)),
        mergeability=MergeabilityOut(
            mergeable=m.mergeable,
            blockers=[BlockerOut(rule=b.rule, message=b.message) for b in m.blockers],
            approvals=m.approvals,
            required_approvals=m.required_approvals,
            required_checks=m.required_checks,
            conflicts=m.conflicts,
        ),
    )


@router.get("/{repo}/pulls/{number}/diff", response_class=PlainTextResponse)
def get_pull_diff(repo: str, number: int, request: Request, session: SessionDep, principal: PrincipalDep) -> str:
    principal.require(Permission.READ)
    settings = _settings(request)
    r = repos.get_repo(session, repo)
    pr = pulls.get_pr(session, r, number)
    git = repos.bare(settings, r)
    base = pr.base_before_merge or git.merge_base(pr.base_sha, pr.head_sha) or pr.base_sha
    return git.diff(base, pr.head_sha)


@router.post("/{repo}/pulls/{number}/reviews", response_model=ReviewOut, status_code=201)
def review_pull(
    repo: str, number: int, body: ReviewIn, request: Request, session: SessionDep, principal: PrincipalDep
) -> ReviewOut:
    principal.require(Permission.WRITE)
    r = repos.get_repo(session, repo)
    pr = pulls.get_pr(session, r, number)
    state = {"approve": "approved", "request_changes": "changes_requested", "comment": "commented"}[body.state]
    return _review_out(pulls.review_pr(session, _settings(request), principal, r, pr, state=state, body=body.body))


@router.post("/{repo}/pulls/{number}/merge", response_model=PullOut)
def merge_pull(repo: str, number: int, body: MergeIn, request: Request, principal: PrincipalDep) -> PullOut:
    principal.require(Permission.WRITE)
    st = state_of(request)
    pr = pulls.merge_pr(st.db, st.settings, principal, repo, number, body.method)
    return _pull_out(pr)


@router.post("/{repo}/pulls/{number}/close", response_model=PullOut)
def close_pull(repo: str, number: int, request: Request, session: SessionDep, principal: PrincipalDep) -> PullOut:
    principal.require(Permission.WRITE)
    r = repos.get_repo(session, repo)
    pr = pulls.get_pr(session, r, number)
    pulls.close_pr(session, _settings(request), principal, r, pr)
    return _pull_out(pr)


@router.post("/{repo}/pulls/{number}/revert", response_model=PullOut, status_code=201)
def revert_pull(repo: str, number: int, request: Request, session: SessionDep, principal: PrincipalDep) -> PullOut:
    principal.require(Permission.WRITE)
    r = repos.get_repo(session, repo)
    pr = pulls.get_pr(session, r, number)
    return _pull_out(pulls.revert_pr(session, _settings(request), principal, r, pr))


# --- commit statuses ---------------------------------------------------------------------------
@router.post("/{repo}/statuses/{sha}", response_model=StatusOut, status_code=201)
def post_status(
    repo: str, sha: str, body: StatusIn, request: Request, session: SessionDep, principal: PrincipalDep
) -> StatusOut:
    if principal.scope is None:  # run and agent tokens: statuses.check_may_post checks their scope
        principal.require(Permission.WRITE)
    r = repos.get_repo(session, repo)
    row = statuses.post_status(
        session, _settings(request), principal, r, sha, state=body.state, context=body.context,
        description=body.description, target_url=body.target_url,
    )
    return _status_out(row)


@router.get("/{repo}/statuses/{sha}", response_model=CombinedStatusOut)
def get_statuses(repo: str, sha: str, session: SessionDep, principal: PrincipalDep) -> CombinedStatusOut:
    principal.require(Permission.READ)
    return _combined_out(statuses.combined_status(session, repos.get_repo(session, repo), sha))


@router.get("/{repo}/commits/{ref:path}/status", response_model=CombinedStatusOut)
def get_ref_status(
    repo: str, ref: str, request: Request, session: SessionDep, principal: PrincipalDep
) -> CombinedStatusOut:
    principal.require(Permission.READ)
    r = repos.get_repo(session, repo)
    sha = repos.bare(_settings(request), r).rev_parse(ref) if not statuses.is_sha(ref) else ref
    if sha is None:
        from conveyor.core import NotFound

        raise NotFound(f"no commit or branch '{ref}' in '{repo}'")
    return _combined_out(statuses.combined_status(session, r, sha))


# --- webhooks ----------------------------------------------------------------------------------
@router.post("/{repo}/hooks", response_model=HookOut, status_code=201)
def add_hook(repo: str, body: HookIn, request: Request, session: SessionDep, principal: PrincipalDep) -> HookOut:
    principal.require(Permission.MANAGE_REPO)
    r = repos.get_repo(session, repo)
    policy = outbound.Policy.for_session(session, _settings(request))
    return _hook_out(webhooks.add_hook(session, principal, r, body.url, body.secret, body.events, policy))


@router.get("/{repo}/hooks", response_model=list[HookOut])
def list_hooks(repo: str, session: SessionDep, principal: PrincipalDep) -> list[HookOut]:
    principal.require(Permission.MANAGE_REPO)
    r = repos.get_repo(session, repo)
    from sqlalchemy import select

    return [_hook_out(h) for h in session.execute(select(Webhook).where(Webhook.repo_id == r.id)).scalars()]


@router.delete("/{repo}/hooks/{hook_id}", status_code=204)
def delete_hook(repo: str, hook_id: int, session: SessionDep, principal: PrincipalDep) -> Response:
    principal.require(Permission.MANAGE_REPO)
    webhooks.delete_hook(session, principal, repos.get_repo(session, repo), hook_id)
    return Response(status_code=204)


@router.get("/{repo}/hooks/{hook_id}/deliveries", response_model=list[DeliveryOut])
def hook_deliveries(repo: str, hook_id: int, session: SessionDep, principal: PrincipalDep) -> list[DeliveryOut]:
    principal.require(Permission.MANAGE_REPO)
    rows = webhooks.list_deliveries(session, repos.get_repo(session, repo), hook_id)
    admin = principal.role == Role.ADMIN
    return [
        DeliveryOut(
            id=d.id, guid=d.guid, event=d.event, status=d.status, attempts=d.attempts,
            last_status_code=d.last_status_code, last_error=d.last_error, duration_ms=d.duration_ms,
            created_at=d.created_at, delivered_at=d.delivered_at,
            last_response_excerpt=d.last_response_excerpt if admin else None,
        )
        for d in rows
    ]
