"""Registry tables: repositories, blobs and their repository links, manifests, tags and policies.

Blob bytes live in the content-addressed store on disk; the database says which blobs exist
and which repository may serve them. Manifests are small (<= 4 MiB) and are stored byte-exact
in the database, so a manifest, its tags and its push event commit in one transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from conveyor.core.db import Base, UTCDateTime, utcnow


class RegistryRepository(Base):
    __tablename__ = "registry_repositories"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class RegistryBlob(Base):
    """A blob present in the content store. ``last_used_at`` is the GC's race guard: every
    upload and every manifest that references the blob touches it in the same transaction."""

    __tablename__ = "registry_blobs"

    digest: Mapped[str] = mapped_column(String(160), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)


class RepositoryBlob(Base):
    """The link that lets a repository serve a blob (like CNCF Distribution's per-repo links)."""

    __tablename__ = "registry_repository_blobs"

    repo_id: Mapped[int] = mapped_column(
        ForeignKey("registry_repositories.id", ondelete="CASCADE"), primary_key=True
    )
    digest: Mapped[str] = mapped_column(
        ForeignKey("registry_blobs.digest", ondelete="CASCADE"), primary_key=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Manifest(Base):
    __tablename__ = "registry_manifests"
    __table_args__ = (
        UniqueConstraint("repo_id", "digest"),
        Index("ix_registry_manifests_subject", "repo_id", "subject_digest"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repo_id: Mapped[int] = mapped_column(ForeignKey("registry_repositories.id", ondelete="CASCADE"))
    digest: Mapped[str] = mapped_column(String(160))
    media_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(Integer)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    artifact_type: Mapped[str | None] = mapped_column(String(255), nullable=True)
    subject_digest: Mapped[str | None] = mapped_column(String(160), nullable=True)
    annotations: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    pushed_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    references: Mapped[list[ManifestReference]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True
    )


class ManifestReference(Base):
    """What a manifest points at: blobs (config, layers) and child manifests (index entries)."""

    __tablename__ = "registry_manifest_refs"

    manifest_id: Mapped[int] = mapped_column(
        ForeignKey("registry_manifests.id", ondelete="CASCADE"), primary_key=True
    )
    digest: Mapped[str] = mapped_column(String(160), primary_key=True, index=True)
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)  # blob | manifest


class Tag(Base):
    __tablename__ = "registry_tags"
    __table_args__ = (UniqueConstraint("repo_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repo_id: Mapped[int] = mapped_column(ForeignKey("registry_repositories.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    manifest_id: Mapped[int] = mapped_column(ForeignKey("registry_manifests.id", ondelete="CASCADE"), index=True)
    updated_by: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    locked: Mapped[bool] = mapped_column(default=False)
    locked_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    locked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Pull-through cache: when the upstream was last asked where this tag points.
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    manifest: Mapped[Manifest] = relationship()


class ImmutableTagRule(Base):
    """Tags of ``repository`` matching the glob ``pattern`` can be created but never moved or deleted."""

    __tablename__ = "registry_immutable_tags"
    __table_args__ = (UniqueConstraint("repository", "pattern"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repository: Mapped[str] = mapped_column(String(255))
    pattern: Mapped[str] = mapped_column(String(128))
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AnonymousPullPrefix(Base):
    __tablename__ = "registry_anonymous_prefixes"

    prefix: Mapped[str] = mapped_column(String(255), primary_key=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Upstream(Base):
    """A pull-through cache: repositories under ``prefix`` mirror the registry at ``url``."""

    __tablename__ = "registry_upstreams"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prefix: Mapped[str] = mapped_column(String(255), unique=True)
    url: Mapped[str] = mapped_column(String(2000))
    username: Mapped[str | None] = mapped_column(String(255), nullable=True)
    password: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class RegistrySetting(Base):
    """Server-wide registry values shared by every server process (e.g. the token signing key)."""

    __tablename__ = "registry_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class AppBinding(Base):
    """``apps/<app>`` belongs to the source repository whose CI first pushed it: another repository's
    CI declaring the same image is refused, so no repository can ship images as another app."""

    __tablename__ = "registry_app_bindings"

    repository: Mapped[str] = mapped_column(String(255), primary_key=True)
    source_repo: Mapped[str] = mapped_column(String(100))
    bound_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
