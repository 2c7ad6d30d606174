"""The agent's configuration file (agent.yaml): one cluster, a list of syncs."""

from __future__ import annotations

import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, field_validator, model_validator

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,50}[a-z0-9])?$")


def parse_duration(value: Any) -> float:
    """Seconds from 30, "30s", "1m", "1.5h", "250ms"."""
    if isinstance(value, int | float):
        return float(value)
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 1m, 2h)")
    return float(m.group(1)) * _UNITS[m.group(2)]


class ObjectRef(BaseModel):
    api_version: str = Field(alias="apiVersion")
    kind: str
    name: str
    namespace: str | None = None


class ClusterConfig(BaseModel):
    name: str
    kubeconfig: Path | None = None  # unset: in-cluster service account, then $KUBECONFIG
    context: str | None = None


class ForgeConfig(BaseModel):
    """Where commit statuses go. The token comes from the file, then the env var, then the literal."""

    server: str
    token: str | None = None
    token_file: Path | None = None
    token_env: str | None = "CONVEYOR_TOKEN"

    def resolve_token(self) -> str | None:
        if self.token_file:
            return self.token_file.read_text().strip()
        if self.token_env and os.environ.get(self.token_env):
            return os.environ[self.token_env]
        return self.token


class Policy(StrEnum):
    """What a failed image signature does to a revision."""

    ENFORCE = "enforce"  # refuse the whole revision, naming the image
    WARN = "warn"  # apply it, record the failure
    OFF = "off"  # do not check


class SignaturesConfig(BaseModel):
    """Image signature verification (``verify.py``): which registries' ``apps/`` images are Conveyor-built
    (default: the forge's host) and, optionally, pinned public keys instead of the forge's key list."""

    registries: list[str] = Field(default_factory=list)
    keys_file: Path | None = None
    insecure_registries: list[str] = Field(default_factory=list)  # plain HTTP (the forge's own when http://)
    # Where to reach a registry named otherwise in image references: an agent in a local cluster reads
    # 127.0.0.1:PORT/apps/... (the node's name for Conveyor's registry) from host.conveyor.internal:PORT.
    endpoints: dict[str, str] = Field(default_factory=dict)


class SyncConfig(BaseModel):
    name: str
    url: str
    branch: str = "main"
    path: str = "."
    interval: float = 60.0
    retry_interval: float | None = None
    prune: bool = True
    wait: bool = False
    health_checks: list[ObjectRef] = Field(default_factory=list)
    timeout: float = 300.0
    target_namespace: str | None = None
    # Create the namespaces the revision's objects live in when the revision does not define them
    # (Argo CD's CreateNamespace=true): an environment's first Secret arrives before the app that
    # brings its Namespace. Such namespaces are not in the inventory, so they are never pruned.
    create_namespaces: bool = False
    suspend: bool = False
    depends_on: list[str] = Field(default_factory=list)
    webhook_secret: str | None = None
    webhook_secret_env: str | None = None
    repo: str | None = None  # forge repository for statuses; default: derived from url (.../git/{repo}.git)
    verify: Policy = Policy.ENFORCE  # signatures of Conveyor-built images (verify.py)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("sync names are lowercase DNS labels (a-z, 0-9, -), at most 52 characters")
        return v

    @field_validator("interval", "retry_interval", "timeout", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        return None if v is None else parse_duration(v)

    @property
    def retry_seconds(self) -> float:
        return self.retry_interval if self.retry_interval is not None else self.interval

    def secret(self) -> str | None:
        if self.webhook_secret_env and os.environ.get(self.webhook_secret_env):
            return os.environ[self.webhook_secret_env]
        return self.webhook_secret

    def git_token(self, forge: ForgeConfig | None) -> str | None:
        """The forge token authenticates git too when the sync's URL is the forge's and carries none."""
        if forge is None or "@" in self.url.split("://", 1)[-1].split("/", 1)[0]:
            return None
        return forge.resolve_token() if self.url.startswith(forge.server.rstrip("/") + "/") else None

    def forge_repo(self) -> str | None:
        if self.repo:
            return self.repo
        m = re.search(r"/git/(.+?)(?:\.git)?/?$", self.url)
        return m.group(1) if m else None


class AgentConfig(BaseModel):
    cluster: ClusterConfig
    syncs: list[SyncConfig]
    forge: ForgeConfig | None = None
    listen: str = "127.0.0.1:9797"
    state_dir: Path = Path(os.environ.get("CONVEYOR_AGENT_STATE", "~/.local/state/conveyor-agent")).expanduser()
    inventory_namespace: str = "conveyor-system"
    public_url: str | None = None  # target_url of commit statuses; default http://{listen}/status
    signatures: SignaturesConfig = Field(default_factory=SignaturesConfig)

    @model_validator(mode="after")
    def _references(self) -> AgentConfig:
        names = [s.name for s in self.syncs]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"duplicate sync names: {sorted(dupes)}")
        for s in self.syncs:
            unknown = set(s.depends_on) - set(names)
            if unknown:
                raise ValueError(f"sync {s.name} depends on unknown syncs {sorted(unknown)}")
            if s.name in s.depends_on:
                raise ValueError(f"sync {s.name} depends on itself")
        return self

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host or "127.0.0.1", int(port)

    def conveyor_registries(self) -> tuple[set[str], set[str]]:
        """(registries whose apps/ images Conveyor builds, those spoken to over plain HTTP)."""
        regs, insecure = set(self.signatures.registries), set(self.signatures.insecure_registries)
        if self.forge is not None:
            scheme, _, rest = self.forge.server.partition("://")
            host = rest.split("/", 1)[0]
            if not self.signatures.registries:
                regs.add(host)
            if scheme == "http":
                insecure.add(host)
        return regs, insecure

    def sync(self, name: str) -> SyncConfig | None:
        return next((s for s in self.syncs if s.name == name), None)


def load(path: Path) -> AgentConfig:
    data = yaml.safe_load(path.read_text()) or {}
    cfg = AgentConfig.model_validate(data)
    base = path.parent
    if cfg.cluster.kubeconfig and not cfg.cluster.kubeconfig.is_absolute():
        cfg.cluster.kubeconfig = base / cfg.cluster.kubeconfig
    return cfg
