"""A batch's answer written as JSON directly: `BatchOut`'s document, byte for byte, without a
payload dict per receipt.

A batch's receipts mostly share their state, channel, forecast instant and warnings: each of
those is written once per distinct value in an answer (pydantic-core's writer, as for the
whole payload) and its bytes reused; the envelope too, though its recipients mostly differ.
tests/unit/test_submit_answers.py compares the document with the model's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pydantic_core

from mailvia.domain.clock import to_iso
from mailvia.domain.errors import MailviaError
from mailvia.domain.message import Envelope
from mailvia.ingress.api.errors import problem_for
from mailvia.outbox.receipts import Receipt

_STATUS = {True: b'{"status":202,"receipt":{"id":', False: b'{"status":200,"receipt":{"id":'}


class _Pieces:
    """One answer's written pieces by the values they are written from: the state and channel,
    the envelope (its recipients differ from message to message in most batches), the
    forecast's instant and the warnings. New for each answer: nothing is kept between
    requests."""

    def __init__(self) -> None:
        self.heads: dict[tuple[Any, ...], bytes] = {}
        self.envelopes: dict[Envelope, bytes] = {}
        self.tails: dict[tuple[Any, ...], tuple[bytes, bytes]] = {}

    def receipt(self, result: Receipt) -> bytes:
        channel = result.channel
        shown = (result.state, channel.id, channel.name)
        head = self.heads.get(shown)
        if head is None:
            head = self.heads[shown] = _head(result)
        envelope = self.envelopes.get(result.envelope)
        if envelope is None:
            envelope = self.envelopes[result.envelope] = _envelope(result.envelope)
        told = (result.expected_at, result.warnings)
        tail = self.tails.get(told)
        if tail is None:
            tail = self.tails[told] = _tail(result)
        forecast, warnings = tail
        ahead = b"null" if result.queued_ahead is None else b"%d" % int(result.queued_ahead)
        id_ = pydantic_core.to_json(result.id)
        return _STATUS[result.created] + id_ + head + envelope + forecast + ahead + warnings


def batch_answer(results: Sequence[Receipt | Exception]) -> bytes:
    """The JSON of `BatchOut` for these results, in order. Raises an Exception that is not a
    MailviaError (a fault, not a refusal: the whole request fails)."""
    pieces = _Pieces()
    entries = [_entry(result, pieces) for result in results]
    return b'{"data":[' + b",".join(entries) + b"]}"


def _entry(result: Receipt | Exception, pieces: _Pieces) -> bytes:
    if isinstance(result, Receipt):
        return pieces.receipt(result)
    if not isinstance(result, MailviaError):
        raise result
    problem = problem_for(result)
    entry = {"status": problem.status, "receipt": None, "problem": problem.model_dump(mode="json")}
    return pydantic_core.to_json(entry)


def _head(receipt: Receipt) -> bytes:
    """The receipt's JSON between its id and its envelope."""
    channel = {"id": receipt.channel.id, "name": receipt.channel.name}
    json = pydantic_core.to_json
    return b',"state":%b,"channel":%b,"envelope":' % (json(str(receipt.state)), json(channel))


def _envelope(envelope: Envelope) -> bytes:
    return pydantic_core.to_json(
        {"mail_from": envelope.mail_from, "rcpt_to": list(envelope.rcpt_to)}
    )


def _tail(receipt: Receipt) -> tuple[bytes, bytes]:
    """The receipt's JSON between its envelope and its `queued_ahead`, and after that."""
    json = pydantic_core.to_json
    warnings = [{"code": w.code, "message": w.message} for w in receipt.warnings]
    return (
        b',"forecast":{"expected_at":%b,"queued_ahead":' % json(to_iso(receipt.expected_at)),
        b'},"warnings":%b},"problem":null}' % json(warnings),
    )
