"""Who may do what in the registry.

Credentials: a registry bearer token (from ``/v2/token``), an API token as a bearer token, or
HTTP Basic with a user and an API token or password (``podman login``, ``skopeo --creds``).
Pull needs read permission, or for anonymous callers a matching anonymous-pull prefix (or the
server-wide anonymous read setting); push and delete need write permission.
"""

from __future__ import annotations

from enum import StrEnum

from conveyor.core import ConveyorError, Permission, Principal
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


def needs_database(authorization: str | None) -> bool:
    if not authorization:
        return False
    scheme, _, value = authorization.partition(" ")
    return not (scheme.lower() == "bearer" and value.strip().startswith(tokens.TOKEN_PREFIX))


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


def allowed(reg: Registry, principal: Principal, name: str, action: Action) -> bool:
    if action == Action.PULL:
        if not principal.anonymous:
            return principal.can(Permission.READ)
        if reg.settings.anonymous_read:
            return True
        return any(prefix_matches(p, name) for p in reg.anonymous_prefixes())
    return not principal.anonymous and principal.can(Permission.WRITE)


def challenge(realm: str, name: str | None = None, actions: str | None = None) -> str:
    value = f'Bearer realm="{realm}",service="{SERVICE}"'
    if name and actions:
        value += f',scope="repository:{name}:{actions}"'
    return value


def require(reg: Registry, principal: Principal, name: str, action: Action, realm: str) -> None:
    if allowed(reg, principal, name, action):
        return
    if principal.anonymous:
        actions = "pull" if action == Action.PULL else ("delete" if action == Action.DELETE else "pull,push")
        raise RegistryError(
            "UNAUTHORIZED",
            "authentication required",
            detail=[{"Type": "repository", "Name": name, "Action": action.value}],
            headers={"WWW-Authenticate": challenge(realm, name, actions)},
        )
    raise RegistryError(
        "DENIED",
        f"user '{principal.name}' may not {action.value} '{name}'",
        detail=[{"Type": "repository", "Name": name, "Action": action.value}],
    )
