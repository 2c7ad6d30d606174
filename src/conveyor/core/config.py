"""Server settings, read from the command line and CONVEYOR_* environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DATA_DIR = Path(os.environ.get("CONVEYOR_DATA_DIR", "~/.local/share/conveyor")).expanduser()


@dataclass
class Settings:
    data_dir: Path = DEFAULT_DATA_DIR
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
        s = cls()
        env = os.environ
        if "CONVEYOR_DATA_DIR" in env:
            s.data_dir = Path(env["CONVEYOR_DATA_DIR"]).expanduser()
        if "CONVEYOR_DATABASE_URL" in env:
            s.database_url = env["CONVEYOR_DATABASE_URL"]
        if env.get("CONVEYOR_ANONYMOUS_READ", "").lower() in ("1", "true", "yes"):
            s.anonymous_read = True
        if "CONVEYOR_PUBLIC_URL" in env:
            s.public_url = env["CONVEYOR_PUBLIC_URL"]
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
