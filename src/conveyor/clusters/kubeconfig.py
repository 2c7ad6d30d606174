"""Kubeconfig files: written for local clusters, read for registered (external) ones.

Written kubeconfigs embed the CA and client certificate (``*-data``), so the file alone is enough
for kubectl. Reading resolves one context to what an HTTP client needs: server URL, CA bundle and
client credentials (certificate files or a bearer token); exec and auth-provider plugins are not
run here.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from conveyor.core.errors import InvalidInput


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def render(
    *, cluster: str, server: str, ca: Path, user: str, cert: Path, key: Path, embed: bool = True
) -> dict[str, Any]:
    cluster_entry: dict[str, Any] = {"server": server}
    user_entry: dict[str, Any] = {}
    if embed:
        cluster_entry["certificate-authority-data"] = _b64(ca)
        user_entry["client-certificate-data"] = _b64(cert)
        user_entry["client-key-data"] = _b64(key)
    else:
        cluster_entry["certificate-authority"] = str(ca)
        user_entry["client-certificate"] = str(cert)
        user_entry["client-key"] = str(key)
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": cluster_entry}],
        "users": [{"name": user, "user": user_entry}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": user}}],
        "current-context": cluster,
        "preferences": {},
    }


def write(path: Path, config: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        yaml.safe_dump(config, fh, default_flow_style=False)
    tmp.replace(path)


@dataclass
class Credentials:
    server: str
    ca_file: Path | None = None
    verify: bool = True
    cert_file: Path | None = None
    key_file: Path | None = None
    token: str | None = None
    context: str = ""


def _named(items: list[dict[str, Any]] | None, name: str, what: str, source: Path) -> dict[str, Any]:
    for item in items or []:
        if item.get("name") == name:
            return dict(item.get(what) or {})
    raise InvalidInput(f"{source}: no {what} named {name!r}", rule="kubeconfig")


def _materialize(entry: dict[str, Any], key: str, dest: Path, base: Path) -> Path | None:
    """A file path for ``key`` (path form) or ``key-data`` (inline base64 form), or None."""
    if entry.get(f"{key}-data"):
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(base64.b64decode(entry[f"{key}-data"]))
        return dest
    if entry.get(key):
        p = Path(entry[key]).expanduser()
        return p if p.is_absolute() else base / p
    return None


def load_config(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInput(f"cannot read kubeconfig {path}: {exc}", rule="kubeconfig") from exc
    if not isinstance(data, dict) or not data.get("clusters"):
        raise InvalidInput(f"{path} is not a kubeconfig (no clusters)", rule="kubeconfig")
    return data


def credentials(path: Path, context: str | None, secrets_dir: Path) -> Credentials:
    """Resolve ``context`` (default: current-context) of a kubeconfig; inline data lands in secrets_dir."""
    cfg = load_config(path)
    ctx_name = context or cfg.get("current-context")
    if not ctx_name:
        raise InvalidInput(f"{path} has no current-context; pass --context", rule="kubeconfig")
    ctx = _named(cfg.get("contexts"), ctx_name, "context", path)
    cl = _named(cfg.get("clusters"), ctx.get("cluster", ""), "cluster", path)
    user = _named(cfg.get("users"), ctx.get("user", ""), "user", path) if ctx.get("user") else {}
    if "server" not in cl:
        raise InvalidInput(f"{path}: cluster of context {ctx_name!r} has no server", rule="kubeconfig")
    base = path.parent
    token = user.get("token")
    if not token and user.get("tokenFile"):
        token = Path(user["tokenFile"]).read_text().strip()
    return Credentials(
        server=str(cl["server"]).rstrip("/"),
        ca_file=_materialize(cl, "certificate-authority", secrets_dir / "ca.crt", base),
        verify=not cl.get("insecure-skip-tls-verify", False),
        cert_file=_materialize(user, "client-certificate", secrets_dir / "client.crt", base),
        key_file=_materialize(user, "client-key", secrets_dir / "client.key", base),
        token=token,
        context=ctx_name,
    )
