"""A raw message given with message fields is refused, naming the fields given, in order
(ingress/api/intake.py `_compose`), and one with only its envelope is taken."""

from __future__ import annotations

import base64

import pytest

from mailvia.domain.errors import InvalidInput
from mailvia.ingress.api import intake
from mailvia.ingress.api.schemas import MessageIn

RAW = base64.b64encode(b"From: jane@acme.test\r\nTo: bob@example.com\r\n\r\nhi\r\n").decode()
ENVELOPE = {"mail_from": "jane@acme.test", "rcpt_to": ["bob@example.com"]}


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"to": ["b@example.com"], "from": "j@acme.test", "subject": "s"}, "from, subject, to"),
        ({"headers": {}}, "headers"),
        ({"html": "<p>", "text": "t", "reply_to": "r@example.com"}, "html, reply_to, text"),
        ({"subject": ""}, "subject"),  # given, even as its default
    ],
)
def test_raw_with_fields_is_refused_naming_them(fields: dict[str, object], named: str) -> None:
    body = MessageIn.model_validate({"raw": RAW, "envelope": ENVELOPE, **fields})
    with pytest.raises(InvalidInput) as refused:
        intake._compose(body, 0.0, 10**6)
    assert str(refused.value) == f"raw: give the whole message or its fields, not both ({named})"


def test_raw_with_its_envelope_only_is_taken() -> None:
    body = MessageIn.model_validate({"raw": RAW, "envelope": ENVELOPE})
    composed = intake._compose(body, 0.0, 10**6)
    assert composed.envelope.rcpt_to == ("bob@example.com",)
    assert composed.from_address == "jane@acme.test"
