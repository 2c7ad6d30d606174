"""Pull requests: opening, updating on push, reviews, mergeability, merge, close and revert."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from conveyor.core import (
    Conflict,
    Database,
    Forbidden,
    InvalidInput,
    NotFound,
    Principal,
    Settings,
    Unprocessable,
    record,
    utcnow,
)
from conveyor.forge.git import BareRepo, Identity
from conveyor.forge.models import BranchProtection, PullRequest, Repository, Review
from conveyor.forge.names import validate_branch_name
from conveyor.forge.pr_events import pr_payload as _pr_payload
from conveyor.forge.pr_events import sync_branch
from conveyor.forge.pushes import apply_push
from conveyor.forge.repos import bare, get_repo, protection_for, write_protection_file
from conveyor.forge.statuses import combined_status

MERGE_METHODS = ("merge", "squash", "ff")


@dataclass(frozen=True)
class Blocker:
    rule: str
    message: str


@dataclass
class Mergeability:
    mergeable: bool
    blockers: list[Blocker] = field(default_factory=list)
    approvals: list[str] = field(default_factory=list)
    required_approvals: int = 0
    required_checks: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)


def identity_of(name: str) -> Identity:
    return Identity(name=name, email=f"{name}@conveyor.invalid")


def get_pr(session: Session, repo: Repository, number: int, *, lock: bool = False) -> PullRequest:
    q = select(PullRequest).where(PullRequest.repo_id == repo.id, PullRequest.number == number)
    if lock:
        q = q.with_for_update()
    pr = session.execute(q).scalar_one_or_none()
    if pr is None:
        raise NotFound(f"repository '{repo.name}' has no pull request #{number}", rule="pr.exists")
    return pr


def pr_merged_as(session: Session, repo: Repository, sha: str) -> PullRequest | None:
    """The pull request whose merge produced commit ``sha``, if any (whose change a commit is)."""
    return session.execute(
        select(PullRequest).where(PullRequest.repo_id == repo.id, PullRequest.merge_commit_sha == sha)
    ).scalar_one_or_none()


def list_prs(session: Session, repo: Repository, state: str | None = None) -> list[PullRequest]:
    q = select(PullRequest).where(PullRequest.repo_id == repo.id)
    if state == "open":
        q = q.where(PullRequest.state.in_(("open", "merging")))
    elif state:
        q = q.where(PullRequest.state == state)
    return list(session.execute(q.order_by(PullRequest.number.desc())).scalars())


def open_pr_counts(session: Session) -> dict[int, int]:
    """repository id -> number of its open (or merging) pull requests."""
    q = (select(PullRequest.repo_id, func.count()).where(PullRequest.state.in_(("open", "merging")))
         .group_by(PullRequest.repo_id))
    return dict(session.execute(q).tuples().all())


def create_pr(
    session: Session,
    settings: Settings,
    principal: Principal,
    repo: Repository,
    *,
    source: str,
    target: str,
    title: str,
    body: str = "",
    reverts_number: int | None = None,
    opened_by: Principal | None = None,
) -> PullRequest:
    """Open a PR authored by ``principal``; ``opened_by`` is the service opening it on their behalf."""
    validate_branch_name(source)
    validate_branch_name(target)
    title = title.strip()
    if not title:
        raise InvalidInput("a pull request needs a title", rule="pr.title")
    if source == target:
        raise InvalidInput("source and target branch are the same", rule="pr.branches-differ")
    git = bare(settings, repo)
    head = git.branch_tip(source)
    base = git.branch_tip(target)
    if head is None:
        raise NotFound(f"branch '{source}' does not exist in '{repo.name}'", rule="pr.source-exists")
    if base is None:
        raise NotFound(f"branch '{target}' does not exist in '{repo.name}'", rule="pr.target-exists")
    existing = session.execute(
        select(PullRequest).where(
            PullRequest.repo_id == repo.id,
            PullRequest.source_branch == source,
            PullRequest.target_branch == target,
            PullRequest.state.in_(("open", "merging")),
        )
    ).scalar_one_or_none()
    if existing is not None:
        raise Conflict(
            f"pull request #{existing.number} from '{source}' to '{target}' is already open",
            rule="pr.one-open-per-branch-pair",
            number=existing.number,
        )
    # Serialise number allocation per repository (the row lock is a no-op on SQLite, whose
    # BEGIN IMMEDIATE already serialises writers).
    session.execute(select(Repository.id).where(Repository.id == repo.id).with_for_update())
    number = (session.execute(select(func.max(PullRequest.number)).where(PullRequest.repo_id == repo.id))
              .scalar_one() or 0) + 1
    pr = PullRequest(
        repo_id=repo.id,
        number=number,
        title=title[:300],
        body=body,
        author=principal.name,
        opened_by=(opened_by or principal).label,
        source_branch=source,
        target_branch=target,
        head_sha=head,
        base_sha=base,
        reverts_number=reverts_number,
    )
    session.add(pr)
    session.flush()
    write_protection_file(settings, repo, session)
    record(
        session,
        actor=(opened_by or principal).label,
        action="pull_request.opened",
        target=f"{repo.name}#{number}",
        payload=_pr_payload(repo, pr),
    )
    return pr


def required_approvals(rule: BranchProtection | None, pr: PullRequest) -> tuple[int, bool]:
    """(approvals needed, whether the author's own approval is ignored) for this PR under ``rule``."""
    if rule is None:
        return 0, False
    if rule.approvals_for_others is not None and pr.opened_by not in rule.trusted_openers:
        return max(rule.required_approvals, rule.approvals_for_others), True
    return rule.required_approvals, rule.no_self_approval


def _latest_reviews(pr: PullRequest) -> dict[str, Review]:
    latest: dict[str, Review] = {}
    for r in pr.reviews:
        if r.state == "commented" or r.dismissed:
            continue
        latest[r.reviewer] = r
    return latest


def evaluate(session: Session, settings: Settings, repo: Repository, pr: PullRequest) -> Mergeability:
    """Everything that stands between this PR and a merge, each with the rule that says so."""
    blockers: list[Blocker] = []
    if pr.state != "open":
        blockers.append(Blocker("pr.state", f"pull request is {pr.state}"))
    git = bare(settings, repo)
    tip = git.branch_tip(pr.source_branch)
    if pr.state == "open" and tip != pr.head_sha:
        blockers.append(Blocker("pr.head-moved", "the source branch moved and the PR is being updated; retry"))
    rule = protection_for(repo, pr.target_branch)
    required, no_self = required_approvals(rule, pr)
    latest = _latest_reviews(pr)
    approvers = []
    for name, r in sorted(latest.items()):
        if r.state != "approved" or r.head_sha != pr.head_sha:
            continue
        if no_self and name == pr.author:
            continue
        if rule and rule.approver_roles and r.reviewer_role not in rule.approver_roles:
            continue
        approvers.append(name)
    if len(approvers) < required:
        roles = f" from {' or '.join(rule.approver_roles)}" if rule and rule.approver_roles else ""
        untrusted = rule is not None and required > rule.required_approvals
        why = f" (not opened by {' or '.join(rule.trusted_openers)}: someone other than its author must approve)" \
            if untrusted and rule is not None else ""
        blockers.append(
            Blocker(
                "review.required-approvals" if not untrusted else "review.second-person",
                f"needs {required} approval(s){roles} on the current head, has {len(approvers)}{why}",
            )
        )
    for name, r in sorted(latest.items()):
        if r.state == "changes_requested":
            blockers.append(Blocker("review.changes-requested", f"{name} requested changes"))
    checks = combined_status(session, repo, pr.head_sha).by_context()
    required_checks = list(rule.required_checks) if rule else []
    for ctx in required_checks:
        st = checks.get(ctx)
        if st is None:
            blockers.append(Blocker("check.required", f"required check '{ctx}' has not reported"))
        elif st.state == "pending":
            blockers.append(Blocker("check.required", f"required check '{ctx}' is pending"))
    for ctx, st in sorted(checks.items()):
        if st.state in ("failure", "error"):
            blockers.append(Blocker("check.failed", f"check '{ctx}' {st.state}: {st.description}".rstrip(": ")))
    conflicts: list[str] = []
    base_tip = git.branch_tip(pr.target_branch)
    if pr.state == "open" and base_tip is not None and tip is not None:
        result = git.merge_tree(base_tip, pr.head_sha)
        conflicts = result.conflicts
        if result.tree is None:
            blockers.append(
                Blocker("merge.conflict", f"conflicts with '{pr.target_branch}' in: {', '.join(conflicts)}")
            )
    elif base_tip is None and pr.state == "open":
        blockers.append(Blocker("pr.target-exists", f"target branch '{pr.target_branch}' no longer exists"))
    return Mergeability(
        mergeable=not blockers,
        blockers=blockers,
        approvals=approvers,
        required_approvals=required,
        required_checks=required_checks,
        conflicts=conflicts,
    )


def review_pr(
    session: Session,
    settings: Settings,
    principal: Principal,
    repo: Repository,
    pr: PullRequest,
    *,
    state: str,
    body: str = "",
) -> Review:
    if state not in ("approved", "changes_requested", "commented"):
        raise InvalidInput("review state must be approved, changes_requested or commented", rule="review.state")
    if pr.state != "open":
        raise Unprocessable(f"pull request #{pr.number} is {pr.state}; only open PRs can be reviewed",
                            rule="review.pr-open")
    if state == "changes_requested" and not body.strip():
        raise InvalidInput("requesting changes needs a message", rule="review.message")
    rule = protection_for(repo, pr.target_branch)
    if state == "approved" and rule is not None:
        if required_approvals(rule, pr)[1] and principal.name == pr.author:
            raise Forbidden(
                f"'{principal.name}' opened pull request #{pr.number} and cannot approve it: "
                f"branch '{pr.target_branch}' forbids self-approval",
                rule="review.no-self-approval",
            )
        if rule.approver_roles and (principal.role is None or principal.role.value not in rule.approver_roles):
            raise Forbidden(
                f"approvals for '{pr.target_branch}' must come from role {' or '.join(rule.approver_roles)}; "
                f"'{principal.name}' is {principal.role}",
                rule="review.approver-role",
            )
    review = Review(
        pr_id=pr.id,
        reviewer=principal.name,
        reviewer_role=principal.role.value if principal.role else "",
        state=state,
        body=body,
        head_sha=pr.head_sha,
    )
    pr.reviews.append(review)
    session.flush()
    record(
        session,
        actor=principal.name,
        action="pull_request.reviewed",
        target=f"{repo.name}#{pr.number}",
        payload=_pr_payload(repo, pr, review_state=state, reviewer=principal.name),
    )
    return review


def close_pr(session: Session, settings: Settings, principal: Principal, repo: Repository, pr: PullRequest,
             reason: str = "") -> None:
    if pr.state != "open":
        raise Unprocessable(f"pull request #{pr.number} is {pr.state}", rule="pr.state")
    pr.state = "closed"
    pr.closed_at = utcnow()
    session.flush()
    write_protection_file(settings, repo, session)
    record(
        session,
        actor=principal.name,
        action="pull_request.closed",
        target=f"{repo.name}#{pr.number}",
        payload=_pr_payload(repo, pr, reason=reason),
    )


def _merge_commit(git: BareRepo, pr: PullRequest, base_tip: str, method: str, actor: str) -> str:
    if method == "ff":
        if not git.is_ancestor(base_tip, pr.head_sha):
            raise Unprocessable(
                f"cannot fast-forward '{pr.target_branch}' to the PR head: the target has commits the PR "
                "does not contain; update the PR branch or use --method merge",
                rule="merge.fast-forward",
            )
        return pr.head_sha
    result = git.merge_tree(base_tip, pr.head_sha)
    if result.tree is None:
        raise Unprocessable(
            f"conflicts with '{pr.target_branch}' in: {', '.join(result.conflicts)}", rule="merge.conflict"
        )
    ident = identity_of(actor)
    if method == "squash":
        msg = f"{pr.title} (#{pr.number})\n\n{pr.body}".rstrip() + "\n"
        return git.commit_tree(result.tree, [base_tip], msg, ident)
    msg = f"Merge pull request #{pr.number} from {pr.source_branch}\n\n{pr.title}\n"
    return git.commit_tree(result.tree, [base_tip, pr.head_sha], msg, ident)


def merge_pr(
    db: Database, settings: Settings, principal: Principal, repo_name: str, number: int, method: str = "merge"
) -> PullRequest:
    if method not in MERGE_METHODS:
        raise InvalidInput(f"merge method must be one of {', '.join(MERGE_METHODS)}", rule="merge.method")
    for _attempt in range(5):
        with db.session() as s:
            repo = get_repo(s, repo_name)
            pr = get_pr(s, repo, number, lock=True)
            m = evaluate(s, settings, repo, pr)
            if not m.mergeable:
                raise Unprocessable(
                    f"cannot merge pull request #{number}: " + "; ".join(b.message for b in m.blockers),
                    rule=m.blockers[0].rule,
                    blockers=[{"rule": b.rule, "message": b.message} for b in m.blockers],
                )
            git = bare(settings, repo)
            base_tip = git.branch_tip(pr.target_branch)
            assert base_tip is not None
            new = _merge_commit(git, pr, base_tip, method, principal.name)
            claimed = s.execute(
                update(PullRequest)
                .where(PullRequest.id == pr.id, PullRequest.state == "open")
                .values(state="merging", merge_commit_sha=new, base_before_merge=base_tip, merge_method=method)
                .returning(PullRequest.id)
            ).first()
            if claimed is None:
                raise Conflict(f"pull request #{number} is already being merged", rule="merge.in-progress")
            target_ref = f"refs/heads/{pr.target_branch}"
        # The intent is durable; publish with compare-and-swap so a concurrent push is never lost.
        swapped = git.update_ref(target_ref, new, base_tip, f"conveyor: merge PR #{number} by {principal.name}")
        with db.session() as s:
            repo = get_repo(s, repo_name)
            pr = get_pr(s, repo, number, lock=True)
            if swapped:
                finish_merge(s, settings, repo, pr, principal.name)
                return pr
            pr.state, pr.merge_commit_sha, pr.base_before_merge, pr.merge_method = "open", None, None, None
        # The target moved between computing and publishing: recompute on the new tip.
    raise Conflict(f"'{repo_name}' kept moving while merging #{number}; try again", rule="merge.contended")


def finish_merge(session: Session, settings: Settings, repo: Repository, pr: PullRequest, actor: str) -> None:
    assert pr.merge_commit_sha and pr.base_before_merge
    pr.state = "merged"
    pr.merged_by = actor
    pr.merged_at = utcnow()
    session.flush()
    write_protection_file(settings, repo, session)
    record(
        session,
        actor=actor,
        action="pull_request.merged",
        target=f"{repo.name}#{pr.number}",
        payload=_pr_payload(
            repo, pr, merge_commit_sha=pr.merge_commit_sha, merge_method=pr.merge_method, merged_by=actor
        ),
    )
    apply_push(
        session,
        settings,
        repo,
        f"merge-{repo.id}-{pr.number}",
        actor,
        [{"before": pr.base_before_merge, "after": pr.merge_commit_sha, "ref": f"refs/heads/{pr.target_branch}"}],
        via="merge",
    )


def recover_merges(db: Database, settings: Settings) -> int:
    """Finish or undo merges that a crash interrupted, so the DB agrees with the refs."""
    fixed = 0
    with db.session() as s:
        for pr in s.execute(select(PullRequest).where(PullRequest.state == "merging")).scalars():
            git = bare(settings, pr.repo)
            tip = git.branch_tip(pr.target_branch)
            if tip and pr.merge_commit_sha and git.is_ancestor(pr.merge_commit_sha, tip):
                finish_merge(s, settings, pr.repo, pr, pr.merged_by or "system")
            else:
                pr.state, pr.merge_commit_sha, pr.base_before_merge, pr.merge_method = "open", None, None, None
            fixed += 1
    return fixed


def resync_open_prs(db: Database, settings: Settings) -> None:
    """Bring PR heads in line with the branches (pushes whose processing a crash cut short)."""
    with db.session() as s:
        for pr in s.execute(select(PullRequest).where(PullRequest.state == "open")).scalars():
            tip = bare(settings, pr.repo).branch_tip(pr.source_branch)
            if tip != pr.head_sha:
                sync_branch(s, settings, pr.repo, pr.source_branch, tip, "system")


def revert_pr(
    session: Session, settings: Settings, principal: Principal, repo: Repository, pr: PullRequest
) -> PullRequest:
    """Open a PR that undoes a merged one: a commit on top of the merge restoring the old tree."""
    if pr.state != "merged" or not pr.merge_commit_sha or not pr.base_before_merge:
        raise Unprocessable(f"pull request #{pr.number} is {pr.state}; only merged PRs can be reverted",
                            rule="revert.merged")
    git = bare(settings, repo)
    msg = (
        f'Revert "{pr.title}"\n\nThis reverts pull request #{pr.number} '
        f"(merge {pr.merge_commit_sha}).\n"
    )
    commit = git.commit_tree(
        git.tree_of(pr.base_before_merge), [pr.merge_commit_sha], msg, identity_of(principal.name)
    )
    branch = f"revert-pr-{pr.number}"
    n = 1
    while not git.create_ref(f"refs/heads/{branch}", commit, f"conveyor: revert PR #{pr.number}"):
        n += 1
        if n > 50:
            raise Conflict("could not find a free branch name for the revert", rule="revert.branch")
        branch = f"revert-pr-{pr.number}-{n}"
    apply_push(
        session, settings, repo, f"revert-{uuid.uuid4().hex}", principal.name,
        [{"before": "0" * 40, "after": commit, "ref": f"refs/heads/{branch}"}], via="revert",
    )
    return create_pr(
        session,
        settings,
        principal,
        repo,
        source=branch,
        target=pr.target_branch,
        title=f'Revert "{pr.title}"',
        body=f"Reverts #{pr.number}.",
        reverts_number=pr.number,
    )
