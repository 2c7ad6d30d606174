"""The registry's shared state: database, blob store, upload sessions, token key, policy caches."""

from __future__ import annotations

import hashlib
import logging
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, select
from sqlalchemy.orm import Session

from conveyor.core import Database, Principal, Settings
from conveyor.core.identities import CACHE_SECONDS, auth_epoch, token_problem, token_row, user_active
from conveyor.registry.models import AnonymousPullPrefix, Upstream
from conveyor.registry.repos import in_transaction
from conveyor.registry.storage import BlobStore, registry_root
from conveyor.registry.tokens import load_or_create_key
from conveyor.registry.uploads import Uploads

log = logging.getLogger(__name__)

POLICY_TTL = 5.0
# Successful Basic / API-token authentications are remembered briefly, so a client that sends
# credentials on every request costs neither an argon2 check nor a query each time. A revocation,
# disabling or role change in this process empties the cache at once (``auth_epoch``); one made by
# another server is seen within this many seconds.
AUTH_CACHE_TTL = CACHE_SECONDS


@dataclass(frozen=True)
class UpstreamConfig:
    prefix: str
    url: str
    username: str | None
    password: str | None


def upstream_for(upstreams: list[UpstreamConfig], name: str) -> UpstreamConfig | None:
    for u in upstreams:
        if name.startswith(u.prefix + "/"):
            return u
    return None


class _TTLCache:
    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._value: object = None
        self._at = 0.0

    def get(self) -> object:
        with self._lock:
            if self._value is not None and time.monotonic() - self._at < self.ttl:
                return self._value
            return None

    def put(self, value: object) -> None:
        with self._lock:
            self._value, self._at = value, time.monotonic()

    def clear(self) -> None:
        with self._lock:
            self._value = None


class Registry:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.root = registry_root(settings)
        self.store = BlobStore(self.root)
        self.uploads = Uploads(self.store.uploads_dir)
        self._key: bytes | None = None
        self._anon = _TTLCache(POLICY_TTL)
        self._upstreams = _TTLCache(POLICY_TTL)
        self._auth_lock = threading.Lock()
        self._auth_cache: dict[str, tuple[float, int, Principal]] = {}
        self._alive: dict[tuple[str, int], tuple[float, int, bool]] = {}
        from urllib.parse import urlsplit

        from conveyor.registry.lineage import set_local_hosts

        netloc = urlsplit(settings.base_url).netloc
        port = netloc.rpartition(":")[2] if ":" in netloc else ""
        set_local_hosts({netloc, *(f"{h}:{port}" for h in ("127.0.0.1", "localhost") if port)})
        self.read_engine: Engine = db.read_engine

    @property
    def inline_reads(self) -> bool:
        """Lookups on the local SQLite file are short and never wait for writers (WAL), so the
        event loop runs them itself instead of paying a thread hand-off per request."""
        return self.db.separate_reader

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A plain connection for single-statement lookups (see ``lookups``)."""
        with self.read_engine.connect() as conn:
            yield conn

    @contextmanager
    def reads(self) -> Iterator[Session]:
        """A session for lookups (``Database.reads``): pulls never queue behind pushes."""
        with self.db.reads() as s:
            yield s

    def start(self) -> None:
        self.store.ensure()
        # Temporary files belong to requests that died with the previous process.
        for leftover in self.store.tmp_dir.iterdir():
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
        self._key = self._load_key()

    def _load_key(self) -> bytes:
        # Several servers may start at once against one PostgreSQL: the loser of the insert retries.
        return in_transaction(self.db, load_or_create_key)

    @property
    def key(self) -> bytes:
        if self._key is None:
            self._key = self._load_key()
        return self._key

    # -- policy caches ----------------------------------------------------------------------

    def anonymous_prefixes(self) -> list[str]:
        cached = self._anon.get()
        if isinstance(cached, list):
            return cached
        with self.reads() as s:
            prefixes = list(s.execute(select(AnonymousPullPrefix.prefix)).scalars())
        self._anon.put(prefixes)
        return prefixes

    def upstreams(self) -> list[UpstreamConfig]:
        cached = self._upstreams.get()
        if isinstance(cached, list):
            return cached
        with self.reads() as s:
            ups = [
                UpstreamConfig(prefix=u.prefix, url=u.url, username=u.username, password=u.password)
                for u in s.execute(select(Upstream)).scalars()
            ]
        self._upstreams.put(ups)
        return ups

    def cached_upstreams(self) -> list[UpstreamConfig] | None:
        cached = self._upstreams.get()
        return cached if isinstance(cached, list) else None

    def invalidate_policies(self) -> None:
        self._anon.clear()
        self._upstreams.clear()

    # -- authentication cache ---------------------------------------------------------------

    def cached_principal(self, authorization: str) -> Principal | None:
        key = hashlib.sha256(authorization.encode()).hexdigest()
        with self._auth_lock:
            hit = self._auth_cache.get(key)
            if hit and hit[1] == auth_epoch() and time.monotonic() - hit[0] < AUTH_CACHE_TTL:
                return hit[2]
        return None

    def remember_principal(self, authorization: str, principal: Principal) -> None:
        key = hashlib.sha256(authorization.encode()).hexdigest()
        now = time.monotonic()
        with self._auth_lock:
            if len(self._auth_cache) > 1000:
                self._auth_cache = {k: v for k, v in self._auth_cache.items() if now - v[0] < AUTH_CACHE_TTL}
            self._auth_cache[key] = (now, auth_epoch(), principal)

    def _alive_key(self, principal: Principal) -> tuple[str, int]:
        return ("token", principal.token_id) if principal.token_id is not None else ("user", principal.user_id or 0)

    def validity_cached(self, principal: Principal) -> bool:
        if principal.anonymous:
            return True
        now, epoch = time.monotonic(), auth_epoch()
        with self._auth_lock:
            hit = self._alive.get(self._alive_key(principal))
            return bool(hit and hit[1] == epoch and now - hit[0] < AUTH_CACHE_TTL)

    def still_valid(self, principal: Principal) -> bool:
        """Whether the token (or the user) behind a registry bearer token still works: revocation
        and disabling reach already issued registry tokens too, within ``AUTH_CACHE_TTL`` at most."""
        if principal.anonymous:
            return True  # an anonymous reader's token names nobody whose access could be withdrawn
        key = self._alive_key(principal)
        now, epoch = time.monotonic(), auth_epoch()
        with self._auth_lock:
            hit = self._alive.get(key)
            if hit and hit[1] == epoch and now - hit[0] < AUTH_CACHE_TTL:
                return hit[2]
        with self.db.session() as s:
            alive = token_problem(token_row(s, key[1])) is None if key[0] == "token" else user_active(s, key[1])
        with self._auth_lock:
            if len(self._alive) > 1000:
                self._alive.clear()
            self._alive[key] = (now, epoch, alive)
        return alive
