"""What the promotion engine needs from the rest of the system, as small injected interfaces.

The engine reads and writes only its own tables directly. Everything else reaches it through these
Protocols: the forge (branches, PRs, merges, statuses), the agents' deploy statuses, the cluster
probe (endpoint verification), the live diff (server-side dry run), the renderer and the
environment definitions. ``adapters``
has the real implementations over each component's public interface; the unit tests drive every
transition with in-memory fakes, without clusters, git or a server.

Methods that take a ``Session`` act inside the engine's transaction for the step (a rollback undoes
them, except writing a git ref, which the next attempt overwrites). ``Forge.merge`` is the one
operation that runs its own units of work; see ``transitions`` for how a step uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy.orm import Session

from conveyor.delivery.environments import Environment, Via
from conveyor.delivery.models import Promotion


@dataclass(frozen=True)
class PullView:
    number: int
    state: str  # open | merging | merged | closed
    head_sha: str
    author: str
    merge_commit: str | None = None
    merged_by: str | None = None
    merged_at: datetime | None = None
    approvers: tuple[str, ...] = ()  # approvals that count under the target branch's rules, on the current head
    mergeable: bool = False
    blockers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verdict:
    """An agent's word on a commit of an environment branch."""

    ok: bool
    commit: str
    description: str


@dataclass(frozen=True)
class Probe:
    ok: bool  # the request was answered (any status)
    status: int | None
    body: str
    error: str | None = None
    where: str = ""  # what was asked: "http://NODE:NODEPORT/path" or "the service proxy of NS/NAME"


@dataclass(frozen=True)
class LiveDiff:
    state: str  # success | failure (the cluster would refuse the change)
    summary: str
    markdown: str


@dataclass(frozen=True)
class Rendered:
    manifests: str  # rendered/<app>.yaml, what the agent applies
    files: dict[str, bytes | None]  # everything written to the deploy branch (manifests, sources, values)


class Forge(Protocol):
    def branch_tip(self, s: Session, repo: str, branch: str) -> str | None: ...

    def write_branch(self, s: Session, repo: str, branch: str, files: dict[str, bytes | None], message: str, *,
                     base: str | None, replace_dirs: tuple[str, ...]) -> str:
        """Commit ``files`` on ``base`` and point ``branch`` at it (whatever it pointed to); the new commit."""
        ...

    def same_tree(self, s: Session, repo: str, a: str, b: str) -> bool: ...

    def diffstat(self, s: Session, repo: str, base: str, head: str) -> list[tuple[str, int | None, int | None]]: ...

    def read_file(self, s: Session, repo: str, rev: str, path: str) -> bytes | None: ...

    def open_pr(self, s: Session, repo: str, *, author: str, source: str, target: str, title: str,
                body: str) -> int: ...

    def pull(self, s: Session, repo: str, number: int) -> PullView: ...

    def merge(self, repo: str, number: int) -> None:
        """Merge in the forge's own transactions (intent, compare-and-swap of the ref, record)."""
        ...

    def close(self, s: Session, repo: str, number: int, reason: str) -> None: ...

    def revert(self, s: Session, repo: str, number: int) -> PullView:
        """Open a PR that undoes merged PR ``number``."""
        ...

    def post_status(self, s: Session, repo: str, sha: str, *, state: str, context: str, description: str) -> None: ...

    def statuses(self, s: Session, repo: str, sha: str) -> dict[str, tuple[str, str]]:
        """The latest (state, description) of each status context on ``sha``."""
        ...

    def trailers(self, s: Session, repo: str, sha: str) -> dict[str, str]:
        """The trailers of commit ``sha``'s message (``Security: yes`` -> {"Security": "yes"})."""
        ...


class AgentStatuses(Protocol):
    def verdict(self, s: Session, repo: str, branch: str, merge: str, cluster: str) -> Verdict | None:
        """The newest verdict of ``cluster``'s agent on a commit of ``branch`` that contains ``merge``."""
        ...


class ClusterProbe(Protocol):
    def probe(self, cluster: str, namespace: str, service: str, port: int | str | None, path: str,
              via: Via | None = None) -> Probe:
        """GET ``path`` on the Service: ``via`` NodePort or the service proxy (None: by the cluster's kind)."""
        ...

    def restarts(self, cluster: str, namespace: str) -> int | None:
        """Container restarts of the pods in ``namespace`` so far (None: the cluster cannot be asked)."""
        ...


class LiveDiffer(Protocol):
    def diff(self, cluster: str, rendered: str, previous: str | None) -> LiveDiff: ...


class Renderer(Protocol):
    def render(self, s: Session, p: Promotion, env: Environment) -> Rendered:
        """The deploy branch's files for ``p`` in ``env``; raises ``RenderError`` for invalid templates."""
        ...


class Environments(Protocol):
    def environments(self, s: Session, gitops_repo: str) -> dict[str, Environment]:
        """The environment definitions on the GitOps repository's main."""
        ...


@dataclass(frozen=True)
class Ports:
    environments: Environments
    forge: Forge
    agents: AgentStatuses
    probe: ClusterProbe
    live_diff: LiveDiffer
    renderer: Renderer
    base_url: str = ""  # for links in PR bodies
    gates: GateRefresher | None = None  # the gate check on PRs to environment branches that CD did not open


class GateRefresher(Protocol):
    def refresh(self, s: Session) -> None: ...
