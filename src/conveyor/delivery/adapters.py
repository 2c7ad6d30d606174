"""The real implementations of the engine's interfaces (``ports.py``), over each component's public
interface: the forge, the clusters (probe, live diff, Kubernetes version), the pipelines' artifacts
and the templates module."""

from __future__ import annotations

import yaml
from sqlalchemy.orm import Session

from conveyor.clusters import KUBERNETES_VERSION
from conveyor.clusters import load as load_cluster
from conveyor.core import ConveyorError, Database, NotFound, Principal, Role, Settings, service_principal
from conveyor.core.identities import get_user
from conveyor.delivery import secret_refs
from conveyor.delivery.clusters_access import pod_restarts, probe_endpoint
from conveyor.delivery.contexts import deploy_prefix
from conveyor.delivery.environments import Environment, Via, app_values
from conveyor.delivery.gitops import current_environments
from conveyor.delivery.live_diff import live_diff
from conveyor.delivery.models import Promotion
from conveyor.delivery.ports import LiveDiff, Ports, Probe, PullView, Rendered, Verdict
from conveyor.delivery.records import SERVICE_USER
from conveyor.delivery.secrets import documents
from conveyor.forge import (
    bare,
    close_pr,
    combined_status,
    create_pr,
    evaluate,
    get_pr,
    get_repo,
    merge_pr,
    post_status,
    revert_pr,
    write_branch,
)
from conveyor.pipelines import blob_path
from conveyor.templates import ImageRef, RenderError, TemplateBundle, deep_merge, problems, render

DELIVERY = service_principal(SERVICE_USER, Role.DEVELOPER)


def _view(s: Session, settings: Settings, repo_name: str, number: int) -> PullView:
    repo = get_repo(s, repo_name)
    pr = get_pr(s, repo, number)
    m = evaluate(s, settings, repo, pr)
    return PullView(number=pr.number, state=pr.state, head_sha=pr.head_sha, author=pr.author,
                    merge_commit=pr.merge_commit_sha, merged_by=pr.merged_by, merged_at=pr.merged_at,
                    approvers=tuple(m.approvals), mergeable=m.mergeable,
                    blockers=tuple(b.message for b in m.blockers))


class ForgeAdapter:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db, self.settings = db, settings

    def branch_tip(self, s: Session, repo: str, branch: str) -> str | None:
        return bare(self.settings, get_repo(s, repo)).branch_tip(branch)

    def write_branch(self, s: Session, repo: str, branch: str, files: dict[str, bytes | None], message: str, *,
                     base: str | None, replace_dirs: tuple[str, ...]) -> str:
        r = get_repo(s, repo)
        return write_branch(s, self.settings, DELIVERY, r, branch, files, message, base=base,
                            expect=bare(self.settings, r).branch_tip(branch), replace_dirs=replace_dirs)

    def same_tree(self, s: Session, repo: str, a: str, b: str) -> bool:
        git = bare(self.settings, get_repo(s, repo))
        return git.tree_of(a) == git.tree_of(b)

    def diffstat(self, s: Session, repo: str, base: str, head: str) -> list[tuple[str, int | None, int | None]]:
        return [(f.path, f.added, f.deleted) for f in bare(self.settings, get_repo(s, repo)).diffstat(base, head)]

    def read_file(self, s: Session, repo: str, rev: str, path: str) -> bytes | None:
        return bare(self.settings, get_repo(s, repo)).read_file(rev, path)

    def open_pr(self, s: Session, repo: str, *, author: str, source: str, target: str, title: str,
                body: str) -> int:
        pr = create_pr(s, self.settings, _principal(s, author), get_repo(s, repo), source=source, target=target,
                       title=title, body=body, opened_by=DELIVERY)
        return pr.number

    def pull(self, s: Session, repo: str, number: int) -> PullView:
        return _view(s, self.settings, repo, number)

    def merge(self, repo: str, number: int) -> None:
        merge_pr(self.db, self.settings, DELIVERY, repo, number, "merge")

    def close(self, s: Session, repo: str, number: int, reason: str) -> None:
        r = get_repo(s, repo)
        close_pr(s, self.settings, DELIVERY, r, get_pr(s, r, number), reason=reason)

    def revert(self, s: Session, repo: str, number: int) -> PullView:
        r = get_repo(s, repo)
        revert = revert_pr(s, self.settings, DELIVERY, r, get_pr(s, r, number))
        return _view(s, self.settings, repo, revert.number)

    def post_status(self, s: Session, repo: str, sha: str, *, state: str, context: str, description: str) -> None:
        post_status(s, self.settings, DELIVERY, get_repo(s, repo), sha, state=state, context=context,
                    description=description)

    def statuses(self, s: Session, repo: str, sha: str) -> dict[str, tuple[str, str]]:
        return {st.context: (st.state, st.description) for st in combined_status(s, get_repo(s, repo), sha).statuses}

    def trailers(self, s: Session, repo: str, sha: str) -> dict[str, str]:
        out = bare(self.settings, get_repo(s, repo)).run(
            "log", "-1", "--format=%(trailers:only,unfold)", sha, check=False).stdout
        found = {}
        for line in out.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                found[key.strip()] = value.strip()
        return found


def _principal(s: Session, name: str) -> Principal:
    """The change's author, so that "no self-approval" applies to them; delivery when they are gone."""
    try:
        user = get_user(s, name)
    except NotFound:
        return DELIVERY
    if user.disabled:
        return DELIVERY
    return Principal(name=user.name, role=Role(user.role), user_id=user.id)


class AgentStatusesAdapter:
    """The agents post ``conveyor/deploy/<cluster>/<sync>`` on the commits of the branch they applied."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def verdict(self, s: Session, repo: str, branch: str, merge: str, cluster: str) -> Verdict | None:
        r = get_repo(s, repo)
        git = bare(self.settings, r)
        tip = git.branch_tip(branch)
        if not tip or not merge or not git.is_ancestor(merge, tip):
            return None
        shas = git.run("rev-list", "--ancestry-path", f"{merge}..{tip}").stdout.split() + [merge]
        prefix = deploy_prefix(cluster)
        for sha in shas:  # newest first
            for st in combined_status(s, r, sha).statuses:
                if st.context.startswith(prefix) and st.state in ("success", "failure", "error"):
                    return Verdict(st.state == "success", sha, st.description)
        return None


class ProbeAdapter:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def probe(self, cluster: str, namespace: str, service: str, port: int | str | None, path: str,
              via: Via | None = None) -> Probe:
        return probe_endpoint(self.settings, cluster, namespace, service, port, path, via)

    def restarts(self, cluster: str, namespace: str) -> int | None:
        return pod_restarts(self.settings, cluster, namespace)


class LiveDiffAdapter:
    def __init__(self, settings: Settings, db: Database | None = None) -> None:
        self.settings, self.db = settings, db

    def diff(self, cluster: str, rendered: str, previous: str | None) -> LiveDiff:
        return live_diff(self.settings, cluster, rendered, previous, self.db)


def cluster_version(settings: Settings, cluster: str) -> str:
    """What the environment's cluster runs (its registration), else the pinned release."""
    try:
        return load_cluster(settings.data_dir, cluster).version or KUBERNETES_VERSION
    except ConveyorError:
        return KUBERNETES_VERSION


class TemplatesRenderer:
    """CI's templates artifact rendered with the environment's values, validated for its cluster."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def render(self, s: Session, p: Promotion, env: Environment) -> Rendered:
        git = bare(self.settings, get_repo(s, p.gitops_repo))
        values = deep_merge(env.values, app_values(git, git.branch_tip("main") or "", env.name, p.app))
        bundle = TemplateBundle.from_archive(blob_path(self.settings, p.templates_artifact or "").read_bytes())
        manifests = render(bundle, app=p.app, namespace=env.namespace(p.app), values=values,
                           image=ImageRef(p.image, p.image_tag, p.image_digest))
        version = cluster_version(self.settings, env.cluster)
        found = problems(manifests, version)
        if found:
            raise RenderError(f"rendered manifests of {p.app} for {env.name} are invalid for Kubernetes {version} "
                              f"(cluster {env.cluster}): " + "; ".join(found[:5]), rule="render.validate")
        # every Secret the workloads use must exist for the environment; their checksums roll them
        manifests = secret_refs.stamp(manifests, documents(git, git.branch_tip(env.branch), p.app), env=env.name)
        files: dict[str, bytes | None] = {f"rendered/{p.app}.yaml": manifests.encode()}
        for rel, content in bundle.files.items():
            files[f"source/{p.app}/templates/{rel}"] = content
        files[f"source/{p.app}/values.yaml"] = yaml.safe_dump(values, sort_keys=True).encode()
        files[f"source/{p.app}/release.yaml"] = yaml.safe_dump({
            "app": p.app, "version": p.version, "image": f"{p.image}:{p.image_tag}@{p.image_digest}",
            "source": {"repo": p.source_repo, "commit": p.source_commit}, "ci_run": p.ci_run,
            "kubernetes": version,
        }, sort_keys=False).encode()
        return Rendered(manifests=manifests, files=files)


class GitopsEnvironments:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def environments(self, s: Session, gitops_repo: str) -> dict[str, Environment]:
        return current_environments(s, self.settings, gitops_repo)


class OtherPullRequests:
    """The gate check on PRs to environment branches that CD did not open (a person's change)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def refresh(self, s: Session) -> None:
        from conveyor.delivery.gates import refresh_gates

        refresh_gates(s, self.settings)


def real_ports(db: Database, settings: Settings) -> Ports:
    return Ports(environments=GitopsEnvironments(settings), forge=ForgeAdapter(db, settings),
                 agents=AgentStatusesAdapter(settings), probe=ProbeAdapter(settings),
                 live_diff=LiveDiffAdapter(settings, db), renderer=TemplatesRenderer(settings),
                 base_url=settings.base_url, gates=OtherPullRequests(settings))
