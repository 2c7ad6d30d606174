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


class SigningKey(Base):
    """The installation's image signing keys (ECDSA P-256). One is active (CI signs with it); retired
    keys stay trusted, so images they signed keep verifying; revoked ones are trusted no more. The
    private key is stored encrypted (``signing.py``), like pipeline secrets."""

    __tablename__ = "registry_signing_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_id: Mapped[str] = mapped_column(String(80), unique=True)
    public_pem: Mapped[str] = mapped_column(Text)
    private_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    state: Mapped[str] = mapped_column(String(16), default="active")  # KeyState
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Lineage(Base):
    """What an image was built on: its ``org.opencontainers.image.base.*`` annotations, recorded when
    the manifest is pushed. ``base_repository``/``base_tag`` name the base in this registry (None when
    the base came from elsewhere)."""

    __tablename__ = "registry_lineage"
    __table_args__ = (
        UniqueConstraint("repository", "digest"),
        Index("ix_registry_lineage_base", "base_repository", "base_tag"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repository: Mapped[str] = mapped_column(String(255))
    digest: Mapped[str] = mapped_column(String(160))
    base_name: Mapped[str] = mapped_column(String(500))
    base_digest: Mapped[str] = mapped_column(String(160))
    base_repository: Mapped[str | None] = mapped_column(String(255), nullable=True)
    base_tag: Mapped[str | None] = mapped_column(String(128), nullable=True)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class TagHistory(Base):
    """Where a tag pointed before it moved: a refreshed cache keeps the old digest pullable (GC keeps
    the newest ``KEEP_PREVIOUS`` of each tag) and lineage can say since when a base is outdated."""

    __tablename__ = "registry_tag_history"
    __table_args__ = (Index("ix_registry_tag_history_tag", "repository", "tag"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repository: Mapped[str] = mapped_column(String(255))
    tag: Mapped[str] = mapped_column(String(128))
    digest: Mapped[str] = mapped_column(String(160))  # the digest it pointed at until replaced_at
    replaced_by: Mapped[str] = mapped_column(String(160))
    replaced_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    actor: Mapped[str] = mapped_column(String(64))


class RefreshPolicy(Base):
    """How a cached third-party repository stays current: every ``interval_seconds`` the tags matching
    ``tags`` are resolved upstream again (a pull-through prefix's upstream, or an import's source) and
    moved when the upstream's digest changed. Failures are kept here (and raised as events)."""

    __tablename__ = "registry_refresh_policies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # RefreshKind: upstream | import
    target: Mapped[str] = mapped_column(String(255), unique=True)  # the prefix, or the import's repository
    source: Mapped[str | None] = mapped_column(String(2000), nullable=True)  # import: docker://HOST/REPO
    username: Mapped[str | None] = mapped_column(String(255), nullable=True)
    password: Mapped[str | None] = mapped_column(Text, nullable=True)
    insecure: Mapped[bool] = mapped_column(default=False)
    interval_seconds: Mapped[int] = mapped_column(Integer)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_ok_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
