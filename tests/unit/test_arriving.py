"""A batch's raw messages composed while its body arrives (ingress/api/arriving.py): what is
composed ahead is given back only for a message equal to the one read from the whole body;
its refusal is raised as it was; fields messages are left for later; and the work ahead
stays within the request's caps, its token's recipients left, and a valid schema."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import pytest

from mailvia.domain.errors import Forbidden, InvalidInput
from mailvia.domain.message import Envelope
from mailvia.domain.ratelimit import RequestCaps
from mailvia.ingress.api.arriving import Arriving
from mailvia.ingress.api.bodies import batch_body
from mailvia.ingress.api.schemas import MessageIn
from mailvia.outbox.compose import Composed, inspect_raw

CAPS = RequestCaps(messages=1000, recipients=10_000)
# Padding so that a body of a few dozen messages is read ahead several times (64 KiB first).
TEXT = b"x" * 4000
RAW = base64.b64encode(b"From: jane@acme.test\r\nTo: bob@example.com\r\n\r\n" + TEXT).decode()
ENVELOPE = {"mail_from": "jane@acme.test", "rcpt_to": ["bob@example.com"]}


def raw(**extra: Any) -> dict[str, Any]:
    return {"raw": RAW, "envelope": ENVELOPE, **extra}


def body(messages: list[Any]) -> bytes:
    return json.dumps({"messages": messages}).encode()


class Composer:
    """inspect_raw, counting its calls; refuses an envelope sender other than jane."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, message: MessageIn) -> Composed:
        self.calls += 1
        assert message.raw is not None
        envelope = None
        if message.envelope is not None:
            if message.envelope.mail_from == "fault@acme.test":
                raise RuntimeError("the store went away")
            if message.envelope.mail_from != "jane@acme.test":
                raise Forbidden("not yours")
            envelope = Envelope(message.envelope.mail_from, tuple(message.envelope.rcpt_to))
        try:
            content = base64.b64decode(message.raw, validate=True)
        except binascii.Error:
            raise InvalidInput("raw: not valid base64") from None
        return inspect_raw(content, envelope=envelope, max_size=10**6)


def arrive(
    text: bytes,
    *,
    caps: RequestCaps = CAPS,
    left: float = float("inf"),
    chunk: int = 16 * 1024,
) -> tuple[Arriving, Composer]:
    """The body received in chunks, `advance` called after each (as the route does, one
    call at a time), and nothing after the last chunk."""
    composer = Composer()
    arriving = Arriving(composer, senders=lambda user, address: None, caps=caps,
                        recipients_left=lambda: left)  # fmt: skip
    for at in range(0, len(text), chunk):
        arriving.add(text[at : at + chunk])
        arriving.advance()
    assert arriving.whole() == text
    return arriving, composer


def composed_ahead(arriving: Arriving, text: bytes) -> list[Composed | None]:
    messages = batch_body(text, CAPS).body.messages
    return [arriving.take(index, message) for index, message in enumerate(messages)]


def test_the_messages_that_arrived_whole_are_composed_ahead_and_given_back() -> None:
    text = body([raw() for _ in range(60)])
    arriving, composer = arrive(text)
    made = composed_ahead(arriving, text)
    ahead = [m for m in made if m is not None]
    assert 30 <= len(ahead) < 60 == len(made)  # the last part arrived after the last reading
    assert composer.calls == len(ahead)
    assert all(m.envelope.rcpt_to == ("bob@example.com",) for m in ahead)
    assert made[-1] is None  # the last one is never taken as whole from a partial reading


def test_a_message_that_differs_from_the_whole_bodys_is_not_given_back() -> None:
    text = body([raw() for _ in range(60)])
    arriving, _ = arrive(text)
    other = MessageIn.model_validate(raw(envelope={**ENVELOPE, "rcpt_to": ["eve@example.com"]}))
    assert arriving.take(0, other) is None
    fewer_fields = MessageIn.model_validate({"raw": RAW, "envelope": ENVELOPE})
    more_fields = MessageIn.model_validate({"raw": RAW, "envelope": ENVELOPE, "to": []})
    assert fewer_fields == more_fields  # pydantic's equality does not tell them apart
    assert arriving.take(1, more_fields) is None  # the fields set differ: composed again
    assert arriving.take(2, fewer_fields) is not None
    assert arriving.take(2, fewer_fields) is None  # each is given once


def test_a_refusal_composed_ahead_is_raised_in_its_place() -> None:
    theirs = {**ENVELOPE, "mail_from": "joe@acme.test"}
    text = body([raw(envelope=theirs) if i % 2 else raw() for i in range(40)])
    arriving, _ = arrive(text)
    messages = batch_body(text, CAPS).body.messages
    assert arriving.take(0, messages[0]) is not None
    with pytest.raises(Forbidden):
        arriving.take(1, messages[1])


def test_a_bad_raw_message_is_refused_ahead_as_it_would_be_later() -> None:
    text = body([raw(raw="!!not base64!!" + RAW) if i == 3 else raw() for i in range(40)])
    arriving, _ = arrive(text)
    messages = batch_body(text, CAPS).body.messages
    with pytest.raises(InvalidInput, match="base64"):
        arriving.take(3, messages[3])
    assert arriving.take(4, messages[4]) is not None


def test_a_fault_while_composing_ahead_stops_it_and_nothing_after_is_given() -> None:
    text = body([raw(envelope={**ENVELOPE, "mail_from": "fault@acme.test"}) if i == 3 else raw()
                 for i in range(40)])  # fmt: skip
    arriving, composer = arrive(text)
    messages = batch_body(text, CAPS).body.messages
    assert composer.calls == 4
    assert arriving.take(2, messages[2]) is not None
    assert [arriving.take(i, messages[i]) for i in range(3, 40)] == [None] * 37


def test_messages_given_as_fields_are_not_composed_ahead() -> None:
    fields = {"from": "jane@acme.test", "to": ["bob@example.com"], "text": TEXT.decode()}
    text = body([fields for _ in range(40)])
    arriving, composer = arrive(text)
    assert composer.calls == 0
    assert all(m is None for m in composed_ahead(arriving, text))


@pytest.mark.parametrize(
    ("caps", "left", "most"),
    [
        (RequestCaps(messages=5, recipients=10_000), float("inf"), 5),
        (RequestCaps(messages=1000, recipients=7), float("inf"), 7),
        (CAPS, 3.0, 3),
        (CAPS, 0.0, 0),
    ],
    ids=["message-cap", "recipient-cap", "recipients-left", "none-left"],
)
def test_no_more_is_composed_ahead_than_the_request_may_carry(
    caps: RequestCaps, left: float, most: int
) -> None:
    _, composer = arrive(body([raw() for _ in range(60)]), caps=caps, left=left)
    assert composer.calls == most


def test_a_message_that_does_not_fit_the_schema_stops_the_work_ahead() -> None:
    messages = [raw() for _ in range(60)]
    messages[2] = {"raw": 3}
    _, composer = arrive(body(messages))
    assert composer.calls == 2


def test_a_body_that_is_not_json_is_left_to_the_whole_reading() -> None:
    text = b'{"messages": [' + b"]" * (200 * 1024)
    arriving, composer = arrive(text)
    assert composer.calls == 0 and arriving.whole() == text
