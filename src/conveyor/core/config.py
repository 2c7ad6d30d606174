"""Server settings, read from the command line and CONVEYOR_* environment variables.

``Environment`` is the one typed view of the CONVEYOR_* variables (pydantic-settings): a variable
is named, typed and defaulted there once, and a malformed value fails with the variable's name
instead of deep inside whichever module happened to read it. ``Settings`` is what a server runs
with: ``Settings.from_env`` takes the environment's values and the command line's overrides;
constructing ``Settings`` directly (tests, the demo) reads only CONVEYOR_DATA_DIR, for the default
data dir. Values are read when asked for, never at import time.

The cache directory (built Kubernetes and Flux binaries, base images, htmx) is
``CONVEYOR_CACHE_DIR``; ``CONVEYOR_CACHE``, its older name, still works when the new one is unset
and logs a deprecation warning once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger("conveyor.config")

DEFAULT_CACHE_DIR = "~/.cache/conveyor"
CACHE_ENV, DEPRECATED_CACHE_ENV = "CONVEYOR_CACHE_DIR", "CONVEYOR_CACHE"
_warned: set[str] = set()


class Environment(BaseSettings):
    """The CONVEYOR_* variables the server and the CLI read (empty counts as unset)."""

    model_config = SettingsConfigDict(env_prefix="CONVEYOR_", env_ignore_empty=True, extra="ignore")

    data_dir: Path = Path("~/.local/share/conveyor")
    database_url: str | None = None
    anonymous_read: bool = False
    public_url: str | None = None
    cache_dir: Path | None = None
    cache: Path | None = Field(default=None, description="deprecated name of cache_dir")
    htmx_js: Path | None = None
    debian_mirror: str | None = None
    server: str | None = None  # the CLI's server URL
    token: str | None = Field(default=None, repr=False)  # the CLI's API token


def environment() -> Environment:
    """The variables as they are now; a malformed one raises ValueError naming it."""
    try:
        return Environment()
    except ValidationError as exc:
        bad = ", ".join(f"CONVEYOR_{str(e['loc'][0]).upper()}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"bad environment variable ({bad})") from None


def default_data_dir() -> Path:
    return environment().data_dir.expanduser()


def cache_dir() -> Path:
    """Where everything built or downloaded once per machine lives (``~/.cache/conveyor``)."""
    env = environment()
    if env.cache_dir is not None:
        return env.cache_dir.expanduser()
    if env.cache is not None:
        if DEPRECATED_CACHE_ENV not in _warned:
            _warned.add(DEPRECATED_CACHE_ENV)
            log.warning("%s is deprecated: set %s instead", DEPRECATED_CACHE_ENV, CACHE_ENV)
        return env.cache.expanduser()
    return Path(DEFAULT_CACHE_DIR).expanduser()


@dataclass
class Settings:
    data_dir: Path = field(default_factory=default_data_dir)
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    anonymous_read: bool = False
    # Public base URL used in links (webhook payloads, status target_url); defaults to host:port.
    public_url: str | None = None
    background_workers: bool = True
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        env = environment()
        s = cls(data_dir=env.data_dir, database_url=env.database_url, anonymous_read=env.anonymous_read,
                public_url=env.public_url)
        for key, value in overrides.items():
            if value is not None:
                setattr(s, key, value)
        s.data_dir = Path(s.data_dir).expanduser().resolve()
        return s

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'conveyor.db'}"

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    @property
    def local_url(self) -> str:
        """How processes on this machine (the server's own runner) reach the server."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        return f"http://{host}:{self.port}"

    @property
    def repos_dir(self) -> Path:
        return self.data_dir / "repos"

    @property
    def admin_token_path(self) -> Path:
        return self.data_dir / "admin.token"
