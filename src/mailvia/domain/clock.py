"""Time as the core sees it: float seconds since the epoch, always passed in, never read."""

from __future__ import annotations

from datetime import UTC, datetime

Instant = float


def to_iso(at: Instant | None) -> str | None:
    """Render an instant as an ISO 8601 UTC string (None stays None)."""
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
