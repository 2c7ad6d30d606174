"""Flux's events, as they arrive, and what each one says about a deployment.

Two senders post the same JSON (``fluxcd/pkg/apis/event`` ``Event``: ``involvedObject``,
``severity``, ``reason``, ``message``, ``metadata``, ``reportingController``):

- notification-controller's ``generic-hmac`` Provider, which signs the body
  (``X-Signature: sha256=<hex HMAC>``, the hash may also be sha224/384/512) and has already
  cleaned the metadata: keys lose their ``<object's API group>/`` and ``event.toolkit.fluxcd.io/``
  prefixes, and the Alert's ``eventMetadata`` is merged in (``revision``, ``cluster``);
- the controllers themselves, to the URL of their ``--events-addr`` flag, unsigned and with the
  prefixes still on (``kustomize.toolkit.fluxcd.io/revision``). Annotations of the object whose
  key starts with ``event.toolkit.fluxcd.io/`` are copied into the metadata by both (RFC 0008).

``normalize`` makes both look like the first. What kustomize-controller v1.9.6 sends, read from
its source: after applying, an info event whose reason is the Ready condition's (``Progressing``)
with the change set as message; when every check passed, ``ReconciliationSucceeded`` with
"Reconciliation finished in ..." (re-sent every interval while nothing changes); on any failure an
``error`` event with the error as message. ``revision`` is ``<branch>@sha1:<sha>``
(``<branch>/<sha>`` before Flux 2.0).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from conveyor.core.errors import InvalidInput, Unauthorized

EVENT_GROUP = "event.toolkit.fluxcd.io"
KUSTOMIZATION = "Kustomization"
MAX_BODY = 256 * 1024  # the controllers cap messages at 39,000 characters
_HASHES = {"sha224": hashlib.sha224, "sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}
_REVISION = re.compile(r"^(?:(?P<ref>.+?)(?:@|/))?(?:sha1:)?(?P<sha>[0-9a-f]{40})$")


class DeployState(StrEnum):
    """The commit status a Kustomization event stands for."""

    PENDING = "pending"
    SUCCESS = "success"
    FAILURE = "failure"


# reason of an info event -> the state it stands for; any other info event changes nothing
INFO_REASONS: dict[str, DeployState] = {
    "Progressing": DeployState.PENDING,
    "DependencyNotReady": DeployState.PENDING,
    "ReconciliationSucceeded": DeployState.SUCCESS,
}


@dataclass(frozen=True)
class FluxEvent:
    kind: str
    name: str
    namespace: str
    api_version: str
    severity: str
    reason: str
    message: str
    controller: str
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def revision(self) -> str:
        return self.metadata.get("revision", "")

    @property
    def sync(self) -> str:
        """The sync (the status context's last part): an annotation, else the object's name."""
        return self.metadata.get("sync") or self.name


def check_signature(header: str | None, body: bytes, key: str) -> None:
    """``X-Signature: <hash>=<hex>`` as notification-controller's generic-hmac Provider sends it."""
    if not header:
        raise Unauthorized("missing X-Signature (generic-hmac) or agent credentials (--events-addr)",
                           rule="flux.credentials-required")
    algo, _, given = header.strip().partition("=")
    digest = _HASHES.get(algo.lower())
    if digest is None or not given:
        raise Unauthorized(f"X-Signature must be <sha224|sha256|sha384|sha512>=<hex>, not '{header[:40]}'",
                           rule="flux.signature-invalid")
    expected = hmac.new(key.encode(), body, digest).hexdigest()
    if not hmac.compare_digest(expected, given.strip().lower()):
        raise Unauthorized("X-Signature does not match the body: wrong HMAC key, or the body was altered",
                           rule="flux.signature-invalid")


def _group(api_version: str) -> str:
    return api_version.split("/", 1)[0] if "/" in api_version else ""


def normalize(metadata: dict[str, Any], api_version: str) -> dict[str, str]:
    """Metadata keys without their group prefixes, as notification-controller forwards them; where
    both forms of a key exist, the object's own group wins (RFC 0008's precedence)."""
    group = _group(api_version)
    out: dict[str, str] = {}
    own: dict[str, str] = {}
    for key, value in metadata.items():
        text = str(value)
        if group and key.startswith(group + "/"):
            own[key[len(group) + 1:]] = text
        elif key.startswith(EVENT_GROUP + "/"):
            out[key[len(EVENT_GROUP) + 1:]] = text
        else:
            out.setdefault(key, text)
    out.update(own)
    return out


def parse(body: bytes) -> FluxEvent:
    try:
        data = json.loads(body)
    except ValueError:
        raise InvalidInput("the body is not JSON (a Flux event was expected)", rule="flux.event") from None
    if not isinstance(data, dict) or not isinstance(data.get("involvedObject"), dict):
        raise InvalidInput("a Flux event has an 'involvedObject'", rule="flux.event")
    obj = data["involvedObject"]
    missing = [k for k in ("kind", "name") if not isinstance(obj.get(k), str) or not obj.get(k)]
    missing += [k for k in ("severity", "reason") if not isinstance(data.get(k), str) or not data.get(k)]
    if missing:
        raise InvalidInput(f"the Flux event lacks {', '.join(missing)}", rule="flux.event")
    meta = data.get("metadata")
    meta = {} if meta is None else meta
    if not isinstance(meta, dict):
        raise InvalidInput("the Flux event's metadata must be an object", rule="flux.event")
    api_version = str(obj.get("apiVersion") or "")
    return FluxEvent(kind=obj["kind"], name=obj["name"], namespace=str(obj.get("namespace") or ""),
                     api_version=api_version, severity=data["severity"], reason=data["reason"],
                     message=str(data.get("message") or ""), controller=str(data.get("reportingController") or ""),
                     metadata=normalize(meta, api_version))


def parse_revision(revision: str) -> tuple[str, str] | None:
    """``env/dev@sha1:<sha>`` (or ``env/dev/<sha>``, ``sha1:<sha>``) -> (branch, sha); None otherwise."""
    m = _REVISION.match(revision.strip())
    if m is None:
        return None
    return (m.group("ref") or "").removeprefix("refs/heads/"), m.group("sha")


def state_of(event: FluxEvent) -> DeployState | None:
    """The status a Kustomization event stands for; None for events that say nothing about one."""
    if event.kind != KUSTOMIZATION:
        return None
    if event.severity == "error":
        return DeployState.FAILURE
    return INFO_REASONS.get(event.reason)


# (the context's current state on this commit, the event's state) -> post it?
# Repeats are dropped (Flux re-sends success every interval), and a re-apply of a revision that
# already has a verdict (drift correction, a retry) does not turn it back to pending.
TRANSITIONS: dict[tuple[DeployState | None, DeployState], bool] = {
    (None, DeployState.PENDING): True,
    (None, DeployState.SUCCESS): True,
    (None, DeployState.FAILURE): True,
    (DeployState.PENDING, DeployState.PENDING): False,
    (DeployState.PENDING, DeployState.SUCCESS): True,
    (DeployState.PENDING, DeployState.FAILURE): True,
    (DeployState.SUCCESS, DeployState.PENDING): False,
    (DeployState.SUCCESS, DeployState.SUCCESS): False,
    (DeployState.SUCCESS, DeployState.FAILURE): True,
    (DeployState.FAILURE, DeployState.PENDING): False,
    (DeployState.FAILURE, DeployState.SUCCESS): True,
    (DeployState.FAILURE, DeployState.FAILURE): False,
}


def description(event: FluxEvent, state: DeployState) -> str:
    prefix = {DeployState.PENDING: "Flux is applying", DeployState.SUCCESS: "Flux applied it; health checks passed",
              DeployState.FAILURE: f"Flux failed ({event.reason})"}[state]
    text = " ".join(event.message.split())
    if state != DeployState.FAILURE:
        text = event.message.strip().splitlines()[0] if event.message.strip() else ""
    return f"{prefix}: {text}"[:900] if text else prefix
