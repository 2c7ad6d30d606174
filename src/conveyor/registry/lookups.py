"""The pull path's lookups as single SQL Core statements on a plain connection.

Pulls are the hot path: these skip the ORM session machinery (several times the cost of the
query itself). Writers and everything else use ``manifests`` / ``blobs`` with ORM sessions.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from conveyor.registry.errors import RegistryError, blob_unknown, manifest_unknown, name_unknown
from conveyor.registry.manifests import StoredManifest
from conveyor.registry.models import Manifest, RegistryBlob, RegistryRepository, RepositoryBlob, Tag
from conveyor.registry.names import looks_like_digest, parse_digest, valid_tag

_M = Manifest.__table__
_R = RegistryRepository.__table__
_T = Tag.__table__
_B = RegistryBlob.__table__
_L = RepositoryBlob.__table__


def _missing(conn: Connection, repo: str, err: RegistryError) -> RegistryError:
    if conn.execute(select(_R.c.id).where(_R.c.name == repo)).first() is None:
        return name_unknown(repo)
    return err


def manifest(conn: Connection, repo: str, ref: str, with_content: bool) -> StoredManifest:
    cols = [_M.c.digest, _M.c.media_type, _M.c.size] + ([_M.c.content] if with_content else [])
    q = select(*cols).select_from(_M.join(_R, _R.c.id == _M.c.repo_id))
    if looks_like_digest(ref):
        q = q.where(_R.c.name == repo, _M.c.digest == str(parse_digest(ref)))
    else:
        if not valid_tag(ref):
            raise manifest_unknown(ref[:200])
        q = q.join(_T, _T.c.manifest_id == _M.c.id).where(_R.c.name == repo, _T.c.name == ref)
    row = conn.execute(q).first()
    if row is None:
        raise _missing(conn, repo, manifest_unknown(ref))
    return StoredManifest(digest=str(row[0]), media_type=str(row[1]), size=int(row[2]),
                          content=bytes(row[3]) if with_content else None)


def blob_size(conn: Connection, repo: str, digest: str) -> int | None:
    row = conn.execute(
        select(_B.c.size)
        .select_from(_B.join(_L, _L.c.digest == _B.c.digest).join(_R, _R.c.id == _L.c.repo_id))
        .where(_R.c.name == repo, _B.c.digest == digest)
    ).first()
    return int(row[0]) if row else None


__all__ = ["blob_size", "blob_unknown", "manifest"]


TagListing = tuple[str, datetime, bool, str, int, str, bytes]  # name, updated, locked, digest, size, type, content


def repositories_with_tags(session: Session) -> list[tuple[RegistryRepository, list[TagListing]]]:
    """Every repository by name with its tags, the most recently moved first (the dashboard's listing)."""
    repos = list(session.execute(select(RegistryRepository).order_by(RegistryRepository.name)).scalars())
    tags: dict[int, list[TagListing]] = {}
    q = (select(Tag.repo_id, Tag.name, Tag.updated_at, Tag.locked, Manifest.digest, Manifest.size,
                Manifest.media_type, Manifest.content)
         .join(Manifest, Tag.manifest_id == Manifest.id).order_by(Tag.updated_at.desc()))
    for repo_id, *row in session.execute(q).tuples():
        tags.setdefault(repo_id, []).append(tuple(row))  # type: ignore[arg-type]
    return [(r, tags.get(r.id, [])) for r in repos]
