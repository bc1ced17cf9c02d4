"""A batch's answer written as JSON directly: `BatchOut`'s document, byte for byte, without a
payload dict per receipt.

A batch's receipts mostly differ only in their id and `queued_ahead`: what surrounds those
(the state, channel, envelope, forecast instant and warnings) is written once per distinct
value in an answer (pydantic-core's writer, as for the whole payload) and its bytes reused.
tests/unit/test_submit_answers.py compares the document with the model's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pydantic_core

from mailvia.domain.clock import to_iso
from mailvia.domain.errors import MailviaError
from mailvia.ingress.api.errors import problem_for
from mailvia.outbox.receipts import Receipt

_STATUS = {True: b'{"status":202,"receipt":{"id":', False: b'{"status":200,"receipt":{"id":'}
# A receipt's fields but its id and `queued_ahead`: the same bytes around them.
_Around = tuple[bytes, bytes]


def batch_answer(results: Sequence[Receipt | Exception]) -> bytes:
    """The JSON of `BatchOut` for these results, in order. Raises an Exception that is not a
    MailviaError (a fault, not a refusal: the whole request fails)."""
    known: dict[tuple[Any, ...], _Around] = {}
    entries = [_entry(result, known) for result in results]
    return b'{"data":[' + b",".join(entries) + b"]}"


def _entry(result: Receipt | Exception, known: dict[tuple[Any, ...], _Around]) -> bytes:
    if isinstance(result, Receipt):
        channel = result.channel
        key = (
            result.state, channel.id, channel.name, result.envelope, result.expected_at,
            result.warnings,
        )  # fmt: skip
        around = known.get(key)
        if around is None:
            around = known[key] = _around(result)
        ahead = b"null" if result.queued_ahead is None else b"%d" % result.queued_ahead
        before, after = around
        id_ = pydantic_core.to_json(result.id)
        return _STATUS[result.created] + id_ + before + ahead + after
    if not isinstance(result, MailviaError):
        raise result
    problem = problem_for(result)
    entry = {"status": problem.status, "receipt": None, "problem": problem.model_dump(mode="json")}
    return pydantic_core.to_json(entry)


def _around(receipt: Receipt) -> _Around:
    """The receipt's JSON between its id and its `queued_ahead`, and after that."""
    channel = {"id": receipt.channel.id, "name": receipt.channel.name}
    envelope = {"mail_from": receipt.envelope.mail_from, "rcpt_to": list(receipt.envelope.rcpt_to)}
    warnings = [{"code": w.code, "message": w.message} for w in receipt.warnings]
    json = pydantic_core.to_json
    return (
        b',"state":%b,"channel":%b,"envelope":%b,"forecast":{"expected_at":%b,"queued_ahead":'
        % (
            json(str(receipt.state)),
            json(channel),
            json(envelope),
            json(to_iso(receipt.expected_at)),
        ),
        b'},"warnings":%b},"problem":null}' % json(warnings),
    )
