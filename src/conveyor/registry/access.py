"""Who may do what in the registry.

Credentials: a registry bearer token (from ``/v2/token``), an API token as a bearer token, or
HTTP Basic with a user and an API token or password (``podman login``, ``skopeo --creds``).

Pull needs read permission (people, services, run and agent tokens), or for anonymous callers a
matching anonymous-pull prefix (or the server-wide anonymous read setting). Push depends on the
namespace, which says who owns a repository:

- ``apps/<app>``: that app's CI (a run token whose scope names it: only CI runs of the protected
  default branch get one, bound to the source repository that first pushed it) and admins;
- ``cache/...``: admins and cluster administrators (and the pull-through cache itself);
- ``users/<name>/...``: that user (and admins);
- anything else: cluster administrators and admins.

Deleting needs cluster-admin or above. Release tags are immutable by default (``policy.py``).
"""

from __future__ import annotations

from enum import StrEnum

from conveyor.core import ConveyorError, Permission, Principal, Role
from conveyor.core.http import principal_from_header
from conveyor.registry import tokens
from conveyor.registry.errors import RegistryError
from conveyor.registry.names import prefix_matches
from conveyor.registry.service import Registry

ANONYMOUS = Principal(name="anonymous", role=None)
SERVICE = "conveyor"


class Action(StrEnum):
    PULL = "pull"
    PUSH = "push"
    DELETE = "delete"


def needs_database(reg: Registry, authorization: str | None) -> bool:
    if not authorization:
        return False
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip().startswith(tokens.TOKEN_PREFIX):
        p = tokens.verify(reg.key, value.strip())
        return p is not None and not reg.validity_cached(p)
    return reg.cached_principal(authorization) is None


def authenticate(reg: Registry, authorization: str | None) -> Principal:
    """The caller; raises UNAUTHORIZED for credentials that are present but wrong."""
    if not authorization:
        return ANONYMOUS
    scheme, _, value = authorization.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value.startswith(tokens.TOKEN_PREFIX):
        p = tokens.verify(reg.key, value)
        if p is None:
            raise RegistryError("UNAUTHORIZED", "invalid or expired registry token")
        if not reg.still_valid(p):
            raise RegistryError("UNAUTHORIZED", "the credentials this registry token was issued for were revoked")
        return p
    cached = reg.cached_principal(authorization)
    if cached is not None:
        return cached
    try:
        with reg.db.session() as s:
            p = principal_from_header(s, authorization, anonymous_read=True)
    except ConveyorError as exc:
        raise RegistryError("UNAUTHORIZED", exc.detail) from None
    if not p.anonymous:
        reg.remember_principal(authorization, p)
    return p


def _at_least(principal: Principal, role: Role) -> bool:
    order = [Role.DEVELOPER, Role.REVIEWER, Role.CLUSTER_ADMIN, Role.ADMIN]
    return principal.scope is None and principal.role is not None and order.index(principal.role) >= order.index(role)


def may_push(principal: Principal, name: str) -> tuple[bool, str]:
    """(allowed, the rule that decides) for pushing to repository ``name``."""
    if principal.scope is not None:
        return principal.scope.may_push_image(name), "registry.push-scope"
    if principal.role == Role.ADMIN:
        return True, "registry.admin"
    first, _, rest = name.partition("/")
    if first == "apps":
        return False, "registry.apps-by-ci"
    if first == "users":
        owner = rest.partition("/")[0]
        return principal.name == owner and principal.can(Permission.WRITE), "registry.personal-namespace"
    return _at_least(principal, Role.CLUSTER_ADMIN), "registry.shared-namespace"


def allowed(reg: Registry, principal: Principal, name: str, action: Action) -> bool:
    return decide(reg, principal, name, action)[0]


def decide(reg: Registry, principal: Principal, name: str, action: Action) -> tuple[bool, str]:
    if action == Action.PULL:
        if principal.scope is not None:
            return True, "registry.pull"
        if not principal.anonymous:
            return principal.can(Permission.READ), "role.read"
        if reg.settings.anonymous_read:
            return True, "registry.anonymous-read"
        return any(prefix_matches(p, name) for p in reg.anonymous_prefixes()), "registry.anonymous-prefix"
    if principal.anonymous:
        return False, "auth.token-required"
    if action == Action.DELETE:
        return _at_least(principal, Role.CLUSTER_ADMIN), "registry.delete-role"
    return may_push(principal, name)


def challenge(realm: str, name: str | None = None, actions: str | None = None) -> str:
    value = f'Bearer realm="{realm}",service="{SERVICE}"'
    if name and actions:
        value += f',scope="repository:{name}:{actions}"'
    return value


_WHY = {
    "registry.apps-by-ci": "apps/<app> is written by that app's CI runs of its protected default branch (and admins)",
    "registry.personal-namespace": "users/<name>/ is written by that user only",
    "registry.shared-namespace": "this namespace is written by cluster administrators and admins",
    "registry.delete-role": "deleting needs the cluster-admin role or above",
    "registry.push-scope": "this token may push only to the repositories of its scope",
}


def require(reg: Registry, principal: Principal, name: str, action: Action, realm: str) -> None:
    ok, rule = decide(reg, principal, name, action)
    if ok:
        return
    if principal.anonymous:
        actions = "pull" if action == Action.PULL else ("delete" if action == Action.DELETE else "pull,push")
        raise RegistryError(
            "UNAUTHORIZED",
            "authentication required",
            detail=[{"Type": "repository", "Name": name, "Action": action.value}],
            headers={"WWW-Authenticate": challenge(realm, name, actions)},
        )
    why = _WHY.get(rule, "")
    raise RegistryError(
        "DENIED",
        f"{principal.label} may not {action.value} '{name}'" + (f": {why}" if why else ""),
        detail=[{"Type": "repository", "Name": name, "Action": action.value, "rule": rule}],
    )
