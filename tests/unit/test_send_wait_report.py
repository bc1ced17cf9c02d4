"""`send --wait`'s last words (ingress/cli/mail.py `_report`) over a fake outbox: each message
that nothing delivers says why (exit 6), and each still on its way when the timeout ran out
says so, also beside a stuck one."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from mailvia.domain.message import Envelope, State
from mailvia.domain.replies import Reply
from mailvia.domain.waiting import Waiting
from mailvia.ingress.cli.mail import NOTHING_DELIVERS, _report
from mailvia.outbox.records import MessageView, RecipientView


def view(message_id: str, state: State, reply: Reply | None = None) -> MessageView:
    return MessageView(
        id=message_id,
        organization_id="org",
        user_id="jane",
        channel_id="box",
        state=state,
        envelope=Envelope("jane@acme.test", ("bob@example.com",)),
        size=100,
        created_at=0.0,
        expires_at=86400.0,
        next_attempt_at=None,
        possible_duplicate=False,
        recipients=(RecipientView("bob@example.com", state, reply, 0.0),),
    )


def services(*views: MessageView, why: dict[str, Waiting]) -> Any:
    found = {v.id: v for v in views}
    return SimpleNamespace(
        messages=SimpleNamespace(for_operator=found.__getitem__),
        backlog=SimpleNamespace(waiting=lambda v, _now: why[v.id], channels_of=lambda _views: {}),
    )


def receipt(message_id: str) -> Any:
    return SimpleNamespace(id=message_id, warnings=())


def test_a_message_that_timed_out_says_so_beside_one_that_nothing_delivers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The stuck message made `_report` return before the timeout's lines: the deferred one
    said nothing more than its state, which reads as given up (and sent again)."""
    held = view("msg_held", State.HELD)
    deferred = view("msg_deferred", State.DEFERRED, Reply(451, "4.3.0", "busy right now"))
    why = {
        "msg_held": Waiting("On hold: channel box is disconnected.", stuck=True),
        "msg_deferred": Waiting("Not delivered yet: the last reply was ...", stuck=False),
    }
    code = _report(
        services(held, deferred, why=why),
        [receipt("msg_held"), receipt("msg_deferred")],
        wait=True,
        timeout=0,
        as_json=False,
    )
    assert code == NOTHING_DELIVERS
    lines = capsys.readouterr().err.splitlines()
    assert "mailvia: msg_held is not being delivered: On hold: channel box is" in "\n".join(lines)
    assert any(
        "stopped waiting after 0 s: msg_deferred is still deferred" in x
        and "mailvia goes on with it" in x
        for x in lines
    ), lines
    assert any(x.startswith("msg_deferred: delivered to 0 of 1 recipients") for x in lines), lines
    assert not any("msg_held is still" in x or x.startswith("msg_held:") for x in lines), lines
