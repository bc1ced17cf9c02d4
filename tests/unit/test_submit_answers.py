"""The submit routes write their answers without validating them into the response models
(ingress/api/submit.py `_json` from a single POST's payload; a batch's directly, answers.py):
every answer here is, byte for byte, the JSON the model would write (`ReceiptOut` for a
single POST, `BatchOut` for a batch), with its status."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from mailvia.domain.errors import Forbidden, InvalidInput, MailviaError, MessageTooLarge
from mailvia.domain.message import Envelope, State
from mailvia.ingress.api import answers, submit
from mailvia.ingress.api.errors import problem_for
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
    # Values shared between receipts are written once per answer: the same channel,
    # envelope, instant and warnings again, and each of them once changed.
    again = [
        replace(RECEIPTS[0], id="msg_3", queued_ahead=7),
        replace(RECEIPTS[1], id="msg_4", state=State.QUEUED, created=True),
        replace(RECEIPTS[0], id="msg_5", channel=RECEIPTS[1].channel, expected_at=None),
        replace(RECEIPTS[1], id="msg_6", envelope=RECEIPTS[0].envelope, warnings=()),
        replace(RECEIPTS[0], id="msg_7", expected_at=1_800_000_001.5, created=False),
        replace(RECEIPTS[1], id="msg_8", warnings=RECEIPTS[1].warnings[:1]),
        replace(RECEIPTS[0], id="msg_9", envelope=Envelope("x@example.test", ("y@example.net",))),
        replace(RECEIPTS[0], id="msg_10", channel=replace(CHANNEL, name="renamed")),
    ]
    results: list[Receipt | Exception] = [
        RECEIPTS[0], REFUSALS[0], RECEIPTS[1], *again, *REFUSALS[1:], RECEIPTS[0]
    ]  # fmt: skip
    answer = answers.batch_answer(results)
    data: list[dict[str, Any]] = []
    for result in results:
        if isinstance(result, Receipt):
            data.append(
                {"status": 202 if result.created else 200, "receipt": receipt_payload(result)}
            )
        else:
            problem = problem_for(result)  # type: ignore[arg-type]
            data.append({"status": problem.status, "problem": problem})
    assert answer == BatchOut.model_validate({"data": data}).model_dump_json().encode()
    assert b'"problem":null' in answer and b'"receipt":null' in answer


def test_a_fault_in_a_batch_fails_the_request() -> None:
    with pytest.raises(RuntimeError):
        answers.batch_answer([RECEIPTS[0], RuntimeError("a fault")])


_SPECIAL = ['"', "\\", "\u2028", "</script>", "\x00", "\x1f", "\x7f", "é", "😀", "\ufeff"]


def _receipts() -> Any:
    from hypothesis import strategies as st

    text = st.lists(st.one_of(st.text(max_size=4), st.sampled_from(_SPECIAL)), max_size=4)
    words = st.one_of(text.map("".join), st.sampled_from(["a", "b", 'x"y']))
    return st.builds(
        Receipt,
        words,
        st.sampled_from(list(State)),
        st.builds(lambda i, n: relay_channel(25, id=i, name=n), words, words),
        st.builds(lambda f, r: Envelope(f, tuple(r)), words, st.lists(words, max_size=3)),
        st.booleans(),
        st.one_of(st.none(), st.floats(min_value=0, max_value=2.5e11)),
        st.lists(st.builds(Warning_, words, words), max_size=2).map(tuple),
        st.one_of(st.none(), st.integers(min_value=0, max_value=2**40)),
    )


def test_any_batchs_answer_is_the_models_json() -> None:
    """Random receipts and refusals, with special characters, some sharing each value (the
    pieces written once per answer) and some not: the model's JSON each time."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    refusal = st.builds(InvalidInput, st.text(max_size=8))
    items = st.lists(st.one_of(_receipts(), refusal), max_size=6)

    @settings(max_examples=150, deadline=None, derandomize=True)
    @given(items, st.lists(st.tuples(st.integers(0, 5), st.text(max_size=3)), max_size=6))
    def check(base: list[Receipt | Exception], again: list[tuple[int, str]]) -> None:
        results = list(base)
        for k, id_ in again:  # the same values under another id: pieces reused
            if base and isinstance(item := base[k % len(base)], Receipt):
                results.append(replace(item, id=id_, queued_ahead=k))
        model = BatchOut.model_validate({"data": [_model_entry(r) for r in results]})
        assert answers.batch_answer(results) == model.model_dump_json().encode()

    check()


def _model_entry(result: Receipt | Exception) -> dict[str, Any]:
    if isinstance(result, Receipt):
        return {"status": 202 if result.created else 200, "receipt": receipt_payload(result)}
    assert isinstance(result, MailviaError)
    return {"status": problem_for(result).status, "problem": problem_for(result)}
