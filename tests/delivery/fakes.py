"""In-memory fakes of the promotion engine's interfaces (``conveyor.delivery.ports``), for unit tests.

FakeForge keeps the real forge's transaction semantics where the engine depends on them: what the
real forge writes as rows in the caller's transaction (PRs, statuses, closes, reverts) becomes
visible only when the step's transaction commits, and vanishes with a rollback; branch writes are
immediate, like git refs; ``merge`` commits on its own, like ``forge.merge_pr``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from conveyor.core import Base, Conflict, Database, after_commit
from conveyor.delivery import Environment, Ports, Promotion, PromotionEngine
from conveyor.delivery.environments import Approvals, Verify, Via
from conveyor.delivery.ports import LiveDiff, Probe, PullView, Rendered, Verdict
from conveyor.delivery.start import Release, create_promotion
from conveyor.templates import RenderError

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


class Crash(Exception):
    """Stands for the process dying at this point: the step's transaction is rolled back."""


@dataclass
class Commit:
    tree: dict[str, bytes]
    parents: tuple[str, ...]


@dataclass
class FakePR:
    number: int
    repo: str
    author: str
    source: str
    target: str
    title: str
    body: str
    state: str = "open"
    approvers: list[str] = field(default_factory=list)
    merge_commit: str | None = None
    base_before: str | None = None
    merged_by: str | None = None
    merged_at: datetime | None = None


class FakeForge:
    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.clock = clock
        self.commits: dict[str, Commit] = {}
        self.branches: dict[tuple[str, str], str] = {}
        self.prs: dict[tuple[str, int], FakePR] = {}
        self.posted: list[tuple[str, str, str, str, str]] = []  # repo, sha, state, context, description
        self.required: dict[tuple[str, str], int] = {}  # approvals a target branch requires
        self.required_checks = ("conveyor/diff", "conveyor/cd/gate")  # what every environment branch requires
        self.trailer_of: dict[str, dict[str, str]] = {}  # commit -> its message's trailers
        self.merges: list[tuple[str, int]] = []
        self.crash_after: str | None = None  # a method name: raise Crash once after doing its work
        self.merge_error: Exception | None = None

    # --- set-up and inspection ---------------------------------------------------------------------
    def commit(self, tree: dict[str, bytes], parents: tuple[str, ...] = ()) -> str:
        sha = hashlib.sha1(repr((sorted(tree.items()), parents, len(self.commits))).encode()).hexdigest()
        self.commits[sha] = Commit(dict(tree), parents)
        return sha

    def init_branch(self, repo: str, branch: str, tree: dict[str, bytes] | None = None) -> str:
        sha = self.commit(tree or {"README.md": b"env\n"})
        self.branches[(repo, branch)] = sha
        return sha

    def contexts(self, sha: str) -> dict[str, tuple[str, str]]:
        return {ctx: (state, desc) for _, s, state, ctx, desc in self.posted if s == sha}

    def approve(self, repo: str, number: int, who: str) -> None:
        self.prs[(repo, number)].approvers.append(who)

    def close_by_hand(self, repo: str, number: int) -> None:
        self.prs[(repo, number)].state = "closed"

    def history(self, repo: str, branch: str) -> list[str]:
        """First-parent history of a branch, newest first."""
        out, sha = [], self.branches.get((repo, branch))
        while sha:
            out.append(sha)
            parents = self.commits[sha].parents
            sha = parents[0] if parents else None
        return out

    # --- transaction emulation --------------------------------------------------------------------
    def _staged(self, s: Session) -> list[Callable[[], None]]:
        staged: list[Callable[[], None]] = s.info.setdefault("fake_forge", [])
        if not staged:
            def apply() -> None:
                for fn in staged:
                    fn()
            after_commit(s, apply)
        return staged

    def _maybe_crash(self, name: str) -> None:
        if self.crash_after == name:
            self.crash_after = None
            raise Crash(name)

    def _pr(self, s: Session | None, repo: str, number: int) -> FakePR:
        if s is not None:
            for pr in s.info.get("fake_prs", []):
                if (pr.repo, pr.number) == (repo, number):
                    return pr
        return self.prs[(repo, number)]

    # --- the Forge interface ----------------------------------------------------------------------
    def branch_tip(self, s: Session, repo: str, branch: str) -> str | None:
        return self.branches.get((repo, branch))

    def write_branch(self, s: Session, repo: str, branch: str, files: dict[str, bytes | None], message: str, *,
                     base: str | None, replace_dirs: tuple[str, ...]) -> str:
        tree = dict(self.commits[base].tree) if base else {}
        for d in replace_dirs:
            tree = {k: v for k, v in tree.items() if not k.startswith(d + "/")}
        for path, content in files.items():
            if content is None:
                tree.pop(path, None)
            else:
                tree[path] = content
        sha = self.commit(tree, (base,) if base else ())
        self.branches[(repo, branch)] = sha
        self._maybe_crash("write_branch")
        return sha

    def same_tree(self, s: Session, repo: str, a: str, b: str) -> bool:
        return self.commits[a].tree == self.commits[b].tree

    def diffstat(self, s: Session, repo: str, base: str, head: str) -> list[tuple[str, int | None, int | None]]:
        old, new = self.commits[base].tree, self.commits[head].tree
        return [(p, 1, 1) for p in sorted(set(old) | set(new)) if old.get(p) != new.get(p)]

    def read_file(self, s: Session, repo: str, rev: str, path: str) -> bytes | None:
        return self.commits[rev].tree.get(path)

    def open_pr(self, s: Session, repo: str, *, author: str, source: str, target: str, title: str,
                body: str) -> int:
        pending = s.info.setdefault("fake_prs", [])
        number = 1 + max([n for (r, n) in self.prs if r == repo] + [pr.number for pr in pending], default=0)
        pr = FakePR(number, repo, author, source, target, title, body)
        pending.append(pr)
        self._staged(s).append(lambda: self.prs.__setitem__((repo, number), pr))
        self._maybe_crash("open_pr")
        return number

    def pull(self, s: Session, repo: str, number: int) -> PullView:
        pr = self._pr(s, repo, number)
        head = self.branches[(repo, pr.source)]
        checks = self.contexts(head)
        failing = any(state in ("failure", "error") for state, _ in checks.values())
        unmet = [c for c in self.required_checks if checks.get(c, ("missing",))[0] != "success"]
        required = self.required.get((repo, pr.target), 0)
        mergeable = pr.state == "open" and len(pr.approvers) >= required and not failing and not unmet
        return PullView(number=pr.number, state=pr.state, head_sha=head, author=pr.author,
                        merge_commit=pr.merge_commit, merged_by=pr.merged_by, merged_at=pr.merged_at,
                        approvers=tuple(pr.approvers), mergeable=mergeable,
                        blockers=() if mergeable else (f"needs {required} approval(s)",))

    def merge(self, repo: str, number: int) -> None:
        if self.merge_error is not None:
            raise self.merge_error
        self._maybe_crash("merge")
        pr = self.prs[(repo, number)]
        if pr.state != "open":
            raise Conflict(f"pull request #{number} is {pr.state}", rule="pr.state")
        base = self.branches[(repo, pr.target)]
        head = self.branches[(repo, pr.source)]
        sha = self.commit(dict(self.commits[head].tree), (base, head))
        self.branches[(repo, pr.target)] = sha
        pr.state, pr.merge_commit, pr.base_before = "merged", sha, base
        pr.merged_by, pr.merged_at = "conveyor-delivery", self.clock()
        self.merges.append((repo, number))

    def close(self, s: Session, repo: str, number: int, reason: str) -> None:
        pr = self._pr(s, repo, number)
        self._staged(s).append(lambda: setattr(pr, "state", "closed"))

    def revert(self, s: Session, repo: str, number: int) -> PullView:
        pr = self._pr(s, repo, number)
        assert pr.state == "merged" and pr.merge_commit and pr.base_before
        branch = f"revert-pr-{number}"
        self.branches[(repo, branch)] = self.commit(dict(self.commits[pr.base_before].tree), (pr.merge_commit,))
        n = self.open_pr(s, repo, author="conveyor-delivery", source=branch, target=pr.target,
                         title=f'Revert "{pr.title}"', body=f"Reverts #{number}.")
        return self.pull(s, repo, n)

    def post_status(self, s: Session, repo: str, sha: str, *, state: str, context: str, description: str) -> None:
        self._staged(s).append(lambda: self.posted.append((repo, sha, state, context, description)))

    def statuses(self, s: Session, repo: str, sha: str) -> dict[str, tuple[str, str]]:
        return self.contexts(sha)

    def trailers(self, s: Session, repo: str, sha: str) -> dict[str, str]:
        return dict(self.trailer_of.get(sha, {}))


class FakeAgents:
    """Deploy verdicts by commit; like the real one, a verdict on a later commit of the branch counts."""

    def __init__(self, forge: FakeForge) -> None:
        self.forge = forge
        self.reports: dict[tuple[str, str], Verdict] = {}  # (cluster, commit) -> verdict

    def report(self, cluster: str, sha: str, ok: bool, description: str = "") -> None:
        self.reports[(cluster, sha)] = Verdict(ok, sha, description or ("Current" if ok else "Failed"))

    def report_tip(self, repo: str, branch: str, cluster: str, ok: bool, description: str = "") -> None:
        self.report(cluster, self.forge.branches[(repo, branch)], ok, description)

    def verdict(self, s: Session, repo: str, branch: str, merge: str, cluster: str) -> Verdict | None:
        history = self.forge.history(repo, branch)
        if merge not in history:
            return None
        for sha in history[: history.index(merge) + 1]:  # newest first, down to the merge
            if (cluster, sha) in self.reports:
                return self.reports[(cluster, sha)]
        return None


class FakeProbe:
    def __init__(self) -> None:
        self.answer = Probe(True, 200, "ok")
        self.calls: list[tuple[str, str, str]] = []
        self.vias: list[Via | None] = []
        self.restart_count: int | None = 0

    def restarts(self, cluster: str, namespace: str) -> int | None:
        return self.restart_count

    def probe(self, cluster: str, namespace: str, service: str, port: int | str | None, path: str,
              via: Via | None = None) -> Probe:
        self.calls.append((cluster, namespace, path))
        self.vias.append(via)
        return self.answer


class FakeLiveDiff:
    def __init__(self) -> None:
        self.state = "success"

    def diff(self, cluster: str, rendered: str, previous: str | None) -> LiveDiff:
        return LiveDiff(self.state, f"dry run on {cluster}: 1 update", f"**dry run against `{cluster}`**\n")


class FakeRenderer:
    def __init__(self) -> None:
        self.refuse: str | None = None  # a message: rendering fails validation
        self.extra: str = ""  # more YAML documents in the rendered manifests

    def render(self, s: Session, p: Promotion, env: Environment) -> Rendered:
        if self.refuse:
            raise RenderError(self.refuse, rule="render.validate")
        manifests = (f"kind: Deployment\nimage: {p.image}:{p.image_tag}@{p.image_digest}\n"
                     f"namespace: {env.namespace(p.app)}\n" + self.extra)
        return Rendered(manifests=manifests, files={f"rendered/{p.app}.yaml": manifests.encode(),
                                                    f"source/{p.app}/values.yaml": b"replicas: 1\n"})


class FakeEnvironments:
    def __init__(self, envs: dict[str, Environment]) -> None:
        self.envs = envs

    def environments(self, s: Session, gitops_repo: str) -> dict[str, Environment]:
        return dict(self.envs)


VERIFY = Verify(path="/healthz", expect_status=200, timeout=120)


def standard_envs() -> dict[str, Environment]:
    return {
        "dev": Environment(name="dev", cluster="nonprod", branch="env/dev", auto_merge=True, verify=VERIFY),
        "qa": Environment(name="qa", cluster="nonprod", branch="env/qa", after="dev", verify=VERIFY,
                          approvals=Approvals(required=1, approver_roles=("reviewer",))),
        "prod": Environment(name="prod", cluster="prod", branch="env/prod", after="qa", verify=VERIFY,
                            approvals=Approvals(required=2, approver_roles=("cluster-admin",), allow_author=False)),
    }


class World:
    """A database with delivery's tables, the fakes wired into an engine, and a clock to move."""

    GITOPS = "gitops"
    SOURCE = "hello"

    def __init__(self, tmp_path: Path, envs: dict[str, Environment] | None = None) -> None:
        import conveyor.core.models  # noqa: F401  (audit and outbox tables)
        import conveyor.delivery.models  # noqa: F401

        tmp_path.mkdir(parents=True, exist_ok=True)
        self.db = Database(f"sqlite:///{tmp_path / 'delivery.db'}")
        Base.metadata.create_all(self.db.engine, tables=[
            t for name, t in Base.metadata.tables.items()
            if name in ("audit_log", "events", "event_deliveries", "delivery_apps", "promotions",
                        "promotion_events", "gitops_repos", "delivery_freezes", "delivery_holds",
                        "delivery_bad_versions")])
        self.now = T0
        self.forge = FakeForge(lambda: self.now)
        self.agents = FakeAgents(self.forge)
        self.probe = FakeProbe()
        self.diff = FakeLiveDiff()
        self.renderer = FakeRenderer()
        self.envs = FakeEnvironments(envs or standard_envs())
        for env in self.envs.envs.values():
            self.forge.init_branch(self.GITOPS, env.branch)
            self.forge.required[(self.GITOPS, env.branch)] = env.approvals.required
        self.ports = Ports(environments=self.envs, forge=self.forge, agents=self.agents, probe=self.probe,
                           live_diff=self.diff, renderer=self.renderer, base_url="http://conveyor.test")
        self.engine = self.new_engine()

    def new_engine(self) -> PromotionEngine:
        """A fresh engine, as after a restart: it knows only what the database and the forge hold."""
        return PromotionEngine(self.db, self.ports, clock=lambda: self.now)

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)

    def release(self, version: str, author: str = "dana") -> Release:
        return Release(app="hello", version=version, source_repo=self.SOURCE, source_commit=f"{version:0<40}"[:40],
                       committed_at=T0 - timedelta(hours=1), author=author, ci_run="7", image="registry/apps/hello",
                       image_tag=version, image_digest="sha256:" + "ab" * 32, templates_artifact="sha256:" + "cd" * 32)

    def start(self, version: str, env: str = "dev", **release: Any) -> int:
        with self.db.session() as s:
            p = create_promotion(s, replace(self.release(version), **release), self.envs.envs[env], self.GITOPS)
            return p.id

    def step(self, pid: int) -> bool:
        return self.engine.step(pid)

    def get(self, pid: int) -> Promotion:
        with self.db.session() as s:
            p = s.get(Promotion, pid)
            assert p is not None
            p.events  # noqa: B018  (load the timeline before the session closes)
            return p

    def kinds(self, pid: int) -> list[str]:
        return [e.kind for e in self.get(pid).events]

    def promotions(self, env: str | None = None) -> list[Promotion]:
        from sqlalchemy import select

        with self.db.session() as s:
            q = select(Promotion).order_by(Promotion.id)
            if env:
                q = q.where(Promotion.env == env)
            return list(s.execute(q).scalars())
