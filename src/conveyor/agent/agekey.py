"""The cluster's age key: the private half lives only in the cluster, in a Secret of the agent's namespace.

``install`` is run where the agent is installed (``conveyor agent key install``, and ``conveyor cluster
create/add/register --agent conveyor`` with the cluster's kubeconfig): it creates the Secret with a fresh
key pair if there is none (create-only, so a second install never replaces a key that documents are
encrypted to) and returns the *public* key, which is all the server is told. ``rotate`` puts a new key
first and keeps the earlier ones, so documents encrypted to the old key still open until the server has
re-encrypted them. The agent reads the identities at each revision (``identities``) and keeps them in
memory only for that revision.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from conveyor.agent import sops
from conveyor.agent.inventory import ensure_namespace
from conveyor.agent.kube import Kube, connect
from conveyor.agent.objects import ObjectId

KEY_SECRET = "conveyor-age-key"
KEY_FIELD = "keys.txt"  # age's identity file format: one AGE-SECRET-KEY-1... per line, newest first


def _secret(namespace: str, identities: list[str]) -> dict[str, Any]:
    text = "".join(f"{i}\n" for i in identities)
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": KEY_SECRET, "namespace": namespace,
                     "labels": {"app.kubernetes.io/managed-by": "conveyor"},
                     "annotations": {"conveyor.dev/age-recipients": ",".join(sops.recipient_of(i) for i in identities),
                                     "conveyor.dev/prune": "disabled"}},
        "data": {KEY_FIELD: base64.b64encode(text.encode()).decode()},
    }


def identities(kube: Kube, namespace: str) -> list[str]:
    """The cluster's age identities, newest first; empty when no key was installed."""
    found = kube.get(ObjectId("v1", "Secret", namespace, KEY_SECRET))
    if found is None:
        return []
    raw = base64.b64decode((found.get("data") or {}).get(KEY_FIELD, "")).decode()
    return [line.strip() for line in raw.splitlines() if line.strip().startswith("AGE-SECRET-KEY-")]


def install(kube: Kube, namespace: str) -> str:
    """Create the cluster's key unless it has one; the public key (age1...) of the newest identity."""
    ensure_namespace(kube, namespace)
    private, public = sops.new_identity()
    if kube.create(_secret(namespace, [private])):
        return public
    existing = identities(kube, namespace)
    if not existing:
        raise RuntimeError(f"secret {namespace}/{KEY_SECRET} exists but holds no age identity")
    return sops.recipient_of(existing[0])


def rotate(kube: Kube, namespace: str, keep: int = 2) -> str:
    """A new newest identity; the previous ones (up to ``keep`` in all) still decrypt."""
    ensure_namespace(kube, namespace)
    private, public = sops.new_identity()
    kube.apply(_secret(namespace, [private, *identities(kube, namespace)][:keep]))
    return public


def install_with(kubeconfig: Path | None, context: str | None = None, namespace: str = "conveyor-system") -> str:
    """``install`` through a kubeconfig (for the CLI commands that install an agent)."""
    kube = Kube(connect(kubeconfig, context))
    try:
        return install(kube, namespace)
    finally:
        kube.close()


def rotate_with(kubeconfig: Path | None, context: str | None = None, namespace: str = "conveyor-system") -> str:
    kube = Kube(connect(kubeconfig, context))
    try:
        return rotate(kube, namespace)
    finally:
        kube.close()
