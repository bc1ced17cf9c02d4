"""A batch's body read whole (ingress/api/bodies.py `_whole`: pydantic-core's parser, one
validation) gives what reading it one message at a time (`_piecewise`) gives: the same batch
and recipients, or the same error (its type, and for a 422 every `loc`, `msg` and `type`),
on every body here; and a plain valid batch is read whole."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError

from mailvia.domain.errors import MailviaError
from mailvia.domain.ratelimit import RequestCaps
from mailvia.ingress.api import bodies
from mailvia.ingress.api.bodies import Batch, batch_body

CAPS = RequestCaps(messages=3, recipients=8)
RAW = base64.b64encode(
    b"From: Jane <jane@acme.test>\r\nTo: bob@example.com, carol@example.com\r\n"
    b"Subject: hello\r\n\r\nhi\r\n"
).decode()
ENVELOPE = {"mail_from": "jane@acme.test", "rcpt_to": ["bob@example.com"]}


def fields(**extra: Any) -> dict[str, Any]:
    return {"from": "jane@acme.test", "to": ["bob@example.com"], "text": "hi", **extra}


def batch(*messages: Any) -> bytes:
    return json.dumps({"messages": list(messages)}).encode()


VALID = [
    batch(fields()),
    batch(fields(), fields(cc=["c@example.com"], subject="é ✓ 😀")),
    json.dumps({"messages": [fields(subject="é")]}, ensure_ascii=False).encode(),
    batch({"raw": RAW, "envelope": ENVELOPE}),
    batch({"raw": RAW}, fields()),  # two recipients named in the raw message's header
    batch(fields(subject='say "messages"')),  # the key's text inside a value: read piecewise
    batch(fields(subject="messages")),
    batch(fields(headers={"X-A": "1"}, reply_to="r@example.com", html="<p>hi</p>")),
    b' \n{ "messages" : [ {"from": "jane@acme.test", "to": ["b@example.com"], "text": "x"} ] } \n',
    b'{"messages": [{"from": "jane@acme.test", "subject": "a", "subject": "b", "text": "x"}]}',
    b'{"messages": [{"\\u0066rom": "jane@acme.test", "text": "x"}]}',  # an escaped key
    b'{"messages": [{"from": "jane@acme.test", "text": "\\ud83d\\ude00 \\u00e9 \\/ \\n"}]}',
    batch(fields(text="a, " * 800)),  # more commas than read whole: read piecewise
]

REFUSED = [
    batch(fields(), fields(), fields(), fields()),  # 4 messages, caps 3
    batch(fields(to=[f"r{i}@example.com" for i in range(9)])),  # 9 recipients, caps 8
    batch(fields(to=["a@example.com"] * 5), fields(to=["b@example.com"] * 4)),
    batch(fields(to=["a@example.com"] * 7), {"raw": RAW}),  # over only with the raw's header
    batch({"raw": RAW}, {"raw": RAW}, {"raw": RAW}, fields(to=3)),
    batch(fields(to=3), fields(to=["a@example.com"] * 9)),  # invalid, then over a cap
    batch(fields(to=3)),
    batch(1, {"to": 3}),
    batch(fields(bogus=1)),
    batch(fields(text="a\x00b")),
    b'{"messages": [' + b",".join([b"{}"] * 1000) + b"]}",  # many small values: not parsed whole
    batch(),
    json.dumps({"messages": [fields()], "extra": 1}).encode(),
    b'{"messages": [{"from": "jane@acme.test", "text": "x"}], "messages": [{"text": "y"}]}',
    b'{"messages": [], "messages": [{"from": "jane@acme.test", "text": "x"}]}',
    b'{"messages": [{"from": "jane@acme.test", "text": "x"}], "m\\u0065ssages": []}',
    b'{"m\\u0065ssages": [{"from": "jane@acme.test", "text": "x"}], "messages": [1]}',
    b'{"m\\u0065ssages": [1], "messages": [{"from": "jane@acme.test", "text": "x"}]}',
    b'{"messages": [1], "\\u006Dessages": [{"from": "jane@acme.test", "text": "x"}]}',
    b'{"messages": 5, "messages": [{"from": "jane@acme.test", "text": "x"}]}',
    b'{"messages": [{"from": "jane@acme.test", "text": "\\ud800"}]}',  # a lone surrogate
    b'{"messages": [{"from": "jane@acme.test", "text": "a\tb"}]}',  # a raw control character
    b'{"messages": [{"from": "jane@acme.test", "text": NaN}]}',
    b'\xef\xbb\xbf{"messages": [{"from": "jane@acme.test", "text": "x"}]}',
    b'{"messages": [{"from": "jane@acme.test", "text": "x"}]} x',
    b'{"messages": [{"from": "jane@acme.test", "text": "\xff"}]}',
    b'{"messages": [{"from": "jane@acme.test", "text": "x"},]}',
    b'{"messages": [{"from": "jane@acme.test", "text": "x"}]',
    b'{"messages": {"from": "jane@acme.test"}}',
    b"[]",
    b"{}",
    b"",
    b"null",
]


def outcome(read: Any, raw: bytes) -> Any:
    try:
        found: Batch = read(raw, CAPS)
    except RequestValidationError as exc:
        return ("422", [_comparable(error) for error in exc.errors()])
    except MailviaError as exc:
        return (type(exc).__name__, str(exc))
    messages = [(m.model_dump(), m.model_fields_set) for m in found.body.messages]
    return ("batch", messages, found.recipients)


@pytest.mark.parametrize("raw", VALID + REFUSED, ids=lambda raw: raw[:60].decode(errors="replace"))
def test_read_whole_or_piecewise_the_outcome_is_the_same(raw: bytes) -> None:
    assert outcome(batch_body, raw) == outcome(bodies._piecewise, raw)


@pytest.mark.parametrize("raw", VALID)
def test_a_valid_batch_is_accepted(raw: bytes) -> None:
    assert outcome(batch_body, raw)[0] == "batch"


@pytest.mark.parametrize("raw", REFUSED)
def test_a_refused_batch_is_not_read_whole(raw: bytes) -> None:
    assert outcome(batch_body, raw)[0] != "batch"
    assert bodies._whole(raw, CAPS) is None


@pytest.mark.parametrize("raw", [VALID[0], VALID[1], VALID[3], VALID[4], VALID[8], VALID[9]])
def test_a_plain_valid_batch_is_read_whole(raw: bytes) -> None:
    whole = bodies._whole(raw, CAPS)
    assert whole is not None
    assert outcome(lambda _raw, _caps: whole, raw) == outcome(bodies._piecewise, raw)


def _comparable(error: dict[str, Any]) -> dict[str, Any]:
    """An error with its `ctx` exception as its type and text (exceptions compare by id)."""
    ctx = {k: repr(v) if isinstance(v, Exception) else v for k, v in error.get("ctx", {}).items()}
    return {**error, "ctx": ctx}


def test_a_body_of_many_small_values_is_not_parsed_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """More commas than the caps' messages may hold: the piecewise reading refuses it after
    one message past the cap, without the whole body parsed first."""

    def parse(raw: bytes) -> Any:
        raise AssertionError("parsed whole")

    monkeypatch.setattr(bodies.pydantic_core, "from_json", parse)
    raw = b'{"messages": [' + b",".join([b"{}"] * 1000) + b"]}"
    assert outcome(batch_body, raw) == ("RequestTooLarge", "a request may carry at most 3 messages")
    assert outcome(batch_body, VALID[-1])[0] == "batch"


@pytest.mark.parametrize(
    ("commas", "within"),
    [(0, True), (48, True), (49, True), (768, True), (769, False), (5000, False)],
)
def test_commas_are_held_to_the_cap_found_one_by_one_or_counted(commas: int, within: bool) -> None:
    """Up to 16 per message of the cap (3 here: 48) found one by one, past that counted:
    either way at most 256 per message (768) may be read whole."""
    raw = b'{"messages": [' + b"x," * commas + b"]}"
    assert bodies._commas_within(raw, CAPS) is within
    assert bodies._commas_within(bytearray(raw), CAPS) is within


@pytest.mark.parametrize(
    ("raw", "once"),
    [
        (b'{"messages": []}', True),
        (b'{"messages": ["a"]}   ', True),
        (b'{"messages": [], "messages": []}', False),
        (b'{"messages": ["messages"]}', False),  # as a value: not told apart, read piecewise
        (b'{"messages"messages"}', False),  # overlapping: `count` saw one, here two
        (b'{"m": []}', False),
        (b"", False),
    ],
)
def test_the_key_is_read_whole_only_when_it_occurs_once(raw: bytes, once: bool) -> None:
    assert bodies._once(raw) is once


@pytest.mark.parametrize("raw", VALID + REFUSED, ids=lambda raw: raw[:60].decode(errors="replace"))
def test_a_body_read_into_a_buffer_is_read_as_its_bytes(raw: bytes) -> None:
    """`receive_body` hands the route a bytearray: the same outcome as the bytes."""
    assert outcome(batch_body, bytearray(raw)) == outcome(batch_body, raw)


@pytest.mark.parametrize("name", ["to", "cc", "bcc", "rcpt_to"])
def test_every_list_of_recipients_counts_against_the_cap(name: str) -> None:
    nine = [f"r{i}@example.com" for i in range(9)]  # CAPS: 8 recipients
    if name == "rcpt_to":
        message = {"raw": RAW, "envelope": {**ENVELOPE, "rcpt_to": nine}}
    else:
        message = {**fields(), "to": [], name: nine}
    with pytest.raises(MailviaError, match="recipients"):
        batch_body(batch(message), CAPS)
    assert bodies._listed(message) == 9
