"""Routes of application secrets: /api/v1/apps/{app}/envs/{env}/secrets. Values go in, never out."""

from __future__ import annotations

import base64
import binascii

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from conveyor.core import InvalidInput, Permission, PrincipalDep, SessionDep, state_of
from conveyor.delivery import secrets

router = APIRouter(prefix="/api/v1/apps/{app}/envs/{env}/secrets", tags=["delivery"])


class SecretIn(BaseModel):
    # key -> base64 of the value (any bytes). The body is never logged or stored; a schema error
    # names the field, not its content (core/http.py).
    values: dict[str, str] = Field(min_length=1, max_length=100)


class ProposedOut(BaseModel):
    repo: str
    pr_number: int
    branch: str
    path: str
    fingerprints: dict[str, str]
    changes: dict[str, str]


def _decode(values: dict[str, str]) -> dict[str, bytes]:
    out = {}
    for k, v in values.items():
        try:
            out[k] = base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput(f"values.{k[:80]}: not base64", rule="secret.value-encoding") from None
    return out


def _out(p: secrets.Proposed) -> ProposedOut:
    return ProposedOut(repo=p.repo, pr_number=p.pr_number, branch=p.branch, path=p.path, fingerprints=p.keys,
                       changes=p.changes)


@router.put("/{name}", response_model=ProposedOut, status_code=201)
def set_secret(app: str, env: str, name: str, body: SecretIn, request: Request, session: SessionDep,
               principal: PrincipalDep, gitops: str | None = None) -> ProposedOut:
    """Propose the Secret NAME with these keys (all of them: it replaces the Secret) as a GitOps PR."""
    principal.require(Permission.WRITE)
    st = state_of(request)
    return _out(secrets.propose(st.db, session, st.settings, principal, app, env, name, _decode(body.values),
                                 gitops))


@router.delete("/{name}", response_model=ProposedOut, status_code=201)
def remove_secret(app: str, env: str, name: str, request: Request, session: SessionDep,
                  principal: PrincipalDep, gitops: str | None = None) -> ProposedOut:
    """Propose removing the Secret NAME (the agent prunes it once the PR merges)."""
    principal.require(Permission.WRITE)
    st = state_of(request)
    return _out(secrets.propose(st.db, session, st.settings, principal, app, env, name, None, gitops))


@router.get("", response_model=dict[str, dict[str, str]])
def list_secrets(app: str, env: str, request: Request, session: SessionDep,
                 principal: PrincipalDep, gitops: str | None = None) -> dict[str, dict[str, str]]:
    """The app's secrets in the environment now: name -> key -> fingerprint (never values)."""
    principal.require(Permission.READ)
    return secrets.secret_names(session, state_of(request).settings, app, env, gitops)
