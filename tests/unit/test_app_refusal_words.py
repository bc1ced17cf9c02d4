"""Mail held for a refused OAuth app waits for the app to be mended, not for a reconnect: the
pages' words, the SMTP submission's 250 and Test connection's token hint say so alike, whether
the reply carries its refusal's kind or is read back from mailvia's stored words; and a sender
refused with the channel unknown gets a hint true of both kinds of channel (the final read of
session 12's merge)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mailvia.domain.channel import Channel, ChannelState, Owner, Provider, Scope
from mailvia.domain.errors import CredentialsFailed
from mailvia.domain.message import Envelope, State
from mailvia.domain.oauth import AppSource, app_of, consent_refused
from mailvia.domain.probe import state_hint
from mailvia.domain.replies import Reply
from mailvia.ingress.smtp.replies import accepted
from mailvia.outbox.probe import _token_failed
from mailvia.outbox.receipts import Receipt
from mailvia.web.wording import reason_words, reply_words
from support.rows import channel

APP = consent_refused(Provider.GOOGLE, "invalid_client", AppSource.ORGANIZATION)
STORED = Reply.parse(APP.code, f"{APP.enhanced} {APP.text}")  # its words, without its kind
CONSENT = consent_refused(Provider.GOOGLE, "invalid_grant")


def _channel(scope: Scope) -> Channel:
    if scope is Scope.DOMAIN:
        return channel("ch_1", "relay")
    return channel(
        "ch_1", "jane", scope=scope, owner=Owner(user_id="usr_1"), address="jane@acme.test",
        domains=(),
    )  # fmt: skip


def test_whose_app_by_its_kind_or_by_mailvias_exact_words() -> None:
    assert STORED.refusal is None
    assert app_of(APP) is AppSource.ORGANIZATION and app_of(STORED) is AppSource.ORGANIZATION
    assert app_of(CONSENT) is None and app_of(Reply(535, "5.7.8", "invalid")) is None


@pytest.mark.parametrize("reply", [APP, STORED])
def test_the_pages_say_held_mail_waits_for_the_app_not_a_reconnect(reply: Reply) -> None:
    said = reply_words(reply, held=True).sentence
    assert "until an admin mends the organization's app" in said, said
    assert "until the channel is reconnected" not in said, said
    consent = reply_words(CONSENT, held=True).sentence
    assert consent.endswith("Its mail is held until the channel is reconnected."), consent


def test_the_submissions_250_says_who_mends_a_refused_app() -> None:
    mailbox = replace(
        _channel(Scope.ADDRESS),
        state=ChannelState.DISCONNECTED,
        refusal="operator_app",
        oauth=Provider.GOOGLE,
    )
    receipt = Receipt("msg_1", State.HELD, mailbox, Envelope("a@x.test", ("b@y.test",)), True, None)
    line = accepted(receipt)
    assert line.startswith("250 2.0.0 Ok: held as msg_1") and "reconnect" not in line, line
    assert "once whoever runs mailvia mends it" in line, line
    consent = accepted(replace(receipt, channel=replace(mailbox, refusal="consent")))
    assert "reconnect it in mailvia" in consent, consent


@pytest.mark.parametrize("reply", [APP, STORED])
def test_test_connections_token_step_names_the_app_by_kind_or_words(reply: Reply) -> None:
    step = _token_failed(CredentialsFailed(reply))
    consent = _token_failed(CredentialsFailed(CONSENT))
    assert step.hint is not None and step.hint != consent.hint


def test_a_refused_sender_with_the_channel_unknown_is_hinted_for_both_kinds() -> None:
    alone = state_hint("550 5.7.1 sender address rejected")
    assert alone is not None and "a channel for one address tries its sender" in alone
    assert "team or domain channel cannot" in alone
    mine = state_hint("550 5.7.1 sender address rejected", _channel(Scope.ADDRESS))
    assert mine is not None and "its test tries the sender" in mine


def test_the_pages_read_a_stored_reason_with_the_channels_refusal_as_the_api_does() -> None:
    """A mailbox disconnected for the operator's app, whose stored words read as the
    organization's: the pages' words follow the channel's `refusal` (as `state_hint` does),
    not the words alone (the pages parsed the reason without it)."""
    mailbox = replace(
        _channel(Scope.ADDRESS),
        state=ChannelState.DISCONNECTED,
        refusal="operator_app",
        oauth=Provider.GOOGLE,
        state_reason=str(STORED),
    )
    hint = state_hint(mailbox.state_reason, mailbox)
    said = reason_words(mailbox.state_reason, disconnected=True, channel=mailbox)
    assert hint is not None and said is not None
    assert hint in said.sentence, (hint, said.sentence)
    assert hint != state_hint(mailbox.state_reason, replace(mailbox, refusal=None))
