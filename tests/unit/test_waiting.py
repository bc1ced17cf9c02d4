"""Why a message waits, in words (domain/waiting.py), and what to change when a reply needs a
fix (domain/probe.py fix_for): pure, table-driven, time passed in."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mailvia.domain.channel import Auth, Budget, Channel, ChannelState, Kind, Owner, Scope, Security
from mailvia.domain.message import State
from mailvia.domain.probe import SIGN_IN_NEEDED, fix_for, fix_for_reason
from mailvia.domain.replies import Reply
from mailvia.domain.waiting import NOBODY_DELIVERING, message_sentence, why_waiting
from mailvia.web.wording import reply_words

NOW = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC
REFUSED = Reply(550, "5.4.4", "mailvia: will not connect to this host")
SETTING = "MAILVIA_ALLOW_PRIVATE_HOSTS"
BOX = Channel(
    id="ch_1",
    organization_id="org_1",
    name="jane-mailbox",
    kind=Kind.SMTP,
    host="127.0.0.1",
    port=2525,
    security=Security.NONE,
    auth=Auth.NONE,
    scope=Scope.ADDRESS,
    owner=Owner(user_id="usr_1"),
    address="jane@acme.test",
    budgets=(Budget(30, 60),),
)


def waits(state: State, channel: Channel | None = BOX, **facts: object) -> tuple[str, bool]:
    found = why_waiting(
        state,
        channel=channel,
        last_reply=facts.get("last_reply"),  # type: ignore[arg-type]
        next_attempt_at=facts.get("next_attempt_at"),  # type: ignore[arg-type]
        budget_free_at=facts.get("budget_free_at"),  # type: ignore[arg-type]
        delivering=facts.get("delivering", True),  # type: ignore[arg-type]
        now=NOW,
    )
    assert found is not None
    return found.sentence, found.stuck


def test_refused_host_and_missing_sign_in_point_to_the_fix() -> None:
    refused = fix_for(REFUSED)
    assert refused and SETTING in refused and "mailvia serve" in refused
    assert "mailvia worker" in refused and "reconnect the channel" in refused
    assert fix_for(Reply(530, "5.7.0", "Authentication required")) == SIGN_IN_NEEDED
    assert "mailvia channel edit" in SIGN_IN_NEEDED and "OAuth" in SIGN_IN_NEEDED
    assert fix_for_reason("530 5.7.0 Authentication required") == SIGN_IN_NEEDED
    for passing in (Reply(451, "4.3.0", "busy"), Reply(550, "5.1.1", "no such user"), None):
        assert fix_for(passing) is None
    assert fix_for_reason("paused by jane") is None and fix_for_reason(None) is None


def test_the_pages_name_the_setting_for_a_refused_host() -> None:
    said = reply_words(REFUSED)
    assert SETTING in said.sentence and said.code == str(REFUSED)
    assert "no way to the recipient" not in said.sentence


@pytest.mark.parametrize(
    ("state", "channel", "facts", "expected", "stuck"),
    [
        (State.HELD, BOX, {}, "jane-mailbox is disconnected", True),
        (
            State.QUEUED,
            replace(BOX, state=ChannelState.DISCONNECTED, state_reason=str(REFUSED)),
            {},
            SETTING,
            True,
        ),
        (
            State.HELD,
            replace(BOX, state=ChannelState.DISCONNECTED, state_reason="530 5.7.0 Auth required"),
            {},
            "This channel needs a sign-in",
            True,
        ),
        (
            State.HELD,
            replace(BOX, state=ChannelState.PAUSED, state_reason="paused by jane"),
            {},
            "mailvia channel resume jane-mailbox",
            True,
        ),
        (State.QUEUED, BOX, {"delivering": False}, NOBODY_DELIVERING, True),
        (State.DEFERRED, BOX, {"delivering": False}, NOBODY_DELIVERING, True),
        (
            State.DEFERRED,
            BOX,
            {"last_reply": Reply(451, "4.3.0", "busy"), "next_attempt_at": NOW + 90},
            'the last reply was "451 4.3.0 busy"; the next attempt is at 08:01:30 UTC.',
            False,
        ),
        (
            State.QUEUED,
            BOX,
            {"budget_free_at": NOW + 30},
            "behind channel jane-mailbox's sending limit until 08:00:30 UTC",
            False,
        ),
        (State.QUEUED, BOX, {"budget_free_at": NOW}, "its turn on channel jane-mailbox", False),
        (State.SENDING, BOX, {}, "Being handed to channel jane-mailbox", False),
    ],
)
def test_why_a_message_waits(
    state: State, channel: Channel, facts: dict[str, object], expected: str, stuck: bool
) -> None:
    sentence, is_stuck = waits(state, channel, **facts)
    assert expected in sentence and is_stuck is stuck, sentence


def test_a_finished_message_waits_for_nothing() -> None:
    for state in (State.DELIVERED, State.BOUNCED, State.EXPIRED, State.CANCELLED):
        assert (
            why_waiting(
                state,
                channel=BOX,
                last_reply=None,
                next_attempt_at=None,
                budget_free_at=None,
                delivering=False,
                now=NOW,
            )
            is None
        )


def test_only_a_missing_dispatcher_is_marked_as_such() -> None:
    """`send --wait` gives a `serve` or `worker` just started a moment to beat, and only
    for this reason."""
    facts = {"last_reply": None, "next_attempt_at": None, "budget_free_at": None, "now": NOW}
    nobody = why_waiting(State.QUEUED, channel=BOX, delivering=False, **facts)  # type: ignore[arg-type]
    held = why_waiting(State.HELD, channel=BOX, delivering=False, **facts)  # type: ignore[arg-type]
    assert nobody is not None and nobody.stuck and nobody.nobody_delivering
    assert held is not None and held.stuck and not held.nobody_delivering


def test_a_message_delivered_to_some_of_its_recipients_says_so() -> None:
    """`delivered` once any recipient was: the page's sentence must not claim every one was."""
    partly = message_sentence(State.DELIVERED, [State.BOUNCED, State.DELIVERED])
    assert partly.startswith("Delivered to 1 of 2 recipients") and "accepted it" not in partly
    every = message_sentence(State.DELIVERED, [State.DELIVERED, State.DELIVERED])
    assert every == "Delivered: the receiving server accepted it."
    assert message_sentence(State.BOUNCED, [State.BOUNCED]).startswith("Not delivered")


def test_a_deferred_messages_refused_sign_in_is_mended_in_its_channels_words() -> None:
    """A refused password on a SendGrid channel says SendGrid's login (apikey and an API key),
    as the API's `state_hint` does; a person's mailbox keeps the mailbox's words."""
    sendgrid = replace(BOX, scope=Scope.DOMAIN, owner=Owner(team_id="team_1"), preset="sendgrid")
    refused = Reply(535, "5.7.8", "Authentication credentials invalid")
    said, _ = waits(State.DEFERRED, sendgrid, last_reply=refused, next_attempt_at=NOW + 60)
    assert fix_for(refused, sendgrid) in said and "the word apikey" in said, said
    assert "mailbox's password" not in said, said
    mailbox, _ = waits(State.DEFERRED, last_reply=refused, next_attempt_at=NOW + 60)
    assert "mailbox's password" in mailbox, mailbox
    page = reply_words(refused, channel=sendgrid).sentence
    assert page == fix_for(refused, sendgrid) and page != reply_words(refused).sentence
