"""The container registry: the OCI Distribution API at /v2, a pull-through cache, tag locks, GC.

Public interface for other components (pipelines, delivery, web). Functions take the caller's
session, so they join its unit of work.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from conveyor.core import Settings, record
from conveyor.registry import blobs as _blobs
from conveyor.registry import manifests as _manifests
from conveyor.registry import policy as _policy
from conveyor.registry.errors import RegistryError
from conveyor.registry.lookups import repositories_with_tags
from conveyor.registry.names import split_reference, valid_name, valid_tag


def registry_host(settings: Settings) -> str:
    """``host:port`` that clients (podman, buildah, kubelets) use to reach this registry."""
    return urlsplit(settings.base_url).netloc


def resolve_tag(session: Session, repository: str, tag: str) -> str | None:
    """The digest ``repository:tag`` points at, or None."""
    try:
        return _manifests.lookup(session, repository, tag, with_content=False).digest
    except RegistryError:
        return None


def list_tags(session: Session, repository: str) -> list[str]:
    try:
        return _manifests.list_tags(session, repository, None, None)
    except RegistryError:
        return []


def manifest_exists(session: Session, repository: str, digest: str) -> bool:
    try:
        _manifests.lookup(session, repository, digest, with_content=False)
    except RegistryError:
        return False
    return True


def blob_exists(session: Session, repository: str, digest: str) -> bool:
    return _blobs.blob_size(session, repository, digest) is not None


def bind_app(session: Session, repository: str, source_repo: str) -> str | None:
    """Bind ``apps/<app>`` to the source repository whose CI pushes it (on first use). Returns the
    repository it is bound to when that is another one (the push must then be refused), else None."""
    from conveyor.registry.models import AppBinding

    row = session.get(AppBinding, repository)
    if row is None:
        session.add(AppBinding(repository=repository, source_repo=source_repo))
        session.flush()
        record(session, actor="conveyor-pipelines", action="registry.app_bound", target=repository,
               payload={"repository": repository, "source_repo": source_repo})
        return None
    return None if row.source_repo == source_repo else row.source_repo


def lock_tag(session: Session, repository: str, tag: str, actor: str) -> str:
    """Lock a (deployed) tag against being overwritten or deleted; returns its digest."""
    t = _policy.set_lock(session, repository, tag, actor, True)
    record(session, actor=actor, action="registry.tag.locked", target=f"{repository}:{tag}",
           payload={"repository": repository, "tag": tag, "digest": t.manifest.digest})
    return t.manifest.digest


def sign_image(reg: Any, repository: str, digest: str, reference_host: str, claims: dict[str, str]) -> str:
    """Sign ``repository@digest`` with the installation's active key (stored in cosign's format)."""
    from conveyor.registry.signing import sign_image as _sign

    return _sign(reg, repository, digest, reference_host, claims)


def verify_images(db: Any, settings: Settings, objects: list[dict[str, Any]]) -> list[Any]:
    """The signature verdicts the agent would reach for the images of ``objects`` (``agent.verify``)."""
    from conveyor.registry.verification import verify_images as _verify

    return _verify(db, settings, objects)


def unlock_tag(session: Session, repository: str, tag: str, actor: str) -> None:
    t = _policy.set_lock(session, repository, tag, actor, False)
    record(session, actor=actor, action="registry.tag.unlocked", target=f"{repository}:{tag}",
           payload={"repository": repository, "tag": tag, "digest": t.manifest.digest})


__all__ = [
    "bind_app",
    "blob_exists",
    "list_tags",
    "lock_tag",
    "manifest_exists",
    "registry_host",
    "repositories_with_tags",
    "resolve_tag",
    "sign_image",
    "split_reference",
    "unlock_tag",
    "valid_name",
    "valid_tag",
    "verify_images",
]
