"""A batch of raw messages (each `raw`, with or without an `envelope`, and nothing else) read
from its parsed JSON without building its models: each message's base64 decoded once, its
envelope checked by the schema's rules and made the domain's `Envelope`.

This is the bulk client's batch, and for it `BatchIn.model_validate` and the 1,000
`MessageIn` it makes were ~3 ms of serve's work per batch of 1,000, the base64 decoded again
while composing ~2.4 ms (docs/benchmarks.md, branch `batch4`). `read` accepts only what
`BatchIn` accepts and reads it as the models would be composed (`intake._compose`'s raw
branch): a raw message's bytes decoded as `base64s.decode` decodes them, the envelope's
addresses as given. Whatever it is unsure of (another field, a value of another type, an
address too long or not clean text, a list out of its bounds, base64 that does not decode,
over a cap) gives None, and the body is read by the models as before, which gives today's
answer or error (tests/unit/test_raw_batch.py compares the two on generated batches).
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from typing import Any

from mailvia.domain.errors import InvalidInput
from mailvia.domain.message import Envelope
from mailvia.domain.ratelimit import RequestCaps
from mailvia.ingress.api import base64s
from mailvia.outbox.compose import header_recipient_count

# The schema's bounds (schemas.py: BatchIn.messages, EnvelopeIn.rcpt_to, Address).
MAX_MESSAGES = 1000
MAX_RCPT_TO = 1000
MAX_ADDRESS = 998
_ENVELOPE = frozenset(("mail_from", "rcpt_to"))


@dataclass(frozen=True, slots=True)
class RawIn:
    """A raw message of a batch, read: its bytes, and its envelope if it gave one."""

    content: bytes
    envelope: Envelope | None


@dataclass(frozen=True)
class RawBatch:
    messages: list[RawIn]
    recipients: int


class _Unsure(Exception):
    """Not a batch `read` takes as surely valid: the models read it."""


def read(fields: Any, caps: RequestCaps) -> RawBatch | None:
    """The batch `fields` (the body's parsed JSON) holds, if it is a valid batch of raw
    messages within `caps`; else None."""
    if type(fields) is not dict or len(fields) != 1:
        return None
    found = fields.get("messages")
    if type(found) is not list or not 1 <= len(found) <= min(MAX_MESSAGES, caps.messages):
        return None
    try:
        given = [_given(value) for value in found]  # all of them, before decoding any
        messages = [RawIn(_decoded(raw), envelope) for raw, envelope in given]
    except _Unsure:
        return None
    recipients = sum(_recipients(message) for message in messages)
    if recipients > caps.recipients:
        return None
    return RawBatch(messages, recipients)


def _given(value: Any) -> tuple[str, Envelope | None]:
    """A message's raw text and envelope, if it gives only those and they are valid."""
    if type(value) is not dict:
        raise _Unsure
    raw = value.get("raw")
    if type(raw) is not str or len(value) != ("envelope" in value) + 1:
        raise _Unsure  # no raw, or another field beside raw and envelope
    return raw, _envelope(value["envelope"]) if "envelope" in value else None


def _decoded(raw: str) -> bytes:
    try:
        return base64s.decode(raw)
    except (binascii.Error, ValueError):
        raise _Unsure from None  # the message's own refusal, given by the models' reading


def _envelope(value: Any) -> Envelope | None:
    """The envelope (None for null), as `EnvelopeIn` would take it."""
    if value is None:
        return None
    if type(value) is not dict or len(value) != 2 or not _ENVELOPE.issuperset(value):
        raise _Unsure
    mail_from, rcpt_to = value["mail_from"], value["rcpt_to"]
    if not _address(mail_from) or type(rcpt_to) is not list:
        raise _Unsure
    if not 1 <= len(rcpt_to) <= MAX_RCPT_TO or not all(_address(a) for a in rcpt_to):
        raise _Unsure
    return Envelope(mail_from, tuple(rcpt_to))


def _address(value: Any) -> bool:
    """An `Address` as the schema takes it: a string of at most 998 characters, no NUL, no
    lone surrogate (`schemas.clean_text`)."""
    if type(value) is not str or len(value) > MAX_ADDRESS or "\0" in value:
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _recipients(message: RawIn) -> int:
    """`bodies.recipients_of` for a raw message: its envelope's, else its header fields'."""
    if message.envelope is not None:
        return len(message.envelope.rcpt_to)
    try:
        return header_recipient_count(message.content)
    except (InvalidInput, ValueError):
        return 1  # refused later, with its own error
