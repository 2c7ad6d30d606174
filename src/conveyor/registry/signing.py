"""The installation's image signing keys, and signing an image in the registry (server side).

CI never holds a key: the runner asks the server to sign an image its run pushed
(``POST /api/v1/runner/runs/{id}/sign``), and the server signs with the active key and stores the
signature next to the image, in cosign's format (``conveyor.agent.imagesig``). The private key is
stored encrypted with Fernet, like pipeline secrets: the key for that lives in the data dir
(``signing-secrets.key``, mode 0600) or in ``CONVEYOR_SIGNING_SECRETS_KEY``, which servers sharing
one database must share. ``rotate`` makes a new active key and retires the old one, which stays
trusted for what it signed; ``revoke`` distrusts a key at once (its images fail verification).
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Any

from cryptography.fernet import Fernet
from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.agent import imagesig
from conveyor.core import Conflict, NotFound, Settings, record, utcnow
from conveyor.core.bootstrap import fernet_key
from conveyor.registry import blobs, manifests
from conveyor.registry.errors import RegistryError
from conveyor.registry.models import SigningKey
from conveyor.registry.repos import in_transaction
from conveyor.registry.service import Registry

SECRETS_KEY_ENV = "CONVEYOR_SIGNING_SECRETS_KEY"
SIGNER = "conveyor-pipelines"


class KeyState(StrEnum):
    ACTIVE = "active"
    RETIRED = "retired"
    REVOKED = "revoked"


def _fernet(settings: Settings) -> Fernet:
    return fernet_key(SECRETS_KEY_ENV, settings.data_dir / "signing-secrets.key")


def _create(session: Session, settings: Settings, actor: str) -> SigningKey:
    private, public = imagesig.new_key()
    row = SigningKey(key_id=imagesig.key_id(public), public_pem=public.decode(), state=KeyState.ACTIVE,
                     private_ciphertext=_fernet(settings).encrypt(private), created_by=actor)
    session.add(row)
    session.flush()
    record(session, actor=actor, action="registry.signing_key.created", target=row.key_id,
           payload={"key_id": row.key_id})
    return row


def active_key(session: Session, settings: Settings, create: bool = True) -> SigningKey | None:
    row = session.execute(select(SigningKey).where(SigningKey.state == KeyState.ACTIVE)
                          .order_by(SigningKey.id.desc()).limit(1)).scalar_one_or_none()
    if row is None and create:
        row = _create(session, settings, "system")
    return row


def rotate(session: Session, settings: Settings, actor: str) -> SigningKey:
    """A new active key; the previous one is retired (still trusted for the images it signed)."""
    for old in session.execute(select(SigningKey).where(SigningKey.state == KeyState.ACTIVE)).scalars():
        old.state, old.retired_at = KeyState.RETIRED, utcnow()
        record(session, actor=actor, action="registry.signing_key.retired", target=old.key_id,
               payload={"key_id": old.key_id})
    return _create(session, settings, actor)


def revoke(session: Session, key: str, actor: str) -> SigningKey:
    row = session.execute(select(SigningKey).where(SigningKey.key_id.startswith(key))).scalars().all()
    if len(row) != 1:
        raise NotFound(f"no single signing key matches '{key}'", rule="signing.key-unknown")
    if row[0].state == KeyState.ACTIVE:
        raise Conflict("the active key cannot be revoked: rotate first", rule="signing.revoke-active")
    row[0].state, row[0].revoked_at = KeyState.REVOKED, utcnow()
    record(session, actor=actor, action="registry.signing_key.revoked", target=row[0].key_id,
           payload={"key_id": row[0].key_id})
    return row[0]


def list_keys(session: Session) -> list[dict[str, Any]]:
    def when(at: datetime | None) -> str | None:
        return at.isoformat() if at else None

    return [{"key_id": k.key_id, "public_key": k.public_pem, "state": k.state, "created_at": when(k.created_at),
             "retired_at": when(k.retired_at), "revoked_at": when(k.revoked_at)}
            for k in session.execute(select(SigningKey).order_by(SigningKey.id)).scalars()]


def sign_image(reg: Registry, repository: str, digest: str, reference_host: str, claims: dict[str, str]) -> str:
    """Sign ``repository@digest`` with the active key and store the signature in the registry;
    returns the key's id. Re-signing adds a layer to the image's ``.sig`` manifest, as cosign does."""
    with reg.db.session() as s:
        key = active_key(s, reg.settings)
        assert key is not None
        key_id, private = key.key_id, _fernet(reg.settings).decrypt(key.private_ciphertext)
    data = imagesig.payload(f"{reference_host}/{repository}", digest, claims)
    layer = imagesig.SignatureLayer(data, imagesig.sign(private, data), key_id)
    tag = imagesig.signature_tag(digest)

    def existing_layers(s: Session) -> list[dict[str, Any]]:
        try:
            found = manifests.lookup(s, repository, tag, with_content=True)
        except RegistryError:
            return []
        return list(json.loads(found.content or b"{}").get("layers") or [])

    with reg.reads() as s:
        layers = existing_layers(s)
    body, config = imagesig.signature_manifest(layers, layer)
    blobs.store_bytes(reg, repository, SIGNER, data)
    blobs.store_bytes(reg, repository, SIGNER, config)
    in_transaction(reg.db, lambda s: manifests.put(s, repository, tag, body, imagesig.OCI_MANIFEST, SIGNER))
    with reg.db.session() as s:
        record(s, actor=SIGNER, action="registry.image.signed", target=f"{repository}@{digest}",
               payload={"repository": repository, "digest": digest, "key_id": key_id, **claims})
    return key_id
