"""From a JSON message body to a Submission: the door's checks (`compose`, `inspect_raw`, the
same as every intake), the envelope sender's right to its address, and idempotency keys.

Nothing here writes: the Submitter commits.
"""

from __future__ import annotations

import binascii
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel

from mailvia.domain.errors import Forbidden, InvalidInput, MailviaError
from mailvia.domain.tenancy import User
from mailvia.ingress.api.raw_batch import RawIn, model_raw_in
from mailvia.ingress.api.schemas import MessageIn
from mailvia.outbox.compose import Composed, Draft, compose, inspect_raw
from mailvia.outbox.services import Services
from mailvia.outbox.submit import Submission, request_hash

log = logging.getLogger("mailvia.api")

_KEY = re.compile(r"^[!-~]{1,255}$")
_FIELD_MODE = frozenset(
    ("from_", "to", "cc", "bcc", "reply_to", "subject", "text", "html", "headers")
)


@dataclass(frozen=True)
class Idempotency:
    """The caller's Idempotency-Key and the hash of what it was sent with."""

    key: str
    digest: str


def idempotency(key: str | None, user: User, kind: str, body: BaseModel) -> Idempotency | None:
    """Check the header and hash the request (the user is part of it: a key names one
    caller's request). Raises InvalidInput for a key that is not 1-255 visible ASCII. The
    body is made canonical only when there is a key (for a batch it costs as much as
    reading it)."""
    if key is None:
        return None
    if not _KEY.match(key):
        raise InvalidInput("Idempotency-Key: 1 to 255 visible ASCII characters")
    return Idempotency(key, request_hash(kind.encode(), user.id.encode(), canonical(body)))


def canonical(body: BaseModel) -> bytes:
    """The body as canonical JSON: omitted fields and their defaults hash alike."""
    data = body.model_dump(mode="json", by_alias=True)
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def composed(
    services: Services,
    user: User,
    body: MessageIn | RawIn,
    now: float,
    check_sender: Callable[[User, str], None] | None = None,
) -> Composed:
    """Validate one message as every intake does. Raises InvalidInput (422), MessageTooLarge
    (413), Forbidden (an envelope sender that is not the caller's). `check_sender`: the
    request's checks (`Submitter.from_checks`), else the Submitter's own."""
    try:
        result = _compose(body, now, services.max_message_size)
    except MailviaError:
        raise
    except (ValueError, LookupError, AttributeError, TypeError) as exc:
        # The standard library's header parser trips on some malformed input; still the
        # client's input, so a 422, never a 500.
        log.info("message refused by the parser: %s: %s", type(exc).__name__, exc)
        raise InvalidInput("the message cannot be parsed: malformed header fields") from None
    mail_from = result.envelope.mail_from
    if mail_from and mail_from.lower() != result.from_address.lower():
        try:
            (check_sender or services.submitter.check_sender)(user, mail_from)
        except Forbidden as exc:
            raise Forbidden(f"envelope mail_from: {exc}") from None
    return result


def submission(
    services: Services,
    user: User,
    body: MessageIn | RawIn,
    now: float,
    key: Idempotency | None,
    check_sender: Callable[[User, str], None] | None = None,
) -> Submission:
    return Submission(
        composed(services, user, body, now, check_sender),
        idempotency_key=key.key if key else None,
        request_hash=key.digest if key else None,
    )


def _compose(body: MessageIn | RawIn, now: float, max_size: int) -> Composed:
    if isinstance(body, RawIn):  # read and decoded by raw_batch
        return _compose_raw(body, max_size)
    if body.raw is None:
        if body.envelope is not None:
            raise InvalidInput("envelope: only with raw")
        if body.from_ is None:
            raise InvalidInput("from: required (or give the whole message as raw)")
        draft = Draft(
            from_=body.from_,
            to=body.to,
            cc=body.cc,
            bcc=body.bcc,
            reply_to=body.reply_to,
            subject=body.subject,
            text=body.text,
            html=body.html,
            headers=body.headers,
        )
        return compose(draft, now=now, max_size=max_size)
    mixed = sorted(body.model_fields_set & _FIELD_MODE)
    if mixed:
        names = ", ".join("from" if n == "from_" else n for n in mixed)
        raise InvalidInput(f"raw: give the whole message or its fields, not both ({names})")
    try:
        message = model_raw_in(body)
    except (binascii.Error, ValueError):
        raise InvalidInput("raw: not valid base64") from None
    return _compose_raw(message, max_size)


def _compose_raw(message: RawIn, max_size: int) -> Composed:
    """A raw message, decoded, inspected: the one way both readings of one are composed."""
    return inspect_raw(message.content, envelope=message.envelope, max_size=max_size)
