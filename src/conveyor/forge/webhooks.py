"""Webhooks: outbox events fanned out to subscribed URLs, signed, retried with backoff, logged."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from datetime import timedelta
from urllib.parse import urlparse

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from conveyor.core import Database, Event, InvalidInput, NotFound, Principal, record, utcnow
from conveyor.core.background import BackgroundLoop
from conveyor.core.leasing import claim_next, retry_delay
from conveyor.core.outbound import OutboundRefused, OutboundTransport, Policy, body_excerpt, status_summary
from conveyor.forge.models import Repository, Webhook, WebhookDelivery

log = logging.getLogger(__name__)

HOOK_EVENTS = ("push", "pull_request", "status")
SIGNATURE_HEADER = "X-Conveyor-Signature-256"
# The same signature under the header Flux's generic-hmac Receiver (and GitHub-style receivers) read.
GENERIC_SIGNATURE_HEADER = "X-Signature"
MAX_ATTEMPTS = 8
LEASE = timedelta(seconds=60)


def hook_event_of(topic: str) -> str | None:
    if topic == "push":
        return "push"
    if topic.startswith("pull_request."):
        return "pull_request"
    if topic == "status":
        return "status"
    return None


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def add_hook(
    session: Session, principal: Principal, repo: Repository, url: str, secret: str, events: list[str],
    policy: Policy,
) -> Webhook:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise InvalidInput(f"webhook URL must be http(s)://host/...: '{url}'", rule="hook.url")
    policy.check_url(url)  # refused now if it is refused at delivery anyway
    bad = [e for e in events if e not in HOOK_EVENTS]
    if bad or not events:
        raise InvalidInput(f"webhook events must be among {', '.join(HOOK_EVENTS)}", rule="hook.events")
    if len(secret) < 8:
        raise InvalidInput("webhook secret must have at least 8 characters", rule="hook.secret")
    hook = Webhook(repo_id=repo.id, url=url, secret=secret, events=sorted(set(events)), created_by=principal.name)
    session.add(hook)
    session.flush()
    record(
        session, actor=principal.name, action="hook.created", target=f"{repo.name}/hooks/{hook.id}",
        payload={"repo": repo.name, "url": url, "events": hook.events},
    )
    return hook


def delete_hook(session: Session, principal: Principal, repo: Repository, hook_id: int) -> None:
    hook = session.get(Webhook, hook_id)
    if hook is None or hook.repo_id != repo.id:
        raise NotFound(f"repository '{repo.name}' has no webhook {hook_id}")
    session.delete(hook)
    record(session, actor=principal.name, action="hook.deleted", target=f"{repo.name}/hooks/{hook_id}",
           payload={"repo": repo.name})


def enqueue_deliveries(session: Session, event: Event) -> None:
    """Outbox consumer: one delivery per webhook subscribed to this event's repository and kind."""
    kind = hook_event_of(event.topic)
    repo_name = event.payload.get("repo")
    if kind is None or not repo_name:
        return
    hooks = session.execute(
        select(Webhook).join(Repository).where(Repository.name == repo_name, Webhook.active.is_(True))
    ).scalars()
    for hook in hooks:
        if kind not in hook.events:
            continue
        payload = {"event": kind, "action": event.topic, "id": event.id, "at": event.at.isoformat(),
                   "actor": event.actor, **event.payload}
        session.add(WebhookDelivery(hook_id=hook.id, guid=uuid.uuid4().hex, event=kind, payload=payload))
    from conveyor.core.db import after_commit

    after_commit(session, _wake)


_wakeup = threading.Event()


def _wake() -> None:
    _wakeup.set()


class WebhookSender(BackgroundLoop):
    name = "webhooks"

    def __init__(self, db: Database, policy: Policy, poll_interval: float = 1.0, timeout: float = 10.0) -> None:
        super().__init__(poll_interval, _wakeup)
        self.db = db
        # Every delivery goes through the outbound policy (core/outbound.py); redirects are not
        # followed at all (a receiver answers 2xx or the delivery is retried).
        self.client = httpx.Client(timeout=timeout, follow_redirects=False, transport=OutboundTransport(policy))

    def close(self) -> None:
        self.client.close()

    def run_once(self) -> bool:
        return self.send_one()

    def _claim(self) -> tuple[int, str, str, str, bytes, str, int] | None:
        with self.db.session() as s:
            q = (select(WebhookDelivery)
                 .where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= utcnow())
                 .order_by(WebhookDelivery.id))
            d = claim_next(s, self.db, q)
            if d is None:
                return None
            hook = s.get(Webhook, d.hook_id)
            assert hook is not None
            s.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id == d.id)
                .values(attempts=d.attempts + 1, next_attempt_at=utcnow() + LEASE)
            )
            body = json.dumps(d.payload, sort_keys=True).encode()
            return d.id, d.guid, hook.url, hook.secret, body, d.event, d.attempts + 1

    def send_one(self) -> bool:
        claimed = self._claim()
        if claimed is None:
            return False
        did, guid, url, secret, body, event, attempts = claimed
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Conveyor-Hookshot/1",
            "X-Conveyor-Event": event,
            "X-Conveyor-Delivery": guid,
            SIGNATURE_HEADER: sign(secret, body),
            GENERIC_SIGNATURE_HEADER: sign(secret, body),
        }
        started = time.monotonic()
        code: int | None = None
        error: str | None = None
        excerpt: str | None = None
        try:
            resp = self.client.post(url, content=body, headers=headers)
            code = resp.status_code
            # The log shows code and reason; the body (maybe an internal page) only to admins.
            excerpt = body_excerpt(resp.content) or None
            if not 200 <= code < 300:
                error = status_summary(code)
        except OutboundRefused as exc:
            error = f"refused: {exc}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        elapsed = int((time.monotonic() - started) * 1000)
        with self.db.session() as s:
            d = s.get(WebhookDelivery, did)
            if d is None:
                return True
            d.last_status_code, d.last_error, d.duration_ms = code, error, elapsed
            d.last_response_excerpt = excerpt
            if error is None:
                d.status, d.delivered_at = "delivered", utcnow()
            elif attempts >= MAX_ATTEMPTS:
                d.status = "failed"
            else:
                d.next_attempt_at = utcnow() + retry_delay(attempts)
        return True


def list_deliveries(session: Session, repo: Repository, hook_id: int, limit: int = 50) -> list[WebhookDelivery]:
    hook = session.get(Webhook, hook_id)
    if hook is None or hook.repo_id != repo.id:
        raise NotFound(f"repository '{repo.name}' has no webhook {hook_id}")
    return list(
        session.execute(
            select(WebhookDelivery).where(WebhookDelivery.hook_id == hook_id)
            .order_by(WebhookDelivery.id.desc()).limit(limit)
        ).scalars()
    )
