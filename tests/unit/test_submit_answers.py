"""The submit routes write their answers from the payloads as they are (ingress/api/submit.py
`_json`), without validating them into the response models: every answer here is, byte for
byte, the JSON the model would write (`ReceiptOut` for a single POST, `BatchOut` for a
batch), with its status."""

from __future__ import annotations

from typing import Any

import pytest

from mailvia.domain.errors import Forbidden, InvalidInput, MailviaError, MessageTooLarge
from mailvia.domain.message import Envelope, State
from mailvia.ingress.api import submit
from mailvia.ingress.api.schemas import BatchOut
from mailvia.ingress.api.schemas import Receipt as ReceiptOut
from mailvia.ingress.payloads import receipt_payload
from mailvia.outbox.receipts import Receipt, Warning_
from support.smtp_client import relay_channel

CHANNEL = relay_channel(2525)
RECEIPTS = [
    Receipt("msg_1", State.QUEUED, CHANNEL, Envelope("a@example.test", ("b@example.net",)), True,
            1_800_000_000.123),
    Receipt("msg_2", State.HELD, relay_channel(25, id="ch-2", name="Relais é ✓ \"x\" 😀"),
            Envelope("", ("b@example.net", "c@example.net")), False, None,
            (Warning_("w1", "über <x> & \"y\""), Warning_("w2", "second")), 3),
]  # fmt: skip
REFUSALS: list[MailviaError] = [
    InvalidInput('to: not an address: "x" é'),
    MessageTooLarge("too large"),
    Forbidden("envelope mail_from: not yours"),
]


@pytest.mark.parametrize("receipt", RECEIPTS, ids=["created", "replayed-with-warnings"])
def test_a_single_posts_answer_is_the_models_json(receipt: Receipt) -> None:
    answer = submit._json(receipt_payload(receipt), 202 if receipt.created else 200)
    model = ReceiptOut.model_validate(receipt_payload(receipt))
    assert answer.body == model.model_dump_json().encode()
    assert answer.status_code == (202 if receipt.created else 200)
    assert answer.media_type == "application/json"


def test_a_batchs_answer_is_the_models_json() -> None:
    results: list[Receipt | Exception] = [RECEIPTS[0], REFUSALS[0], RECEIPTS[1], *REFUSALS[1:]]
    answer = submit._json({"data": [submit._result(r) for r in results]}, 200)
    data: list[dict[str, Any]] = []
    for result in results:
        if isinstance(result, Receipt):
            data.append(
                {"status": 202 if result.created else 200, "receipt": receipt_payload(result)}
            )
        else:
            problem = submit.problem_for(result)  # type: ignore[arg-type]
            data.append({"status": problem.status, "problem": problem})
    assert answer.body == BatchOut.model_validate({"data": data}).model_dump_json().encode()
    assert b'"problem":null' in answer.body and b'"receipt":null' in answer.body


def test_a_fault_in_a_batch_fails_the_request() -> None:
    with pytest.raises(RuntimeError):
        submit._result(RuntimeError("a fault"))
