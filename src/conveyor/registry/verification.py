"""The agent's signature check run inside the server, for the live-diff check of a GitOps PR.

Same code as the agent's (``conveyor.agent.verify``), with the registry read in process (no
credentials needed) and the trusted keys read from the database, so the PR shows, before the merge,
what the agent will decide after it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from conveyor.agent import imagesig
from conveyor.agent.verify import ImageResult, Verifier
from conveyor.core import Database, Settings
from conveyor.registry import lineage, manifests
from conveyor.registry.errors import RegistryError
from conveyor.registry.models import SigningKey
from conveyor.registry.storage import BlobStore, registry_root


class LocalSource:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db, self.store = db, BlobStore(registry_root(settings))

    def manifest(self, host: str, repository: str, reference: str) -> tuple[bytes, str] | None:
        with self.db.session() as s:
            try:
                found = manifests.lookup(s, repository, reference, with_content=True)
            except RegistryError:
                return None
        return found.content or b"", found.digest

    def blob(self, host: str, repository: str, digest: str, limit: int) -> bytes | None:
        from conveyor.registry.blobs import blob_size

        with self.db.reads() as s:  # lookups only: the live diff calls this inside delivery's own write turn
            size = blob_size(s, repository, digest)
        if size is None or size > limit:
            return None
        try:
            return self.store.path(digest).read_bytes()
        except FileNotFoundError:
            return None


class DatabaseKeys:
    def __init__(self, db: Database) -> None:
        self.db = db

    def keys(self, refresh: bool = False) -> list[imagesig.TrustedKey]:
        # reads(): delivery's live diff verifies images while its step holds SQLite's write turn; a
        # session here waited 30 s for that turn (its own thread's) and failed: every GitOps PR
        # opened 30 s late and stalled every other writer meanwhile.
        with self.db.reads() as s:
            return [imagesig.TrustedKey(k.key_id, k.public_pem.encode(), k.state)
                    for k in s.execute(select(SigningKey).where(SigningKey.state.in_(("active", "retired"))))
                    .scalars()]


def verify_images(db: Database, settings: Settings, objects: list[dict[str, Any]]) -> list[ImageResult]:
    """What the agent's default policy would say about the images of ``objects``."""
    hosts = set(lineage._local_hosts) or {settings.base_url.split("://", 1)[-1].split("/", 1)[0]}
    return Verifier(LocalSource(db, settings), DatabaseKeys(db), hosts).check(objects)
