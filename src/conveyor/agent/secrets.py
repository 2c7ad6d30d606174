"""Application secrets in a revision: SOPS documents decrypted in memory, before anything is applied.

A revision may hold Secrets as SOPS documents (``sops.py``) encrypted to this cluster's age key. They
are decrypted here, after the build and before the signature check and the whole-revision dry run,
so an encrypted Secret is validated, applied with server-side apply, pruned and drift-corrected like
any other object. If any document does not open (another cluster's key, a changed document, no key
installed) the whole revision is refused and nothing of it is applied; the refusal names each Secret,
never a value. Plain values exist only in the reconciler's memory and the API server: nothing here
logs, stores or reports them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conveyor.agent import sops

CHECKSUM_ANNOTATION = "conveyor.dev/secret-checksum"


class DecryptionFailed(Exception):
    """One or more SOPS documents of the revision could not be decrypted: (label, reason) per document."""

    def __init__(self, failures: list[tuple[str, str]]) -> None:
        self.failures = failures
        super().__init__("; ".join(f"{label}: {reason}" for label, reason in failures))


def label(doc: dict[str, Any]) -> str:
    meta = doc.get("metadata") or {}
    ns = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{doc.get('kind', '?')} {ns}{meta.get('name', '?')}"


def decrypt_objects(objects: list[dict[str, Any]], load_identities: Callable[[], list[str]]) -> list[dict[str, Any]]:
    """The revision's objects with each SOPS document replaced by its plain object.

    ``load_identities`` is called once, and only when the revision holds an encrypted document, so a
    cluster without secrets needs no key.
    """
    if not any(sops.is_sops(o) for o in objects):
        return objects
    identities = load_identities()
    out: list[dict[str, Any]] = []
    failures: list[tuple[str, str]] = []
    for obj in objects:
        if not sops.is_sops(obj):
            out.append(obj)
            continue
        if obj.get("kind") != "Secret":
            failures.append((label(obj), "only Secrets may be encrypted"))
            continue
        if not identities:
            failures.append((label(obj), "this cluster has no age key (conveyor agent key install)"))
            continue
        try:
            out.append(sops.decrypt(obj, identities))
        except sops.SopsError as exc:
            failures.append((label(obj), str(exc)))
    if failures:
        raise DecryptionFailed(failures)
    return out
