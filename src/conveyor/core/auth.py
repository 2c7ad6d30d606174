"""Who may do what: roles and their permissions, identities, and narrowed (scoped) tokens.

Two kinds of callers exist. People (and Conveyor's own services) act with the permissions of
their role. Narrowed tokens act with exactly their ``Scope`` and nothing else: a pipeline run's
token, a cluster agent's token and a runner's token have no role permissions at all, so an
endpoint serves them only where it checks the scope explicitly (``Principal.require`` refuses
them everywhere else with ``token.scope``). That is what keeps a pull request's pipeline step,
which holds its run's token, from using it as its author — or as anyone.
"""

from __future__ import annotations

import fnmatch
import hashlib
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import VerificationError

from conveyor.core.errors import Forbidden, InvalidInput, Unauthorized


class Role(StrEnum):
    DEVELOPER = "developer"
    REVIEWER = "reviewer"
    CLUSTER_ADMIN = "cluster-admin"
    ADMIN = "admin"


class Permission(StrEnum):
    READ = "read"
    WRITE = "write"  # push, open PRs, review, post statuses
    CREATE_REPO = "create-repo"
    MANAGE_REPO = "manage-repo"  # protection rules, webhooks, other users' runs and PR branches
    DELETE_REPO = "delete-repo"
    MANAGE_USERS = "manage-users"


_BASE = {Permission.READ, Permission.WRITE, Permission.CREATE_REPO}
ROLE_PERMISSIONS: dict[Role, set[Permission]] = {
    Role.DEVELOPER: set(_BASE),
    Role.REVIEWER: set(_BASE),
    Role.CLUSTER_ADMIN: _BASE | {Permission.MANAGE_REPO},
    Role.ADMIN: set(Permission),
}


class Kind(StrEnum):
    """What an identity is. Names of the non-person kinds are reserved (see ``RESERVED_PREFIXES``)."""

    PERSON = "person"
    SERVICE = "service"  # Conveyor's components: conveyor-pipelines, conveyor-delivery
    AGENT = "agent"  # one per registered cluster: agent-<cluster>
    RUNNER = "runner"  # a pipeline runner: runner-<name>


RESERVED_PREFIXES = {Kind.SERVICE: "conveyor-", Kind.AGENT: "agent-", Kind.RUNNER: "runner-"}


def agent_name(cluster: str) -> str:
    return f"{RESERVED_PREFIXES[Kind.AGENT]}{cluster}"


TOKEN_PREFIX = "cvy_"
_hasher = PasswordHasher()


@dataclass(frozen=True)
class Scope:
    """What a narrowed token may do — all of it, since such a token has no role permissions.

    run tokens: read ``repos[0]`` at ``commit``, pull images, push to ``push`` (only a CI run of
    the protected default branch gets any), upload its run's artifacts, post its pipeline's
    context on its commit (never ``success``: a run passes when its runner says so, not when a
    step claims it). Agent tokens: read every repository of ``repo_kinds`` (the GitOps repos) and
    post ``conveyor/deploy/<cluster>/*``. Runner tokens: claim and report runs (``runner``).
    """

    run_id: int | None = None
    repos: tuple[str, ...] = ()
    repo_kinds: tuple[str, ...] = ()
    commit: str | None = None
    pipeline: str | None = None
    push: tuple[str, ...] = ()
    cluster: str | None = None
    runner: str | None = None
    labels: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if v not in (None, ())}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Scope:
        known = set(cls.__dataclass_fields__)
        values: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in known}
        return cls(**values)

    def may_read_repo(self, name: str, kind: str) -> bool:
        return name in self.repos or kind in self.repo_kinds

    def may_push_image(self, repository: str) -> bool:
        return any(repository == p or repository.startswith(p.rstrip("/") + "/") for p in self.push)

    def may_post_status(self, repo: str, kind: str, sha: str, context: str, state: str) -> bool:
        if self.cluster is not None:
            return self.may_read_repo(repo, kind) and fnmatch.fnmatchcase(context, f"conveyor/deploy/{self.cluster}/*")
        if self.run_id is not None and self.pipeline is not None:
            return (repo in self.repos and sha == self.commit and context == f"conveyor/{self.pipeline}"
                    and state != "success")
        return False

    def describe(self) -> str:
        if self.run_id is not None:
            return f"run {self.run_id}"
        if self.cluster is not None:
            return f"the agent of cluster '{self.cluster}'"
        if self.runner is not None:
            return f"runner '{self.runner}'"
        return "a narrowed token"


@dataclass(frozen=True)
class Principal:
    """Who is making a request. ``user_id`` is None for anonymous readers."""

    name: str
    role: Role | None
    user_id: int | None = None
    may_read: bool = True
    kind: Kind = Kind.PERSON
    token_id: int | None = None
    scope: Scope | None = None

    @property
    def anonymous(self) -> bool:
        return self.user_id is None and self.kind == Kind.PERSON

    @property
    def label(self) -> str:
        """The name the audit log and statuses show: a run token acts as its service, for its run."""
        if self.scope is not None and self.scope.run_id is not None:
            return f"{self.name}/run-{self.scope.run_id}"
        return self.name

    def can(self, perm: Permission) -> bool:
        if self.scope is not None:
            return False
        if self.role is None:
            return perm == Permission.READ
        return perm in ROLE_PERMISSIONS[self.role]

    def require(self, perm: Permission) -> None:
        if self.scope is not None:
            raise Forbidden(
                f"this token belongs to {self.scope.describe()} and may not be used for '{perm}' here",
                rule="token.scope",
            )
        if self.anonymous and (perm != Permission.READ or not self.may_read):
            raise Unauthorized("this operation needs an API token", rule="auth.token-required")
        if not self.can(perm):
            raise Forbidden(
                f"role '{self.role}' of user '{self.name}' does not allow '{perm}'",
                rule=f"role.{perm}",
            )

    def is_service(self, name: str) -> bool:
        return self.kind == Kind.SERVICE and self.scope is None and self.name == name


ANONYMOUS = Principal(name="anonymous", role=None)
NOBODY = Principal(name="anonymous", role=None, may_read=False)


def service_principal(name: str, role: Role = Role.DEVELOPER) -> Principal:
    """A component acting as itself inside the server (its user row exists; see ``ensure_identity``)."""
    return Principal(name=name, role=role, kind=Kind.SERVICE, user_id=0)


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise InvalidInput(
            f"unknown role '{value}'; expected one of: {', '.join(r.value for r in Role)}",
            rule="user.role",
        ) from None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash, password)
    except VerificationError:
        return False
