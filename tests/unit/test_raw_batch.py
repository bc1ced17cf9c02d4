"""A batch of raw messages read without its models (ingress/api/raw_batch.py, through
`bodies.batch_messages`) means what the models' reading means: the same bytes and
envelope for each message as composing its `MessageIn` would take, the same recipients, or
the models' reading's own answer (the same batch or the same error) for anything it does
not take; on generated batches near its shape and on the edges of each rule."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mailvia.domain.errors import MailviaError
from mailvia.domain.message import Envelope
from mailvia.domain.ratelimit import RequestCaps
from mailvia.ingress.api import base64s, bodies, intake, raw_batch
from mailvia.ingress.api.bodies import Batch, batch_body, batch_messages
from mailvia.ingress.api.raw_batch import RawBatch, RawIn
from mailvia.ingress.api.schemas import BatchIn, MessageIn

CAPS = RequestCaps(messages=3, recipients=4)
MESSAGE = b"From: Jane <jane@acme.test>\r\nTo: bob@example.com, carol@example.com\r\n\r\nhi\r\n"
RAW = base64.b64encode(MESSAGE).decode()
ENVELOPE = {"mail_from": "jane@acme.test", "rcpt_to": ["bob@example.com"]}


def meaning(read: Any, raw: bytes) -> Any:
    """What a reading of `raw` gives, as composing would take it: a raw message (of fields
    raw and envelope only, whose base64 decodes) as its bytes and Envelope, any other message
    as its model's fields; or the error."""
    try:
        found: Batch | RawBatch = read(raw)
    except RequestValidationError as exc:
        return ("422", repr(exc.errors()))
    except MailviaError as exc:
        return (type(exc).__name__, str(exc))
    return ("batch", [_meant(m) for m in found.messages], found.recipients)


def _meant(message: Any) -> Any:
    if isinstance(message, RawIn):
        return ("raw", message.content, message.envelope)
    if message.raw is not None and not message.model_fields_set & intake._FIELD_MODE:
        try:
            content = base64s.decode(message.raw)
        except ValueError:
            return ("model", message.model_dump())
        given = message.envelope
        envelope = Envelope(given.mail_from, tuple(given.rcpt_to)) if given else None
        return ("raw", content, envelope)
    return ("model", message.model_dump(), message.model_fields_set)


def fast(raw: bytes) -> Batch | RawBatch:
    return batch_messages(raw, CAPS)


def models(raw: bytes) -> Batch:
    return batch_body(raw, CAPS)


def batch(*messages: Any, **top: Any) -> bytes:
    return json.dumps({"messages": list(messages), **top}).encode()


EDGES = [
    batch({"raw": RAW, "envelope": ENVELOPE}),
    batch({"raw": RAW}),  # two recipients from its header
    batch({"raw": RAW, "envelope": None}),
    batch({"raw": RAW}, {"raw": RAW}, {"raw": RAW, "envelope": ENVELOPE}),  # 5 recipients: over
    batch(*[{"raw": RAW, "envelope": ENVELOPE}] * 4),  # 4 messages: over
    batch(),
    batch({"raw": RAW}, extra=1),
    batch({"raw": RAW, "subject": "x"}),
    batch({"raw": RAW, "to": []}),
    batch({"raw": None}),
    batch({"raw": 5}),
    batch({"raw": "not base64!"}),
    batch({"raw": "QQ"}),  # unpadded
    batch({"raw": "QR=="}),  # bits past the last byte
    batch({"raw": ""}),
    batch({"raw": RAW + "\n"}),
    batch({"raw": RAW, "envelope": {**ENVELOPE, "x": 1}}),
    batch({"raw": RAW, "envelope": {"mail_from": "a@example.com"}}),
    batch({"raw": RAW, "envelope": {**ENVELOPE, "rcpt_to": []}}),
    batch({"raw": RAW, "envelope": {**ENVELOPE, "rcpt_to": "bob@example.com"}}),
    batch({"raw": RAW, "envelope": {**ENVELOPE, "rcpt_to": ["b@example.com", 5]}}),
    batch({"raw": RAW, "envelope": {**ENVELOPE, "mail_from": ""}}),
    batch({"raw": RAW, "envelope": {**ENVELOPE, "mail_from": "x" * 998}}),
    batch({"raw": RAW, "envelope": {**ENVELOPE, "mail_from": "x" * 999}}),
    batch({"raw": RAW, "envelope": {**ENVELOPE, "rcpt_to": ["é" * 998]}}),
    batch({"raw": RAW, "envelope": {**ENVELOPE, "rcpt_to": ["é" * 999]}}),
    batch({"raw": RAW, "envelope": {**ENVELOPE, "mail_from": "a\0b"}}),
    batch({"raw": RAW, "envelope": {**ENVELOPE, "rcpt_to": ["\ud800@example.com"]}}),
    batch({"raw": RAW, "envelope": {**ENVELOPE, "mail_from": None}}),
    batch({"raw": RAW, "envelope": []}),
    b'{"messages": [{"raw": "QQ==", "raw": "' + RAW.encode() + b'"}]}',  # the last one
    b'{"messages": [{"raw": "' + RAW.encode() + b'", "envelope": {"mail_from": "a@x", '
    b'"rcpt_to": ["b@x"], "rcpt_to": ["c@x", "d@x"]}}]}',
    batch(1),
    batch([{"raw": RAW}]),
]


@pytest.mark.parametrize("raw", EDGES, ids=lambda raw: raw[:70].decode(errors="replace"))
def test_read_without_models_means_what_the_models_mean(raw: bytes) -> None:
    assert meaning(fast, raw) == meaning(models, raw)


@pytest.mark.parametrize("raw", [EDGES[i] for i in (0, 1, 2, 21, 22, 24, 30, 31)])
def test_a_valid_raw_batch_is_read_without_models(raw: bytes) -> None:
    found = fast(raw)
    assert isinstance(found, RawBatch) and not hasattr(found, "body")  # no models to hash
    assert found.messages and all(isinstance(m, RawIn) for m in found.messages)
    assert not any(isinstance(m, RawIn) for m in models(raw).messages)


def test_a_batch_the_models_must_read_is_read_by_them() -> None:
    """Valid, but with a field beside raw, or base64 that does not decode (the message's own
    refusal, later): the models read it."""
    for raw in (EDGES[7], EDGES[8], EDGES[11]):
        found = fast(raw)
        assert isinstance(found, Batch) and found.body.messages == found.messages
    assert raw_batch.read({"messages": [{"raw": RAW}]}, CAPS) is not None


_ADDRESSES = st.one_of(
    st.sampled_from(["a@example.com", "", "x" * 998, "x" * 999, "a\0b", "\ud800", "é@x"]),
    st.text(max_size=4),
    st.integers(0, 3),
    st.none(),
)
_ENVELOPES = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {
            "mail_from": _ADDRESSES,
            "rcpt_to": st.one_of(st.lists(_ADDRESSES, max_size=3), _ADDRESSES),
        },
        optional={"x": st.integers(0, 1)},
    ),
    st.fixed_dictionaries({}, optional={"mail_from": _ADDRESSES, "rcpt_to": st.just(["b@x"])}),
    st.lists(st.integers(0, 1), max_size=1),
)
_RAWS = st.one_of(
    st.just(RAW),
    st.sampled_from(
        [base64.b64encode(m).decode() for m in (b"", b"x", b"To: a@x, b@x\r\n\r\n", b"\xff\0")]
    ),
    st.text(alphabet="QRAB+/=\n -_", max_size=9),
    st.integers(0, 1),
    st.none(),
)
_MESSAGES = st.one_of(
    st.fixed_dictionaries(
        {"raw": _RAWS},
        optional={
            "envelope": _ENVELOPES,
            "subject": st.just("s"),
            "to": st.just(["t@x"]),
            "bogus": st.just(1),
        },
    ),
    st.fixed_dictionaries({}, optional={"envelope": _ENVELOPES}),
    st.integers(0, 1),
)
_BATCHES = st.fixed_dictionaries(
    {"messages": st.one_of(st.lists(_MESSAGES, max_size=4), _MESSAGES)},
    optional={"x": st.just(1)},
)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(_BATCHES, st.booleans())
def test_generated_batches_read_without_models_mean_what_the_models_mean(
    value: Any, ascii_only: bool
) -> None:
    raw = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    assert meaning(fast, raw) == meaning(models, raw)
    assert meaning(models, raw) == meaning(lambda r: bodies._piecewise(r, CAPS), raw)


def test_more_messages_than_the_schema_takes_are_the_models_answer_under_a_larger_cap() -> None:
    caps = RequestCaps(messages=2000, recipients=5000)
    raw = batch(*[{"raw": RAW, "envelope": ENVELOPE}] * 1001)
    read = meaning(lambda r: batch_messages(r, caps), raw)
    assert read == meaning(lambda r: batch_body(r, caps), raw)
    assert read[0] == "422"


@settings(max_examples=400, deadline=None, derandomize=True)
@given(_BATCHES)
@example({"messages": [{"raw": RAW, "envelope": {"mail_from": "\ud800", "rcpt_to": ["b@x"]}}]})
@example({"messages": [{"raw": RAW, "envelope": {"mail_from": "", "rcpt_to": ["b@x\udfff"]}}]})
def test_what_read_takes_the_models_take_alike(value: Any) -> None:
    """On the parsed values themselves (a lone surrogate here reaches it, where the JSON
    parser refuses one before): whatever `read` takes, the models validate, to the same
    bytes, envelopes and recipients."""
    read = raw_batch.read(value, RequestCaps(messages=10, recipients=50))
    if read is None:
        return
    body = BatchIn.model_validate(value)
    assert [_meant(m) for m in body.messages] == [_meant(m) for m in read.messages]
    assert read.recipients == sum(bodies.recipients_of(m) for m in body.messages)


def test_no_message_is_decoded_before_every_message_is_found_raw(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch of raw messages with one of fields last goes to the models without its raw
    ones decoded first (they would be decoded twice)."""

    def decode(text: str) -> bytes:
        raise AssertionError("decoded")

    monkeypatch.setattr(base64s, "decode", decode)
    value = {"messages": [{"raw": RAW}, {"raw": RAW, "envelope": ENVELOPE}, {"from": "a@x"}]}
    assert raw_batch.read(value, CAPS) is None


# Generated batches that are mostly valid raw batches, under caps that hide none of the
# schema's bounds (review of branch batch4): addresses of any text, lengths around the
# bounds, CR/LF, case, duplicates, 1-4 recipients; the differential reading catches a rule
# the fast path would read apart from the schema (order, duplicates, a type, a bound).
BIG = RequestCaps(messages=1000, recipients=1_000_000)


def same(raw: bytes, caps: RequestCaps = BIG) -> tuple[Any, Any]:
    return meaning(lambda r: batch_messages(r, caps), raw), meaning(
        lambda r: batch_body(r, caps), raw
    )


def body(*messages: Any) -> bytes:
    return json.dumps({"messages": list(messages)}, ensure_ascii=False).encode()


@pytest.mark.parametrize("n", [999, 1000, 1001])
def test_rcpt_to_bounds_under_a_cap_that_allows_them(n: int) -> None:
    envelope = {"mail_from": "a@x", "rcpt_to": [f"r{i}@x" for i in range(n)]}
    fast_read, models_read = same(body({"raw": RAW, "envelope": envelope}))
    assert fast_read == models_read
    assert fast_read[0] == ("batch" if n <= 1000 else "422")


@pytest.mark.parametrize("n", [1000, 1001])
def test_messages_bounds_under_a_cap_that_allows_them(n: int) -> None:
    caps = RequestCaps(messages=2000, recipients=1_000_000)
    fast_read, models_read = same(body(*[{"raw": RAW}] * n), caps)
    assert fast_read == models_read
    assert fast_read[0] == ("batch" if n <= 1000 else "422")


_ADDR = st.one_of(
    st.text(max_size=12),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=990, max_size=1000),
    st.text(alphabet="aAbB@.\r\n \t", max_size=8),
    st.sampled_from(["", "Bob@Example.COM", "bob@example.com", "x" * 320, "x" * 321]),
)
_ENV = st.fixed_dictionaries(
    {"mail_from": _ADDR, "rcpt_to": st.lists(_ADDR, min_size=1, max_size=4)}
)
_MSG = st.fixed_dictionaries(
    {"raw": st.sampled_from([RAW, base64.b64encode(b"To: a@x\r\n\r\n").decode(), ""])},
    optional={"envelope": st.one_of(st.none(), _ENV)},
)


@settings(max_examples=500, deadline=None, derandomize=True)
@given(st.lists(_MSG, min_size=1, max_size=4))
def test_generated_valid_batches_read_without_models_mean_what_the_models_mean(
    messages: list[Any],
) -> None:
    try:
        raw = body(*messages)
    except UnicodeEncodeError:
        return  # a lone surrogate: not JSON text
    fast_read, models_read = same(raw)
    assert fast_read == models_read


@pytest.mark.parametrize(
    "envelope",
    [
        {"mail_from": "é", "rcpt_to": ["B@x"]},
        {"mail_from": "a@x", "rcpt_to": ["b@x", "a@x", "b@x"]},  # order and duplicates kept
        {"mail_from": "a@x", "rcpt_to": ["b@x\r\nRCPT TO:<evil@x>"]},
        {"mail_from": "a@x", "rcpt_to": "b@x"},
        {"mail_from": "a@x", "rcpt_to": [["b@x"]]},
        {"mail_from": "a@x", "rcpt_to": [True]},
        {"mail_from": True, "rcpt_to": ["b@x"]},
        {"mail_from": "a@x", "rcpt": ["b@x"]},
    ],
)
def test_envelope_shapes_under_a_cap_that_does_not_hide_them(envelope: Any) -> None:
    fast_read, models_read = same(body({"raw": RAW, "envelope": envelope}))
    assert fast_read == models_read


def test_a_valid_raw_batch_with_envelopes_reaches_the_fast_path() -> None:
    envelope = {"mail_from": "é", "rcpt_to": ["B@x", "b@x", "B@x"]}
    taken = batch_messages(body({"raw": RAW, "envelope": envelope}), BIG)
    assert isinstance(taken, RawBatch)
    assert taken.messages[0].envelope == Envelope("é", ("B@x", "b@x", "B@x"))


_COMPOSABLE = [
    b"From: jane@acme.test\r\nTo: bob@example.com\r\nMessage-ID: <1@x>\r\n\r\nhi\r\n",
    b"From: jane@acme.test\nTo: bob@example.com\nBcc: c@example.com\nMessage-ID: <1@x>\n\nhi\n",
    b"From: jane@acme.test\r\nTo: bob@example.com\r\nMessage-ID: <1@x>\r\n\r\n" + b"x" * 5000,
    b"From: jane@acme.test\r\nMessage-ID: <1@x>\r\n\r\n",
]


@pytest.mark.parametrize("content", _COMPOSABLE)
@pytest.mark.parametrize("envelope", [None, {"mail_from": "jane@acme.test", "rcpt_to": ["d@x.t"]}])
def test_a_raw_message_read_without_models_composes_as_its_model(
    content: bytes, envelope: Any
) -> None:
    value = {
        "raw": base64.b64encode(content).decode(),
        **({"envelope": envelope} if envelope else {}),
    }
    found = raw_batch.read({"messages": [value]}, BIG)
    assert found is not None

    def composed(message: Any) -> Any:
        try:
            return intake._compose(message, 0.0, 4000)
        except MailviaError as exc:
            return type(exc).__name__, str(exc)

    assert composed(found.messages[0]) == composed(MessageIn.model_validate(value))


def test_recipients_are_the_envelopes_else_the_header_fields_one_count_for_both_readings() -> None:
    """`raw_batch.recipients` counts for the fast path and for `bodies.recipients_of`."""
    value = batch({"raw": RAW}, {"raw": RAW, "envelope": ENVELOPE})
    assert fast(value).recipients == models(value).recipients == 2 + 1


def test_a_batch_with_a_message_of_fields_is_not_validated_as_raw(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch of fields messages (or one among raw ones) goes to the models without the
    adapter's refusal: ~1.4 ms per 1,000 messages (docs/benchmarks.md, branch batch4b)."""

    class Refusing:
        def validate_python(self, value: Any) -> Any:
            raise AssertionError("validated as a raw batch")

    monkeypatch.setattr(raw_batch, "_FIELDS", Refusing())
    for value in ([{"from": "a@x"}] * 3, [{"raw": RAW}, {"from": "a@x"}], [{"raw": RAW}, 1]):
        assert raw_batch.read({"messages": value}, CAPS) is None
