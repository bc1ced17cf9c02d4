"""A batch of raw messages (each `raw`, with or without an `envelope`, and nothing else) read
from its parsed JSON without building its models: validated by `schemas.RawBatchFields` (the
schema's own types: `Raw`, `Address`, `RcptTo`, `Messages`; one definition of each rule),
each message's base64 decoded once and its envelope made the domain's `Envelope`.

This is the bulk client's batch, and for it `BatchIn.model_validate` and the 1,000
`MessageIn` it makes were ~3 ms of serve's work per batch of 1,000, the base64 decoded again
while composing ~2.4 ms (docs/benchmarks.md, branch `batch4`). `read` accepts only what
`BatchIn` accepts and reads it as a `MessageIn` is composed (`raw_in`, which
`intake._compose` uses too). Whatever it does not take (another field, a value the types
refuse, base64 that does not decode, over a cap) gives None, and the body is read by the
models as before, which gives today's answer or error (tests/unit/test_raw_batch.py).
"""

from __future__ import annotations

import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from mailvia.domain.errors import InvalidInput
from mailvia.domain.message import Envelope
from mailvia.domain.ratelimit import RequestCaps
from mailvia.ingress.api import base64s
from mailvia.ingress.api.schemas import MessageIn, RawBatchFields
from mailvia.outbox.compose import header_recipient_count

_FIELDS = TypeAdapter(RawBatchFields)


@dataclass(frozen=True, slots=True)
class RawIn:
    """A raw message, read: its bytes, and its envelope if it gave one."""

    content: bytes
    envelope: Envelope | None


@dataclass(frozen=True)
class RawBatch:
    """A batch of raw messages read without models (it has none to hash: no `body`)."""

    messages: list[RawIn]
    recipients: int


def raw_in(raw: str, envelope: tuple[str, Sequence[str]] | None) -> RawIn:
    """A raw message's base64 decoded and its envelope (mail_from, rcpt_to) made an
    `Envelope`. Raises binascii.Error or ValueError for base64 `base64s` refuses."""
    made = None if envelope is None else Envelope(envelope[0], tuple(envelope[1]))
    return RawIn(base64s.decode(raw), made)


def model_raw_in(message: MessageIn) -> RawIn:
    """`raw_in` for a valid `MessageIn` given as raw (its `raw` not None)."""
    assert message.raw is not None
    given = message.envelope
    return raw_in(message.raw, None if given is None else (given.mail_from, given.rcpt_to))


def recipients(message: RawIn) -> int:
    """How many recipients a raw message names: its envelope's, else its header fields'
    addresses (read without checking them)."""
    if message.envelope is not None:
        return len(message.envelope.rcpt_to)
    try:
        return header_recipient_count(message.content)
    except (InvalidInput, ValueError):
        return 1  # refused later, with its own error


def read(fields: Any, caps: RequestCaps) -> RawBatch | None:
    """The batch `fields` (the body's parsed JSON) holds, if it is a valid batch of raw
    messages within `caps`; else None."""
    found = fields.get("messages") if type(fields) is dict else None
    if type(found) is not list or len(found) > caps.messages:
        return None  # not validated past the cap
    if not all(type(message) is dict and "raw" in message for message in found):
        return None  # not a raw batch: not refused by the types (~1.4 ms per 1,000)
    try:
        given = _FIELDS.validate_python(fields)["messages"]  # all of them, before decoding
        messages = [raw_in(m["raw"], _envelope(m)) for m in given]
    except (ValidationError, binascii.Error, ValueError):
        return None
    counted = sum(recipients(message) for message in messages)
    if counted > caps.recipients:
        return None
    return RawBatch(messages, counted)


def _envelope(message: Any) -> tuple[str, list[str]] | None:
    given = message.get("envelope")
    return None if given is None else (given["mail_from"], given["rcpt_to"])
