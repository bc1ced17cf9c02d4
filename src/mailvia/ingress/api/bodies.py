"""Message bodies of the API, read off the event loop and held to the request's caps.

FastAPI would parse and validate a body on the event loop before the token is even checked;
the submit routes take the bytes instead (after the token and its rate limit) and hand them
here, in a worker thread. A batch is counted against the caps (its messages, and the
recipients each one lists) before its messages are validated, so a request over a cap is
refused without validating all of it (a raw message's header recipients are counted once it
is valid).

A batch is first read whole (pydantic-core's JSON parser, then one validation of all its
messages): the common case, a valid batch within the caps, in two thirds of the time and
with fewer objects for the garbage collector (docs/benchmarks.md, branch `batch`). A batch
of raw messages only is read from the parsed JSON without its models when they are not
needed (`raw_batch.py`: no Idempotency-Key to hash them for; branch `batch4`). Anything
else (a cap exceeded, a field at fault, JSON that parser refuses, a `messages` key that may be
given twice) is read again one message at a time as before, and that reading gives the
answer: the same errors, in the same order, as ever.

Errors are FastAPI's: RequestValidationError (a 422 with the fields at fault; a 400 when the
JSON cannot be read), and RequestTooLarge (413) over a cap.
"""

from __future__ import annotations

import binascii
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pydantic_core
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from mailvia.domain.ratelimit import RequestCaps
from mailvia.ingress.api import raw_batch
from mailvia.ingress.api.media import check_json
from mailvia.ingress.api.raw_batch import RawBatch
from mailvia.ingress.api.schemas import BatchIn, MessageIn

_BLANKS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
# A `\u` escape of a character from U+0060 to U+007F: the only way a JSON key other than
# the literal `"messages"` can say `messages` (its letters are U+0061-U+0073).
_LETTER_ESCAPE = re.compile(rb"\\u00[67]")
# Commas a batch read whole may hold per message of its cap (text fields hold theirs): any
# JSON value but the first of an array or object follows one, so this bounds what the
# whole reading parses before it counts the messages (a body of many small values would
# take seconds); a batch over it is read piecewise, refused after one message past a cap.
_COMMAS_PER_MESSAGE = 256
# Up to this many commas per message of the cap are found one by one (`bytes.find`, memchr:
# a batch of raw messages holds a few per message, and its 8 MB are passed in 0.6 ms);
# past it they are counted in one pass (`bytes.count`, 2.5 ms for 8 MB, whatever they are).
_COMMAS_FOUND = 16
_KEY = b'"messages"'
_LISTS = ("to", "cc", "bcc")


# A request's body: bytes, or the bytearray `receive_body` fills (neither is changed once read).
Body = bytes | bytearray


async def receive_body(request: Request) -> Body:
    """The request's body, each part appended as it arrives to one buffer (held to the body
    limit by the BodyLimit middleware), each part freed once copied: without Starlette's list
    of all the parts and their join, which for a batch of 8 MB cost serve's event loop ~8 ms
    of page faults per batch (the heap grown for the list, then given back; docs/benchmarks.md,
    branch `batch`, issue 15). Raises ClientDisconnect, BodyTooLarge."""
    buffer = bytearray()
    async for part in request.stream():
        buffer += part
    return buffer


async def read_body(request: Request) -> bytes:
    """The request's body (held to the body limit by the BodyLimit middleware). Raises
    UnsupportedMediaType when it is declared as something other than JSON."""
    check_json(request.headers.get("content-type"))
    return await request.body()


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI `requestBody` of a route that reads `model` itself (`openapi_extra`)."""
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def message_body(raw: Body) -> MessageIn:
    """One message. Raises RequestValidationError."""
    try:
        return MessageIn.model_validate_json(raw)
    except ValidationError as exc:
        raise _invalid(exc.errors(), ("body",)) from None


def recipients_of(message: MessageIn) -> int:
    """How many recipients a valid message names: To, Cc and Bcc, or its raw envelope's (a
    raw message without one: its header fields' addresses, read without checking them)."""
    if message.raw is None:
        return len(message.to) + len(message.cc) + len(message.bcc)
    try:
        return raw_batch.recipients(raw_batch.model_raw_in(message))
    except (binascii.Error, ValueError):
        return 1  # refused later, with its own error


@dataclass(frozen=True)
class Batch:
    """A batch read and validated as models, and the recipients its messages name in all."""

    body: BatchIn
    recipients: int

    @property
    def messages(self) -> list[MessageIn]:
        return self.body.messages


@dataclass(frozen=True, slots=True)
class _Parsed:
    """A body's parsed JSON, when it may be read whole."""

    fields: Any


def batch_body(raw: Body, caps: RequestCaps) -> Batch:
    """A batch as models, counted against `caps` before its messages are validated. Raises
    RequestTooLarge over a cap, RequestValidationError."""
    return _whole(raw, caps) or _piecewise(raw, caps)


def batch_messages(raw: Body, caps: RequestCaps) -> Batch | RawBatch:
    """A batch, as `batch_body` reads it, or a batch of raw messages only read without its
    models (`raw_batch.py`: for a caller that does not need them, as an Idempotency-Key
    does). Raises RequestTooLarge over a cap, RequestValidationError."""
    parsed = _parsed(raw, caps)
    if parsed is not None and (read := raw_batch.read(parsed.fields, caps)) is not None:
        return read
    return _validated(parsed, caps) or _piecewise(raw, caps)


def _parsed(raw: Body, caps: RequestCaps) -> _Parsed | None:
    """The body's JSON parsed by pydantic-core, if it may be read whole; None for anything
    else (`_piecewise` then reads it and gives the answer). Where pydantic-core's parser
    takes a text, it reads it as the standard library's does (duplicate keys: the last one;
    tests/unit/test_batch_body.py); only a `messages` given twice is told apart, by the
    piecewise reading: a body that may hold it twice is not read whole, nor one with more
    commas than its cap's messages may hold (`_COMMAS_PER_MESSAGE`)."""
    if not _once(raw) or (b"\\" in raw and _LETTER_ESCAPE.search(raw)):
        return None
    if not _commas_within(raw, caps):
        return None
    try:
        return _Parsed(pydantic_core.from_json(raw))
    except ValueError:
        return None


def _whole(raw: Body, caps: RequestCaps) -> Batch | None:
    """A valid batch within the caps, read and validated in one pass each; None for anything
    else (`_piecewise` then reads it and gives the answer)."""
    return _validated(_parsed(raw, caps), caps)


def _validated(parsed: _Parsed | None, caps: RequestCaps) -> Batch | None:
    """The parsed batch, if valid within the caps, validated in one pass; else None."""
    if parsed is None:
        return None
    fields = parsed.fields
    found = fields.get("messages") if isinstance(fields, dict) else None
    if not isinstance(found, list) or len(found) > caps.messages:
        return None
    recipients = sum(_listed(value) for value in found)
    if recipients > caps.recipients:
        return None
    try:
        body = BatchIn.model_validate(fields)
    except ValidationError:
        return None
    recipients += sum(
        recipients_of(message)
        for message in body.messages
        if message.raw is not None and message.envelope is None
    )
    if recipients > caps.recipients:
        return None
    return Batch(body, recipients)


def _once(raw: Body) -> bool:
    """Whether `"messages"` occurs in `raw` exactly once: its first occurrence is its last
    (the first is found at the start of a batch; `rfind` passes the rest three times as fast
    as `count`)."""
    first = raw.find(_KEY)
    return first >= 0 and raw.rfind(_KEY) == first


def _commas_within(raw: Body, caps: RequestCaps) -> bool:
    """Whether `raw` holds at most `_COMMAS_PER_MESSAGE` commas per message of the cap."""
    found = raw.find(b",")
    for _ in range(_COMMAS_FOUND * caps.messages):
        if found < 0:
            return True
        found = raw.find(b",", found + 1)
    return raw.count(b",") <= _COMMAS_PER_MESSAGE * caps.messages


def _piecewise(raw: Body, caps: RequestCaps) -> Batch:
    """A batch read one message at a time and counted against `caps` as it goes, so a
    request over a cap is refused after at most one message past it. Raises
    RequestTooLarge, RequestValidationError."""
    counted = _Counted(caps)
    try:
        fields = _Json(raw).batch(counted.message)
    except json.JSONDecodeError as exc:
        error = {"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error"}
        raise RequestValidationError([{**error, "input": {}, "ctx": {"error": exc.msg}}]) from None
    if counted.errors:
        raise RequestValidationError(counted.errors)
    try:
        return Batch(BatchIn.model_validate(fields), counted.recipients)
    except ValidationError as exc:
        raise _invalid(exc.errors(), ("body",)) from None


class _Counted:
    """Validates each message of a batch as it is read, after counting it against the caps
    (before its validation, from the lists it gives; after, from a raw message's headers)."""

    def __init__(self, caps: RequestCaps) -> None:
        self.caps = caps
        self.messages = 0
        self.recipients = 0
        self.errors: list[dict[str, Any]] = []

    def message(self, index: int, value: Any) -> Any:
        self.messages += 1
        self.recipients += _listed(value)
        self.caps.check(messages=self.messages, recipients=self.recipients)
        try:
            message = MessageIn.model_validate(value)
        except ValidationError as exc:
            self.errors += _invalid(exc.errors(), ("body", "messages", index)).errors()
            return value
        if message.raw is not None and message.envelope is None:
            self.recipients += recipients_of(message)
            self.caps.check(messages=self.messages, recipients=self.recipients)
        return message


def _listed(value: Any) -> int:
    """The recipients a message's JSON lists (to, cc, bcc, envelope.rcpt_to), unchecked."""
    if not isinstance(value, dict):
        return 0
    listed = 0
    for name in _LISTS:
        if name in value and isinstance(found := value[name], list):
            listed += len(found)
    envelope = value.get("envelope")
    if isinstance(envelope, dict) and isinstance(found := envelope.get("rcpt_to"), list):
        listed += len(found)
    return listed


def _invalid(errors: Any, prefix: tuple[Any, ...]) -> RequestValidationError:
    return RequestValidationError(
        [{**error, "loc": (*prefix, *error.get("loc", ()))} for error in errors]
    )


class _Json:
    """A JSON text read piece by piece (the standard library's decoder for each value)."""

    def __init__(self, raw: Body) -> None:
        try:
            self.text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise json.JSONDecodeError("not UTF-8", "", exc.start) from None
        self.at = 0

    def batch(self, message: Callable[[int, Any], Any]) -> Any:
        """The top-level value; the `messages` array of an object is read one element at a
        time through `message(index, value)`, which returns what to keep."""
        if not self._take("{"):
            return self._value_to_end()
        found: dict[str, Any] = {}
        if not self._take("}"):
            for key in self._keys():
                if key == "messages" and self._peek("["):
                    if key in found:
                        raise RequestValidationError(
                            [_error(("body", "messages"), "messages: given twice")]
                        )
                    found[key] = list(self._elements(message))
                else:
                    found[key] = self._value()
        self._end()
        return found

    def _keys(self) -> Iterator[str]:
        while True:
            self._skip()
            if not self._peek('"'):
                raise json.JSONDecodeError("Expecting property name", self.text, self.at)
            key, self.at = json.decoder.scanstring(self.text, self.at + 1)  # type: ignore[attr-defined]
            self._expect(":")
            yield key
            if self._take("}"):
                return
            self._expect(",")

    def _elements(self, message: Callable[[int, Any], Any]) -> Iterator[Any]:
        self._expect("[")
        if self._take("]"):
            return
        index = 0
        while True:
            yield message(index, self._value())
            index += 1
            if self._take("]"):
                return
            self._expect(",")

    def _value(self) -> Any:
        self._skip()
        try:
            value, self.at = _DECODER.raw_decode(self.text, self.at)
        except json.JSONDecodeError:
            raise
        except ValueError:  # a number of more digits than int() converts (4,300)
            reason = "a number with too many digits"
            raise json.JSONDecodeError(reason, self.text, self.at) from None
        except RecursionError:  # arrays or objects nested deeper than the decoder goes
            raise json.JSONDecodeError("nested too deeply", self.text, self.at) from None
        return value

    def _value_to_end(self) -> Any:
        value = self._value()
        self._end()
        return value

    def _end(self) -> None:
        self._skip()
        if self.at != len(self.text):
            raise json.JSONDecodeError("Extra data", self.text, self.at)

    def _skip(self) -> None:
        found = _BLANKS.match(self.text, self.at)
        assert found is not None  # matches the empty string
        self.at = found.end()

    def _peek(self, char: str) -> bool:
        self._skip()
        return self.text.startswith(char, self.at)

    def _take(self, char: str) -> bool:
        if self._peek(char):
            self.at += 1
            return True
        return False

    def _expect(self, char: str) -> None:
        if not self._take(char):
            raise json.JSONDecodeError(f"Expecting {char!r}", self.text, self.at)


def _error(loc: tuple[Any, ...], message: str) -> dict[str, Any]:
    return {"type": "value_error", "loc": loc, "msg": message, "input": None}
