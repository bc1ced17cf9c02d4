"""Small helpers shared by the store's parts: opaque cursors, batching, replies from columns."""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Iterator, Sequence
from typing import TypeVar

from mailvia.domain.clock import Instant
from mailvia.domain.errors import InvalidInput
from mailvia.domain.ids import make_id
from mailvia.domain.replies import Reply

T = TypeVar("T")

# Well under SQLite's 32,766 bound parameters and PostgreSQL's 65,535.
BATCH = 5000


def chunks(items: Sequence[T], size: int = BATCH) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most `size` items (for IN lists)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def encode_cursor(kind: str, seq: int) -> str:
    """An opaque cursor naming a position (`seq`) in one kind of list."""
    return base64.urlsafe_b64encode(f"{kind}:{seq}".encode()).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str) -> int:
    """The position in a cursor made by `encode_cursor`. Raises InvalidInput for anything else."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        prefix, _, seq = base64.urlsafe_b64decode(padded.encode()).decode().partition(":")
        if prefix == kind and seq.isdigit():
            return int(seq)
    except (binascii.Error, UnicodeError, ValueError):
        pass
    raise InvalidInput("cursor: not a cursor this list handed out")


def reply_of(code: int | None, enhanced: str | None, text: str | None) -> Reply | None:
    """A reply from its stored columns (None when nothing was ever recorded)."""
    if code is None:
        return None
    return Reply(code, enhanced, text or "")


def event_id(now: Instant) -> str:
    """A new event id, like the ones the use cases make."""
    return make_id("evt", now, os.urandom(10))
