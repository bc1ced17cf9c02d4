"""Webhooks: an organization's admins subscribe URLs to its events; each event is POSTed as
`{"id", "type", "created_at", "data"}`, signed per the Standard Webhooks specification, and
retried with backoff (the dispatcher is outbox/webhook_dispatch.py).

The signing secret (`whsec_` + base64 of 32 random bytes) is shown once, when the webhook is
made; it is sealed by the vault before it reaches the store and never read back by people.

Side effects: stores and removes webhooks; `check_url` may query DNS.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from mailvia.domain.clock import Instant, to_iso
from mailvia.domain.errors import InvalidInput, NotFound
from mailvia.domain.ids import make_id
from mailvia.domain.tenancy import User, require_admin
from mailvia.outbox.ports import Vault
from mailvia.outbox.records import Event
from mailvia.outbox.webhook_ports import Webhook, WebhookAttempt, WebhookStore

EVENT_TYPES = (
    "message.delivered",
    "message.deferred",
    "message.bounced",
    "message.expired",
    "message.held",
    "message.cancelled",
    "channel.disconnected",
    "channel.reconnected",
)
MAX_URL = 2000
FIRST_RETRY = 10.0  # seconds after the first failure; doubles per failure
MAX_RETRY = 3600.0
GIVE_UP = 86_400.0  # after the delivery was queued


@dataclass(frozen=True)
class NewWebhook:
    """A webhook just made, with its signing secret (the only time anyone sees it)."""

    webhook: Webhook
    secret: str = field(repr=False)


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def next_attempt(attempts: int, queued_at: Instant, now: Instant) -> Instant | None:
    """When to try again after `attempts` failed attempts (10 s, 20 s, 40 s ... at most an
    hour apart), or None once that would be more than 24 h after the delivery was queued."""
    delay = min(FIRST_RETRY * 2 ** min(max(attempts - 1, 0), 20), MAX_RETRY)
    at = now + delay
    return None if at > queued_at + GIVE_UP else at


def payload(event: Event) -> bytes:
    """The body POSTed for an event (compact JSON, as `GET /v1/events` shows it)."""
    body = {
        "id": event.id,
        "type": event.type,
        "created_at": to_iso(event.created_at),
        "data": dict(event.data),
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def check_url_syntax(url: str) -> str:
    """The URL, stripped, if it is an absolute http(s) URL with a host and no credentials or
    fragment. Raises InvalidInput."""
    url = url.strip()
    if len(url) > MAX_URL or any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in url):
        raise InvalidInput(f"url: at most {MAX_URL} characters, without spaces or controls")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError:
        raise InvalidInput("url: not a valid URL") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise InvalidInput("url: an absolute https:// URL is required")
    if parts.username is not None or parts.password is not None:
        raise InvalidInput("url: credentials in the URL are not allowed (use a path or query)")
    if parts.fragment:
        raise InvalidInput("url: a fragment is not sent; remove it")
    return url


def check_event_types(types: Sequence[str] | None) -> tuple[str, ...] | None:
    """The subscribed types without repeats (None: every type). Raises InvalidInput."""
    if types is None:
        return None
    unknown = sorted(set(types) - set(EVENT_TYPES))
    if unknown:
        raise InvalidInput(f"events: unknown type {unknown[0]!r}")
    if not types:
        raise InvalidInput("events: name at least one type, or leave it out for every type")
    return tuple(t for t in EVENT_TYPES if t in types)


class Webhooks:
    """What admins do with their organization's webhooks."""

    def __init__(
        self, store: WebhookStore, vault: Vault, *, check_url: Callable[[str], None]
    ) -> None:
        self.store = store
        self.vault = vault
        self.check_url = check_url  # the outbound address guard; raises OutboundRefused

    def add(
        self, actor: User, url: str, event_types: Sequence[str] | None, now: Instant
    ) -> NewWebhook:
        """Subscribe `url` to the organization's events from now on. Raises Forbidden
        (members), InvalidInput, OutboundRefused (the guard's one generic message)."""
        _admin(actor)
        url = check_url_syntax(url)
        types = check_event_types(event_types)
        self.check_url(url)
        secret = new_secret()
        webhook = Webhook(
            make_id("wh", now, os.urandom(10)), actor.organization_id, url, types, now
        )
        return NewWebhook(self.store.add_webhook(webhook, self.vault.seal(secret.encode())), secret)

    def visible(self, actor: User) -> list[Webhook]:
        """The organization's webhooks. Raises Forbidden (members)."""
        _admin(actor)
        return self.store.list_webhooks(actor.organization_id)

    def get(self, actor: User, webhook_id: str) -> Webhook:
        """Raises Forbidden (members), NotFound (also another organization's webhook)."""
        _admin(actor)
        try:
            webhook = self.store.get_webhook(webhook_id)
        except NotFound:
            webhook = None
        if webhook is None or webhook.organization_id != actor.organization_id:
            raise NotFound(f"no webhook {webhook_id!r}")
        return webhook

    def remove(self, actor: User, webhook_id: str) -> None:
        """Delete the webhook and its delivery log. Raises Forbidden, NotFound."""
        self.store.remove_webhook(self.get(actor, webhook_id).id)

    def attempts(
        self, actor: User, webhook_id: str, *, cursor: str | None, limit: int
    ) -> tuple[list[WebhookAttempt], str | None]:
        """The webhook's delivery attempts, newest first. Raises Forbidden, NotFound,
        InvalidCursor (a bad cursor)."""
        webhook = self.get(actor, webhook_id)
        return self.store.list_webhook_attempts(webhook.id, cursor=cursor, limit=limit)


def _admin(actor: User) -> None:
    require_admin(actor, "manage webhooks")
