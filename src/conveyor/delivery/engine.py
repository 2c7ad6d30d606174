"""The promotion engine: moves each active promotion one step at a time, one transaction per step.

pending      render for the environment, commit to deploy/<app>/<version>/<env>, open the PR to
             env/<env> as the change's author (so "no self-approval" keeps them from approving it)
pr_open      wait for the merge (CD merges it once its rules are met: checks, and the approvals the
             environment requires, or none with auto_merge); a closed PR abandons the promotion
merged       wait for the cluster agent's conveyor/deploy/<cluster>/... status on a commit that
             contains the merge; failure or silence past the deadline fails the promotion
applied      verify the endpoint through the API server's service proxy; success promotes to the
             environments whose `after` is this one
failed       (after a merge) open the revert PR; rolling_back waits for its merge, the agent and a
             passing verification of the previous version
"""

from __future__ import annotations

import logging
from datetime import timedelta

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.core import ConveyorError, Database, Principal, Role, Settings, service_principal, utcnow
from conveyor.core.background import BackgroundLoop
from conveyor.delivery.clusters_access import probe_service
from conveyor.delivery.environments import Environment, app_values, next_environments
from conveyor.delivery.gitops import DIFF_CHECK, current_environments
from conveyor.delivery.live_diff import live_diff
from conveyor.delivery.models import ACTIVE_STATES, Promotion
from conveyor.delivery.records import SERVICE_USER, move, note
from conveyor.delivery.render import RenderError, TemplateBundle, deep_merge, render, validate_rendered
from conveyor.delivery.start import create_promotion, release_of
from conveyor.forge import bare, combined_status, create_pr, evaluate, get_pr, get_repo, post_status
from conveyor.forge.commits import write_branch
from conveyor.forge.models import Repository
from conveyor.forge.pulls import close_pr, merge_pr, revert_pr
from conveyor.pipelines.artifacts import blob_path

log = logging.getLogger(__name__)

APPLY_DEADLINE = timedelta(minutes=10)
DELIVERY = service_principal(SERVICE_USER, Role.DEVELOPER)


def author_principal(session: Session, name: str) -> Principal:
    from conveyor.core.models import User

    user = session.execute(select(User).where(User.name == name)).scalar_one_or_none()
    if user is None or user.disabled:
        return DELIVERY
    return Principal(name=user.name, role=Role(user.role), user_id=user.id)


def deploy_branch(p: Promotion) -> str:
    return f"deploy/{p.app}/{p.version}/{p.env}"


def _rendered_files(settings: Settings, p: Promotion, env: Environment, repo: Repository) -> dict[str, bytes | None]:
    git = bare(settings, repo)
    main = git.branch_tip("main") or ""
    values = deep_merge(env.values, app_values(git, main, env.name, p.app))
    bundle = TemplateBundle.from_archive(blob_path(settings, p.templates_artifact or "").read_bytes())
    manifests = render(bundle, app=p.app, namespace=env.namespace(p.app), image=p.image, tag=p.image_tag,
                       digest=p.image_digest, values=values)
    problems = validate_rendered(manifests)
    if problems:
        raise RenderError(f"rendered manifests of {p.app} for {env.name} are invalid: " + "; ".join(problems[:5]),
                          rule="render.validate")
    files: dict[str, bytes | None] = {f"rendered/{p.app}.yaml": manifests.encode()}
    for rel, content in bundle.files.items():
        files[f"source/{p.app}/templates/{rel}"] = content
    files[f"source/{p.app}/values.yaml"] = yaml.safe_dump(values, sort_keys=True).encode()
    files[f"source/{p.app}/release.yaml"] = yaml.safe_dump({
        "app": p.app, "version": p.version, "image": f"{p.image}:{p.image_tag}@{p.image_digest}",
        "source": {"repo": p.source_repo, "commit": p.source_commit}, "ci_run": p.ci_run,
    }, sort_keys=False).encode()
    return files


def _pr_body(p: Promotion, settings: Settings, files: list[tuple[str, int | None, int | None]]) -> str:
    stat = "\n".join(f"- `{path}` +{a if a is not None else 'bin'} -{d if d is not None else 'bin'}"
                     for path, a, d in files)
    return (
        f"Deploy **{p.app} {p.version}** to **{p.env}**.\n\n"
        f"- image: `{p.image}:{p.image_tag}@{p.image_digest}`\n"
        f"- source: `{p.source_repo}` commit `{p.source_commit}` by {p.author}\n"
        f"- CI run: {settings.base_url}/api/v1/runs/{p.ci_run}\n\n"
        f"Rendered changes:\n{stat or '- (none)'}\n"
    )


class PromotionEngine(BackgroundLoop):
    name = "delivery"

    def __init__(self, db: Database, settings: Settings, poll_interval: float = 1.0) -> None:
        super().__init__(poll_interval)
        self.db = db
        self.settings = settings

    def run_once(self) -> bool:
        with self.db.session() as s:
            ids = list(s.execute(select(Promotion.id).where(Promotion.state.in_(ACTIVE_STATES))
                                 .order_by(Promotion.id)).scalars())
        moved = False
        for pid in ids:
            if self.stopping:
                break
            try:
                moved |= self.step(pid)
            except Exception:
                log.exception("promotion %s: step failed", pid)
        return moved

    def step(self, pid: int) -> bool:
        """Advance one promotion by at most one state; True when it moved."""
        try:
            with self.db.session() as s:
                p = s.get(Promotion, pid)
                if p is None or p.state not in ACTIVE_STATES:
                    return False
                before = p.state
                envs = current_environments(s, self.settings, p.gitops_repo)
                env = envs.get(p.env)
                if env is None:
                    move(s, p, "failed", "failed", f"environment '{p.env}' no longer exists")
                    return True
                getattr(self, f"_on_{p.state}")(s, p, env, envs)
                return p.state != before
        except ConveyorError as exc:
            # Rendering, validation or a refused PR: nothing was merged, so nothing to roll back.
            with self.db.session() as s:
                p = s.get(Promotion, pid)
                if p is None or p.state != "pending":
                    raise
                move(s, p, "failed", "failed", exc.detail, rule=exc.rule)
                self._report_source(s, p, "failure", f"{p.env}: {exc.detail}")
            return True

    # --- states -----------------------------------------------------------------------------
    def _on_pending(self, s: Session, p: Promotion, env: Environment, envs: dict[str, Environment]) -> None:
        repo = get_repo(s, p.gitops_repo)
        self._supersede_older(s, p, repo)
        files = _rendered_files(self.settings, p, env, repo)
        git = bare(self.settings, repo)
        base = git.branch_tip(env.branch)
        branch = deploy_branch(p)
        head = write_branch(s, self.settings, DELIVERY, repo, branch, files,
                            f"Deploy {p.app} {p.version} to {p.env}\n\nSource: {p.source_repo}@{p.source_commit}\n",
                            base=base, expect=git.branch_tip(branch), replace_dirs=(f"source/{p.app}",))
        p.deploy_branch = branch
        if base is not None and git.tree_of(head) == git.tree_of(base):
            p.merge_commit = base
            move(s, p, "merged", "unchanged", f"{p.env} already runs exactly this; waiting for the agent")
            return
        stats = [(f.path, f.added, f.deleted) for f in git.diffstat(base or head, head)]
        rendered_path = f"rendered/{p.app}.yaml"
        previous = git.read_file(base, rendered_path) if base else None
        diff = live_diff(self.settings, env.cluster, (files[rendered_path] or b"").decode(),
                         previous.decode() if previous else None)
        post_status(s, self.settings, DELIVERY, repo, head, state=diff.state, context=DIFF_CHECK,
                    description=diff.summary[:900])
        pr = create_pr(s, self.settings, author_principal(s, p.author), repo, source=branch, target=env.branch,
                       title=f"Deploy {p.app} {p.version} to {p.env}",
                       body=_pr_body(p, self.settings, stats) + "\n" + diff.markdown, opened_by=DELIVERY)
        p.pr_number = pr.number
        move(s, p, "pr_open", "pr_opened", f"PR #{pr.number} to {env.branch}", pr=pr.number)
        self._report_source(s, p, "pending", f"PR #{pr.number} opened for {p.env}")

    def _on_pr_open(self, s: Session, p: Promotion, env: Environment, envs: dict[str, Environment]) -> None:
        repo = get_repo(s, p.gitops_repo)
        pr = get_pr(s, repo, p.pr_number or 0)
        if pr.state == "merged":
            p.merge_commit = pr.merge_commit_sha
            approvers = sorted({r.reviewer for r in pr.reviews if r.state == "approved" and not r.dismissed})
            move(s, p, "merged", "merged", f"PR #{pr.number} merged by {pr.merged_by}", approvers=approvers)
        elif pr.state == "closed":
            move(s, p, "abandoned", "abandoned", f"PR #{pr.number} was closed without merging")
        elif self._merges_itself(env) and evaluate(s, self.settings, repo, pr).mergeable:
            s.commit()  # merge_pr runs its own units of work
            merge_pr(self.db, self.settings, DELIVERY, repo.name, pr.number, "merge")

    def _on_merged(self, s: Session, p: Promotion, env: Environment, envs: dict[str, Environment]) -> None:
        verdict = self._agent_verdict(s, p, env, p.merge_commit or "")
        if verdict is None:
            if utcnow() - p.state_since > APPLY_DEADLINE:
                self._fail_and_roll_back(s, p, env, f"the agent of '{env.cluster}' did not report within "
                                                    f"{int(APPLY_DEADLINE.total_seconds())}s")
            return
        ok, sha, description = verdict
        if ok:
            p.applied_commit = sha
            move(s, p, "applied", "applied", f"applied and healthy on {env.cluster}: {description}", commit=sha)
        else:
            self._fail_and_roll_back(s, p, env, f"apply failed on {env.cluster}: {description}")

    def _on_applied(self, s: Session, p: Promotion, env: Environment, envs: dict[str, Environment]) -> None:
        passed, detail = self._verify(p, env)
        if passed:
            move(s, p, "verified", "verified", detail)
            self._report_source(s, p, "success", f"verified in {p.env}")
            for nxt in next_environments(envs, env.name):
                create_promotion(s, release_of(p), nxt, p.gitops_repo, promoted_from=p.id)
            return
        timeout = env.verify.timeout if env.verify else 120
        if utcnow() - p.state_since > timedelta(seconds=timeout):
            self._fail_and_roll_back(s, p, env, f"verification failed: {detail}")

    def _on_rolling_back(self, s: Session, p: Promotion, env: Environment, envs: dict[str, Environment]) -> None:
        repo = get_repo(s, p.gitops_repo)
        pr = get_pr(s, repo, p.rollback_pr_number or 0)
        if pr.state == "open":
            if self._merges_itself(env) and evaluate(s, self.settings, repo, pr).mergeable:
                s.commit()
                merge_pr(self.db, self.settings, DELIVERY, repo.name, pr.number, "merge")
            return
        if pr.state == "closed":
            move(s, p, "rollback_failed", "rollback_abandoned", f"rollback PR #{pr.number} was closed")
            return
        p.rollback_merge_commit = pr.merge_commit_sha
        verdict = self._agent_verdict(s, p, env, pr.merge_commit_sha or "")
        overdue = utcnow() - (pr.merged_at or p.state_since) > APPLY_DEADLINE
        if verdict is None:
            if overdue:
                move(s, p, "rollback_failed", "rollback_failed", f"the agent of '{env.cluster}' did not report "
                                                                   "on the rollback")
            return
        if not verdict[0]:
            move(s, p, "rollback_failed", "rollback_failed", f"rollback apply failed: {verdict[2]}")
            return
        previous = s.execute(select(Promotion.version).where(
            Promotion.app == p.app, Promotion.env == p.env, Promotion.state == "verified", Promotion.id < p.id)
            .order_by(Promotion.id.desc()).limit(1)).scalar_one_or_none()
        if previous is None:
            move(s, p, "rolled_back", "rolled_back", f"removed from {p.env}: no earlier version ran there")
            return
        passed, detail = self._verify(p, env)
        if passed:
            move(s, p, "rolled_back", "rolled_back", f"{previous} restored and verified: {detail}")
        elif overdue:
            move(s, p, "rollback_failed", "rollback_failed", f"{previous} restored but verification fails: {detail}")

    # --- helpers ------------------------------------------------------------------------------
    @staticmethod
    def _merges_itself(env: Environment) -> bool:
        """CD merges once the branch's rules are met: at once with auto_merge, else when the required
        approvals are in. An environment with neither waits for a person to merge."""
        return env.auto_merge or env.approvals.required > 0

    def _agent_verdict(self, s: Session, p: Promotion, env: Environment, merge: str) -> tuple[bool, str, str] | None:
        """The agent's word on a commit of the environment branch that contains ``merge``."""
        repo = get_repo(s, p.gitops_repo)
        git = bare(self.settings, repo)
        tip = git.branch_tip(env.branch)
        if not tip or not merge or not git.is_ancestor(merge, tip):
            return None
        shas = git.run("rev-list", "--ancestry-path", f"{merge}..{tip}").stdout.split() + [merge]
        prefix = f"conveyor/deploy/{env.cluster}/"
        for sha in shas:  # newest first
            for st in combined_status(s, repo, sha).statuses:
                if st.context.startswith(prefix) and st.state in ("success", "failure", "error"):
                    return st.state == "success", sha, st.description
        return None

    def _verify(self, p: Promotion, env: Environment) -> tuple[bool, str]:
        v = env.verify
        if v is None:
            return True, "no verification configured"
        result = probe_service(self.settings, env.cluster, env.namespace(p.app), v.service or p.app, v.port, v.path)
        if result.error:
            return False, result.error
        if result.status != v.expect_status:
            return False, f"GET {v.path} answered {result.status}, expected {v.expect_status}: {result.body[:200]}"
        if v.expect_body is not None and v.expect_body not in result.body:
            return False, f"GET {v.path} body lacks {v.expect_body!r}: {result.body[:200]}"
        return True, f"GET {v.path} answered {result.status}"

    def _fail_and_roll_back(self, s: Session, p: Promotion, env: Environment, reason: str) -> None:
        move(s, p, "failed", "failed", reason)
        self._report_source(s, p, "failure", f"{p.env}: {reason}")
        repo = get_repo(s, p.gitops_repo)
        pr = get_pr(s, repo, p.pr_number or 0) if p.pr_number else None
        if pr is None or pr.state != "merged":
            return
        revert = revert_pr(s, self.settings, DELIVERY, repo, pr)
        head = revert.head_sha
        post_status(s, self.settings, DELIVERY, repo, head, state="success", context=DIFF_CHECK,
                    description=f"rollback of {p.app} {p.version} in {p.env}")
        p.rollback_pr_number = revert.number
        move(s, p, "rolling_back", "rollback_opened", f"revert PR #{revert.number}", pr=revert.number)

    def _supersede_older(self, s: Session, p: Promotion, repo: Repository) -> None:
        older = s.execute(select(Promotion).where(
            Promotion.app == p.app, Promotion.env == p.env, Promotion.id < p.id,
            Promotion.state.in_(("pending", "pr_open")))).scalars()
        for o in older:
            if o.pr_number:
                pr = get_pr(s, repo, o.pr_number)
                if pr.state == "open":
                    close_pr(s, self.settings, DELIVERY, repo, pr, reason=f"superseded by {p.version}")
            move(s, o, "superseded", "superseded", f"superseded by {p.version} (promotion {p.id})")

    def _report_source(self, s: Session, p: Promotion, state: str, description: str) -> None:
        """Deployment progress as a commit status on the application commit (`conveyor/cd/<env>`)."""
        try:
            repo = get_repo(s, p.source_repo)
            post_status(s, self.settings, DELIVERY, repo, p.source_commit, state=state,
                        context=f"conveyor/cd/{p.env}", description=description[:900])
        except ConveyorError as exc:
            note(s, p, "report_failed", exc.detail)
