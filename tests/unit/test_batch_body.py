"""A batch body validated whole (`_whole_batch`, pydantic's JSON parser) gives what reading it
message by message gives (`_batch_by_message`, counted against the caps as it goes), or
steps aside: the same Batch, or the same error, for every body here."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError

from mailvia.domain.errors import RequestTooLarge
from mailvia.domain.ratelimit import RequestCaps
from mailvia.ingress.api.bodies import _batch_by_message, _whole_batch, batch_body

RAW = base64.b64encode(b"From: a@b.test\r\nTo: c@d.test, e@f.test\r\n\r\nhi\r\n").decode()
FIELDS = {"from": "a@b.test", "to": ["c@d.test"], "subject": "s", "text": "t"}
ENVELOPED = {"raw": RAW, "envelope": {"mail_from": "a@b.test", "rcpt_to": ["x@y.test"]}}


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


BODIES = [
    dumps({"messages": [FIELDS, ENVELOPED, {"raw": RAW}]}),
    dumps({"messages": [ENVELOPED] * 3}),
    dumps({"messages": [{**FIELDS, "subject": "caf\u00e9 \u2603"}]}),  # \u escapes
    json.dumps({"messages": [{**FIELDS, "subject": "caf\u00e9"}]}, ensure_ascii=False).encode(),
    b'{"messages":[' + dumps(FIELDS) + b'],"messages":[' + dumps(ENVELOPED) + b"]}",
    b'{"messages":[' + dumps(FIELDS) + b'],"messag\\u0065s":[' + dumps(ENVELOPED) + b"]}",
    b'{"messages":[{"raw":"QQ==","raw":"' + RAW.encode() + b'"}]}',  # the last one counts
    dumps({"messages": [{**FIELDS, "subject": "\u0000"}]}),
    dumps({"messages": [{**FIELDS, "subject": "\ud800"}]}),
    b'{"messages":[' + dumps(FIELDS) + b'], "x": NaN}',
    b'{"messages":[' + dumps(FIELDS) + b"]} x",
    b'{"messages":[' + dumps(FIELDS) + b"],}",
    b'{"messages":[{"from":"a@b","to":["c@d"],"subject":"a\tb"}]}',
    b'{"messages":[{"from":"a@b","to":["c@d"],"subject":"\xff"}]}',
    b"\xef\xbb\xbf" + dumps({"messages": [FIELDS]}),
    dumps({"messages": []}),
    dumps({"messages": [{**FIELDS, "to": 5}]}),
    dumps({"messages": [{**FIELDS, "extra": 1}]}),
    dumps({"messages": [{"raw": 5}]}),
    dumps([FIELDS]),
    dumps({"messages": [FIELDS] * 1001}),
    dumps({"messages": [{**FIELDS, "to": ["c@d.test"] * 60}] * 3}),
    dumps({"messages": [{"raw": RAW}] * 90}),
    dumps({"messages": [{"raw": "not base64!"}]}),
]
CAPS = [RequestCaps(), RequestCaps(messages=2, recipients=10_000), RequestCaps(recipients=170)]


def outcome(read: Any, raw: bytes, caps: RequestCaps) -> Any:
    try:
        batch = read(raw, caps)
    except RequestValidationError as exc:
        return "422", json.dumps(exc.errors(), default=repr)  # ValueErrors compare by identity
    except RequestTooLarge as exc:
        return "413", str(exc)
    return batch.body.model_dump(mode="json", by_alias=True), batch.recipients


@pytest.mark.parametrize("caps", CAPS)
@pytest.mark.parametrize("raw", BODIES)
def test_whole_or_by_message_the_answer_is_the_same(raw: bytes, caps: RequestCaps) -> None:
    assert outcome(batch_body, raw, caps) == outcome(_batch_by_message, raw, caps)


def test_the_whole_path_takes_plain_batches_and_steps_aside_for_the_rest() -> None:
    caps = RequestCaps()
    whole = _whole_batch(BODIES[0], caps)
    assert whole is not None and whole.recipients == 1 + 1 + 2  # To; the envelope; the headers
    for raw in (BODIES[2], BODIES[4], BODIES[5], BODIES[8], BODIES[20]):
        assert _whole_batch(raw, caps) is None
    assert _whole_batch(BODIES[21], RequestCaps(recipients=170)) is None


def test_a_body_with_more_commas_than_the_recipient_cap_is_not_validated_whole() -> None:
    """The bound that keeps the whole path's work within the caps: every listed recipient but
    a list's first follows a comma."""
    body = dumps({"messages": [ENVELOPED] * 3})
    assert _whole_batch(body, RequestCaps()) is not None
    commas = body.count(b",") + body.count(b"[")
    assert _whole_batch(body, RequestCaps(recipients=commas - 1)) is None
    assert _whole_batch(body, RequestCaps(recipients=commas)) is not None
