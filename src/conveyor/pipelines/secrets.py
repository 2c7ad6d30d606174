"""Repository secrets for pipelines: stored encrypted, handed to steps, masked in logs.

The key lives in the data directory (``pipelines-secrets.key``, mode 0600) or comes from
CONVEYOR_PIPELINE_SECRETS_KEY, which workers on other machines must share.
"""

from __future__ import annotations

import re

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.core import InvalidInput, NotFound, Settings, record, utcnow
from conveyor.core.bootstrap import fernet_key
from conveyor.pipelines.models import Secret, SecretScope

__all__ = ["SecretScope"]

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
REFERENCE = re.compile(r"\$\{\{\s*secrets\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def _fernet(settings: Settings) -> Fernet:
    return fernet_key("CONVEYOR_PIPELINE_SECRETS_KEY", settings.data_dir / "pipelines-secrets.key")


def set_secret(session: Session, settings: Settings, repo_id: int, repo_name: str, name: str, value: str,
               actor: str, scope: SecretScope = SecretScope.PROTECTED) -> None:
    if not NAME.match(name):
        raise InvalidInput("secret names are letters, digits and _, not starting with a digit", rule="secret.name")
    if not value:
        raise InvalidInput("a secret cannot be empty", rule="secret.value")
    ciphertext = _fernet(settings).encrypt(value.encode())
    row = session.execute(
        select(Secret).where(Secret.repo_id == repo_id, Secret.name == name)
    ).scalar_one_or_none()
    if row is None:
        session.add(Secret(repo_id=repo_id, name=name, ciphertext=ciphertext, updated_by=actor, scope=scope.value))
    else:
        row.ciphertext, row.updated_by, row.updated_at, row.scope = ciphertext, actor, utcnow(), scope.value
    record(session, actor=actor, action="pipeline.secret.set", target=f"{repo_name}/{name}",
           payload={"repo": repo_name, "name": name, "scope": scope.value})


def delete_secret(session: Session, repo_id: int, repo_name: str, name: str, actor: str) -> None:
    row = session.execute(
        select(Secret).where(Secret.repo_id == repo_id, Secret.name == name)
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"repository '{repo_name}' has no secret '{name}'")
    session.delete(row)
    record(session, actor=actor, action="pipeline.secret.deleted", target=f"{repo_name}/{name}",
           payload={"repo": repo_name, "name": name})


def secret_scopes(session: Session, repo_id: int) -> list[tuple[str, str]]:
    """(name, scope) of a repository's secrets; values are never returned."""
    rows = session.execute(select(Secret.name, Secret.scope).where(Secret.repo_id == repo_id).order_by(Secret.name))
    return [(n, s) for n, s in rows]


def load_secrets(session: Session, settings: Settings, repo_id: int,
                 only: SecretScope | None = None) -> dict[str, str]:
    """The repository's secrets (only those of scope ``only`` when given: what a PR run may see)."""
    f = _fernet(settings)
    out = {}
    q = select(Secret).where(Secret.repo_id == repo_id)
    if only is not None:
        q = q.where(Secret.scope == only.value)
    for row in session.execute(q).scalars():
        try:
            out[row.name] = f.decrypt(row.ciphertext).decode()
        except InvalidToken:
            raise RuntimeError(f"secret '{row.name}' cannot be decrypted with this worker's key") from None
    return out


def expand(value: str, secrets: dict[str, str]) -> str:
    """Replace ``${{ secrets.NAME }}``; an unknown name is an error that names it."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in secrets:
            raise KeyError(name)
        return secrets[name]

    return REFERENCE.sub(sub, value)


def encodings(value: str) -> set[str]:
    """The value and the forms a careless step most often prints it in (base64, hex, URL-quoted).

    Masking is a courtesy against accidents, not a boundary: a step that wants to leak a secret it
    was given can always encode it differently. The boundary is which runs get secrets at all.
    """
    import base64
    import urllib.parse

    raw = value.encode()
    forms = {value, raw.hex(), urllib.parse.quote(value, safe="")}
    b64 = base64.b64encode(raw).decode()
    forms |= {b64, b64.rstrip("="), base64.urlsafe_b64encode(raw).decode().rstrip("=")}
    return {f for f in forms if len(f) >= 4}


class Masker:
    """Replaces every secret value (and its common encodings) in log text with ***."""

    def __init__(self, values: list[str]) -> None:
        # Longest first, so a secret containing another is masked whole; very short values would
        # mask ordinary text and are not secret enough to hide anyway.
        forms = {f for v in values if len(v) >= 4 for f in encodings(v)}
        self.values = sorted(forms, key=len, reverse=True)
        self.pattern = re.compile("|".join(re.escape(v) for v in self.values)) if self.values else None

    def __call__(self, text: str) -> str:
        return self.pattern.sub("***", text) if self.pattern else text
