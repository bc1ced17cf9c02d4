"""The JSON shapes of webhooks (pydantic): a new webhook, a webhook as read (never its
secret, except once in the answer that made it), and the log of delivery attempts."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from mailvia.ingress.api.schemas import Input, Line, Timestamp

# The event types (outbox.webhooks.EVENT_TYPES; a test keeps the two alike).
EventType = Literal[
    "message.delivered",
    "message.deferred",
    "message.bounced",
    "message.expired",
    "message.held",
    "message.cancelled",
    "channel.disconnected",
    "channel.reconnected",
]


class WebhookIn(Input):
    """Where to POST the organization's events, and which (default: every type)."""

    url: Annotated[
        Line,
        Field(
            min_length=1,
            max_length=2000,
            description="An https URL (http only for hosts inside ALLOW_PRIVATE_HOSTS); its "
            "addresses must pass the outbound address guard.",
            examples=["https://hooks.example.com/mailvia"],
        ),
    ]
    events: Annotated[list[EventType], Field(min_length=1, max_length=20)] | None = Field(
        None, description="The event types to send; leave it out for every type."
    )


class WebhookOut(BaseModel):
    id: str
    url: str
    events: list[str] = Field(description="The event types it gets.")
    created_at: Timestamp


class WebhookCreated(WebhookOut):
    secret: str = Field(
        description="The signing secret (`whsec_...`), shown this once: verify each POST's "
        "`webhook-signature` with it (Standard Webhooks)."
    )


class WebhookList(BaseModel):
    data: list[WebhookOut]


class WebhookAttemptOut(BaseModel):
    """One POST of an event: its HTTP status, or the error that kept it from an answer."""

    at: Timestamp
    event_id: str
    event_type: str
    attempt: int = Field(description="1 for the first attempt at this event.")
    outcome: Literal["delivered", "retry", "failed"]
    status: int | None = Field(description="The receiver's HTTP status; null without one.")
    error: str | None = Field(description="Why there was no answer (a timeout, ...).")
    duration_ms: int
    next_attempt_at: Timestamp | None = Field(description="When it is retried; null if not.")


class WebhookAttemptPage(BaseModel):
    data: list[WebhookAttemptOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for older attempts.")
