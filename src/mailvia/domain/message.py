"""Messages and recipients: their states, the envelope, and how a message's state follows
from its recipients' (SURFACE.md, "Words and states")."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class State(StrEnum):
    """The state of a recipient, and of a message as a whole."""

    QUEUED = "queued"
    HELD = "held"
    SENDING = "sending"
    DEFERRED = "deferred"
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    EXPIRED = "expired"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({State.DELIVERED, State.BOUNCED, State.EXPIRED, State.CANCELLED})
PENDING = frozenset({State.QUEUED, State.DEFERRED, State.HELD, State.SENDING})

# A message that is not yet terminal shows the most active state among its recipients.
_ACTIVE_ORDER = (State.SENDING, State.QUEUED, State.DEFERRED, State.HELD)
_TERMINAL_ORDER = (State.BOUNCED, State.EXPIRED, State.CANCELLED)


def message_state(recipient_states: Iterable[State]) -> State:
    """A message is terminal when all its recipients are: `delivered` if any was delivered,
    else `bounced`, `expired` or `cancelled` (in that precedence)."""
    states = set(recipient_states)
    if not states:
        raise ValueError("a message has at least one recipient")
    if states <= TERMINAL:
        if State.DELIVERED in states:
            return State.DELIVERED
        return next(s for s in _TERMINAL_ORDER if s in states)
    return next(s for s in _ACTIVE_ORDER if s in states)


@dataclass(frozen=True)
class Envelope:
    """The SMTP envelope: the return path and the recipients, as given to MAIL and RCPT."""

    mail_from: str
    rcpt_to: tuple[str, ...]
