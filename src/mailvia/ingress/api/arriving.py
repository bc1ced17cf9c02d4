"""A batch's raw messages composed while its body is still arriving.

A batch of 1,000 messages is ~8 MB: the request thread used to wait for all of it before
composing the first message. While the event loop receives it, `Arriving.advance` (in a
worker thread, called again whenever the last call is done) reads what has come so far
(pydantic-core's JSON parser, taking a truncated text; re-read only once it has doubled, so
all the reading is at most twice the body) and composes each complete raw message in it
(`inspect_raw` and the envelope sender's check, as `intake.composed` does).

Nothing composed ahead is trusted: once the whole body is in, the batch is read and checked
as ever (`bodies.batch_body`: caps, schema, every error the same), then the token's recipient
limit, then `Arriving.take(index, message)` gives a message's composed result (or its
refusal) only when the message it was composed from is equal to the one read from the whole
body, fields set included; anything else is composed then, as before. Only raw messages are
composed ahead (a message given as fields takes the request's `now` for its Date).

The work done ahead is bounded as the whole reading bounds its own: no more messages than
the request's caps allow, no more recipients than its caps and than its token may submit
now (peeked, not taken), and it stops at the first message that does not fit the schema
(the batch will be refused). Between messages it yields the interpreter (`time.sleep(0)`),
so the event loop receiving the body is not held up for a switch interval.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pydantic_core
from pydantic import ValidationError

from mailvia.domain.errors import Forbidden, InvalidInput
from mailvia.domain.ratelimit import RequestCaps
from mailvia.domain.tenancy import User
from mailvia.ingress.api.bodies import listed_recipients, recipients_of
from mailvia.ingress.api.schemas import MessageIn
from mailvia.outbox.compose import Composed

log = logging.getLogger("mailvia.api")

# What composing a message refuses it for, from the message alone (kept: the same refusal).
# Any other error (the store's) is not kept: the message is composed again at its turn.
Refusal = InvalidInput | Forbidden
Made = Composed | Refusal
# Read what has arrived first once this much has (a few messages' worth).
_FIRST_READ = 64 * 1024


class Arriving:
    """A batch body being received (`add`, then `whole`) and its messages composed ahead
    (`advance`, `take`). `add` and `whole` are the event loop's; `advance` and `take` run in
    one worker thread at a time (the caller awaits each `advance` before the next)."""

    def __init__(
        self,
        compose: Callable[[MessageIn], Composed],
        *,
        senders: Callable[[User, str], None],
        caps: RequestCaps,
        recipients_left: Callable[[], float],
    ) -> None:
        self._compose = compose
        self.senders = senders  # the request's sender checks, shared by `compose` and its caller
        self._caps = caps
        self._left = recipients_left
        self._chunks: list[bytes] = []
        self._size = 0
        self._read_at = 0
        self._next = 0
        self._recipients = 0
        self._stopped = False
        self._made: dict[int, tuple[MessageIn, Made]] = {}

    def add(self, chunk: bytes) -> None:
        if chunk:
            self._chunks.append(chunk)
            self._size += len(chunk)

    def whole(self) -> bytes:
        return b"".join(self._chunks)

    @property
    def worth_advancing(self) -> bool:
        """Whether `advance` has anything to read: enough new bytes since its last reading."""
        return not self._stopped and self._size >= max(_FIRST_READ, 2 * self._read_at)

    def advance(self) -> None:
        """Compose the complete raw messages of what has arrived (never raises: anything
        unexpected stops the work ahead, and the whole body is read as ever)."""
        if not self.worth_advancing:
            return
        try:
            self._advance()
        except Exception:  # only ever work ahead: the whole reading decides
            log.debug("composing ahead stopped", exc_info=True)
            self._stopped = True

    def take(self, index: int, message: MessageIn) -> Composed | None:
        """The message's result composed ahead, or None (compose it now). Raises the
        InvalidInput or Forbidden composing it raised."""
        found = self._made.pop(index, None)
        if found is None:
            return None
        ahead, made = found
        if ahead != message or ahead.model_fields_set != message.model_fields_set:
            return None
        if isinstance(made, InvalidInput | Forbidden):
            raise made
        return made

    def _advance(self) -> None:
        chunks = self._chunks[: len(self._chunks)]
        text = b"".join(chunks)
        self._read_at = len(text)
        fields = pydantic_core.from_json(text, allow_partial=True)
        found = fields.get("messages") if isinstance(fields, dict) else None
        if not isinstance(found, list):
            return
        complete = found[:-1]  # all but the last are followed by a comma: whole
        while self._next < len(complete) and not self._stopped:
            self._one(self._next, complete[self._next])
            self._next += 1
            time.sleep(0)  # let the event loop take the interpreter: it receives the body

    def _one(self, index: int, value: Any) -> None:
        self._recipients += listed_recipients(value)
        if not self._fits(index):
            return
        try:
            message = MessageIn.model_validate(value)
        except ValidationError:
            self._stopped = True  # the batch will be refused as a whole
            return
        if message.raw is None:
            return
        if message.envelope is None:
            self._recipients += recipients_of(message)
            if not self._fits(index):
                return
        try:
            made: Made = self._compose(message)
        except (InvalidInput, Forbidden) as exc:
            made = exc
        self._made[index] = (message, made)

    def _fits(self, index: int) -> bool:
        caps = self._caps
        fits = (
            index < caps.messages
            and self._recipients <= caps.recipients
            and self._recipients <= self._left()
        )
        if not fits:
            self._stopped = True
        return fits
