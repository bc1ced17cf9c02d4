"""The ports for webhooks and metrics (issue 5): what the webhook use cases need from a store
and a sender, and what the use cases report to metrics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mailvia.domain.clock import Instant
from mailvia.outbox.records import Event

# Webhooks and metrics (issue 5). A webhook's signing secret is sealed by the vault before it
# reaches the store; only the dispatcher opens it, to hand it to the sender.


@dataclass(frozen=True)
class Webhook:
    """An organization's webhook: where its events are POSTed. `event_types` None: all."""

    id: str
    organization_id: str
    url: str
    event_types: tuple[str, ...] | None
    created_at: Instant


@dataclass(frozen=True)
class WebhookJob:
    """One delivery (a webhook and an event) leased to a dispatcher for one attempt."""

    delivery_id: str
    webhook_id: str
    url: str
    sealed_secret: bytes = field(repr=False)
    event: Event
    attempts: int  # earlier attempts
    created_at: Instant  # when the delivery was queued; retries stop 24 h later


@dataclass(frozen=True)
class WebhookAttempt:
    """One attempt to deliver an event to a webhook, as logged (and as the API lists it).

    `outcome`: `delivered` (a 2xx answer), `retry` (another attempt at `next_attempt_at`)
    or `failed` (given up). `status` is the HTTP status when the receiver answered, `error`
    why it did not (a timeout, a refused connection, the outbound address guard)."""

    delivery_id: str
    webhook_id: str
    event_id: str
    event_type: str
    attempt: int
    at: Instant
    status: int | None
    error: str | None
    duration: float
    outcome: str
    next_attempt_at: Instant | None


@dataclass(frozen=True)
class WebhookResult:
    """What one POST to a webhook got: an HTTP status, or an error; and how long it took."""

    status: int | None
    error: str | None
    duration: float

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class WebhookStore(Protocol):
    """The webhook tables (implemented by the SQL store beside the Store port)."""

    def add_webhook(self, webhook: Webhook, sealed_secret: bytes) -> Webhook: ...
    def get_webhook(self, webhook_id: str) -> Webhook: ...
    def list_webhooks(self, org_id: str | None = None) -> list[Webhook]: ...
    def remove_webhook(self, webhook_id: str) -> None: ...
    def queue_webhook_events(self, now: Instant, *, limit: int, backlog: int) -> int: ...
    def webhooks_due(self, now: Instant) -> list[str]: ...
    def claim_webhook_deliveries(
        self, webhook_id: str, *, now: Instant, limit: int, lease_until: Instant
    ) -> list[WebhookJob]: ...
    def record_webhook_attempts(self, attempts: Sequence[WebhookAttempt]) -> None: ...
    def list_webhook_attempts(
        self, webhook_id: str, *, cursor: str | None, limit: int
    ) -> tuple[list[WebhookAttempt], str | None]: ...


class WebhookSender(Protocol):
    """POSTs a signed event to a webhook URL. Failures are in the result, never raised."""

    async def send(
        self, url: str, *, secret: str, message_id: str, timestamp: Instant, body: bytes
    ) -> WebhookResult:
        """Sign `body` per the Standard Webhooks specification (`webhook-id` = `message_id`,
        `webhook-timestamp`, `webhook-signature` with `secret`, a `whsec_...` string), check
        the URL's addresses with the outbound address guard and POST it."""
        ...

    async def aclose(self) -> None: ...


class Metrics(Protocol):
    """Counters the use cases feed; an adapter exports them (ingress/metrics.py)."""

    def attempt(self, channel_id: str, seconds: float, outcomes: Sequence[str]) -> None:
        """One SMTP transaction on a channel: how long it took and each recipient's outcome."""
        ...

    def rejected(self, intake: str, reason: str) -> None:
        """An intake (`api`, `smtp`) refused a message, for `reason` (see outbox/metrics.py)."""
        ...

    def webhook_attempt(self, outcome: str, seconds: float) -> None:
        """One POST to a webhook: `delivered`, `retry` or `failed`."""
        ...

    def concurrency(self, channel_id: str, allowed: int) -> None:
        """A channel's concurrency in this process changed (outbox/concurrency.py)."""
        ...


__all__ = [
    "Metrics",
    "Webhook",
    "WebhookAttempt",
    "WebhookJob",
    "WebhookResult",
    "WebhookSender",
    "WebhookStore",
]
