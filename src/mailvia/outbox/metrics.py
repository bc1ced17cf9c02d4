"""The words metrics use, shared by every intake, and the do-nothing Metrics (the default).

Reasons an intake refuses a message: `invalid` (bad input), `too_large`, `forbidden` (a
sender that may not use the address), `unauthenticated`, `conflict` (an idempotency key
reused with another body), `unavailable` (the outbox could not be reached), `other`.
"""

from __future__ import annotations

from collections.abc import Sequence

from mailvia.domain.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    MailviaError,
    MessageTooLarge,
    RateLimited,
    RequestTooLarge,
    SecretsUnavailable,
    StoreUnavailable,
    Unauthenticated,
)

# The most specific class first: MessageTooLarge is an InvalidInput.
_REASONS: tuple[tuple[type[MailviaError], str], ...] = (
    (MessageTooLarge, "too_large"),
    (RequestTooLarge, "too_large"),
    (InvalidInput, "invalid"),
    (Forbidden, "forbidden"),
    (Unauthenticated, "unauthenticated"),
    (Conflict, "conflict"),
    (RateLimited, "rate_limited"),
    (StoreUnavailable, "unavailable"),
    (SecretsUnavailable, "unavailable"),
)
REASONS = (
    "invalid",
    "too_large",
    "forbidden",
    "unauthenticated",
    "conflict",
    "rate_limited",
    "unavailable",
)


def rejection_reason(exc: MailviaError) -> str:
    """The metrics reason for an error that kept a message out."""
    return next((reason for kind, reason in _REASONS if isinstance(exc, kind)), "other")


class NoMetrics:
    """Metrics that go nowhere (tests, the CLI)."""

    def attempt(self, channel_id: str, seconds: float, outcomes: Sequence[str]) -> None:
        return None

    def rejected(self, intake: str, reason: str) -> None:
        return None

    def webhook_attempt(self, outcome: str, seconds: float) -> None:
        return None

    def concurrency(self, channel_id: str, allowed: int) -> None:
        return None


NO_METRICS = NoMetrics()
