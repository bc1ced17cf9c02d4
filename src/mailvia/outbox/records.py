"""What the use cases hand out to read, and the filters they read by: a message as its
sender sees it (never its bytes), with its recipients and attempts; an event of an
organization's stream; an hour of a channel's sending; an API token (never the token, nor
its hash). The store builds them; web/ and ingress/ show them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mailvia.domain.clock import Instant
from mailvia.domain.message import Envelope, State
from mailvia.domain.replies import Reply


@dataclass(frozen=True)
class Event:
    """One entry of an organization's event stream."""

    id: str
    organization_id: str
    type: str
    created_at: Instant
    data: Mapping[str, Any]


@dataclass(frozen=True)
class RecipientView:
    address: str
    state: State
    reply: Reply | None
    updated_at: Instant


@dataclass(frozen=True)
class AttemptView:
    at: Instant
    channel_id: str
    recipient: str
    stage: str
    reply: Reply
    outcome: str


@dataclass(frozen=True)
class MessageView:
    id: str
    organization_id: str
    user_id: str
    channel_id: str
    state: State
    envelope: Envelope
    size: int
    created_at: Instant
    expires_at: Instant
    next_attempt_at: Instant | None
    possible_duplicate: bool
    recipients: tuple[RecipientView, ...] = ()
    attempts: tuple[AttemptView, ...] = ()
    test: bool = False
    subject: str | None = None  # None: not recorded (a message from before migration 0010)


@dataclass(frozen=True)
class WaitingMail:
    """A message waiting on a channel (queued, deferred or held), as moving it needs: its
    sender, and the head of its content (its From decides which channels may carry it)."""

    id: str
    user_id: str
    head: bytes


@dataclass(frozen=True)
class MessageFilter:
    organization_id: str
    user_id: str | None = None
    state: State | None = None
    channel_id: str | None = None
    limit: int = 50
    cursor: str | None = None
    search: str | None = None  # a part of the subject or of a recipient's address


@dataclass(frozen=True)
class HourOfUse:
    """One hour of a channel's sending: the messages it tried to hand over that hour, and how
    many of them were delivered (to at least one recipient)."""

    start: Instant
    tried: int
    delivered: int


@dataclass(frozen=True)
class TokenView:
    """An API token as people see it: never the token, nor its hash."""

    id: str
    user_id: str
    name: str
    created_at: Instant
    revoked_at: Instant | None
