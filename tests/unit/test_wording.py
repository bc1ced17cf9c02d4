"""The pages' plain words (web/wording.py): every state, outcome and step has them, replies are
put into a sentence with the server's own words kept beside it, times read as people say
them; and the last-24-hours chart's geometry and summary (web/charts.py)."""

from __future__ import annotations

import pytest

from mailvia.domain.channel import (
    Auth,
    Budget,
    Channel,
    ChannelState,
    Kind,
    Owner,
    Scope,
    Security,
    Unit,
)
from mailvia.domain.message import State
from mailvia.domain.probe import Step
from mailvia.domain.replies import Outcome, Reply, network_failure, timeout_after_dot, tls_refused
from mailvia.outbox.headers import subject_of
from mailvia.outbox.records import HourOfUse
from mailvia.web.charts import BOTTOM, day_chart, hourly_limit
from mailvia.web.wording import (
    CHANNEL_STATES,
    OUTCOMES,
    STATES,
    STEPS,
    ago,
    reason_words,
    reply_words,
)

NOW = 1_700_000_000.0


def test_every_state_outcome_and_step_has_plain_words() -> None:
    assert set(STATES) == set(State) and set(CHANNEL_STATES) == set(ChannelState)
    assert set(OUTCOMES) == set(Outcome) and set(STEPS) == set(Step)
    for words in (*STATES.values(), *CHANNEL_STATES.values()):
        assert words.label and words.sentence.endswith(".")
    codes = {"channel_broken", "starttls", "ehlo", "xoauth2", "deferred", "bounced"}
    shown = " ".join(
        [w.label + w.sentence for w in (*STATES.values(), *CHANNEL_STATES.values())]
        + list(OUTCOMES.values())
        + list(STEPS.values())
    ).lower()
    assert not [c for c in codes if c in shown]  # no code leaks into the plain words


@pytest.mark.parametrize(
    ("reply", "says"),
    [
        (Reply(250, "2.0.0", "Ok: queued as 12"), "Accepted by the receiving server."),
        (Reply(451, "4.2.0", "Temporary failure"), "mailbox is not available"),
        (Reply(550, "5.1.1", "No such user"), "does not exist"),
        (Reply(552, "5.2.2", "Mailbox full"), "mailbox is full"),
        (Reply(550, "5.7.26", "Unauthenticated email"), "SPF, DKIM, DMARC"),
        (Reply(554, None, "Transaction failed"), "refused the message"),
        (Reply(535, "5.7.8", "Authentication credentials invalid"), "Wrong user name"),
        (Reply(535, "5.7.139", "Authentication unsuccessful"), "SMTP AUTH is disabled"),
        (network_failure("connection refused"), "could not reach the server"),
        (timeout_after_dot("no answer"), "may have arrived"),
        (tls_refused("no STARTTLS"), "secure connection"),
        (Reply(429, None, "HTTP 429 Too Many Requests: rateLimitExceeded"), "slow down"),
        (Reply(499, None, "strange"), "A temporary problem."),
        (Reply(599, None, "strange"), "The server refused it."),
    ],
)
def test_replies_in_plain_words_keep_the_servers_words(reply: Reply, says: str) -> None:
    said = reply_words(reply)
    assert says in said.sentence
    assert said.code == str(reply)  # beside it, exactly as the server gave it
    assert str(reply.code) not in said.sentence


def test_what_happens_next_follows_from_the_class() -> None:
    assert reply_words(Reply(452, "4.2.2", "full")).sentence.endswith("tries again by itself.")
    assert reply_words(Reply(552, "5.2.2", "full")).sentence.endswith("does not try again.")


def test_a_reply_that_disconnected_the_channel_says_its_mail_is_held() -> None:
    """Not "does not try again" (held mail leaves after a reconnect), and a 5.7.1 refusing
    the sender at MAIL is the channel's server's, not a recipient's spam filter."""
    refused = reply_words(Reply(550, "5.7.1", "sender rejected"), held=True).sentence
    assert refused.startswith("The channel's server refused") and "recipient" not in refused
    assert refused.endswith("held until the channel is reconnected.")
    sign_in = reason_words("535 5.7.8 Authentication credentials invalid", held=True)
    assert sign_in is not None and "Wrong user name" in sign_in.sentence
    assert sign_in.sentence.endswith("held until the channel is reconnected.")
    assert "spam filter" in reply_words(Reply(550, "5.7.1", "spam")).sentence  # a recipient's


def test_a_reply_that_disconnected_the_channel_once_is_not_said_held() -> None:
    """An attempt in the history, or mail released since: the channel's server refused it,
    and nothing says it is held (it may have left since)."""
    past = reply_words(Reply(550, "5.7.1", "sender rejected"), disconnected=True).sentence
    assert past.startswith("The channel's server refused to send this mail")
    assert "held" not in past and "does not try again" not in past
    sign_in = reply_words(Reply(535, "5.7.8", "invalid"), disconnected=True).sentence
    assert "Wrong user name" in sign_in and "held" not in sign_in


def test_on_a_channels_page_its_server_refused_mail_not_this_mail() -> None:
    said = reason_words("550 5.7.1 sender rejected", disconnected=True, channel_page=True)
    assert said is not None
    assert said.sentence.startswith("The channel's server refused to send mail: its reply")
    assert "this mail" not in said.sentence and "held" not in said.sentence


def test_a_channels_reason_is_a_reply_when_it_starts_with_a_code() -> None:
    said = reason_words("535 5.7.8 Authentication credentials invalid")
    assert said is not None and "Wrong user name" in said.sentence
    assert said.code == "535 5.7.8 Authentication credentials invalid"
    other = reason_words("the mailbox's consent was revoked")
    assert other is not None and other.sentence == "the mailbox's consent was revoked"
    assert other.code == "" and reason_words(None) is None


@pytest.mark.parametrize(
    ("seconds", "says"),
    [
        (5, "just now"),
        (59, "just now"),
        (60, "1 minute ago"),
        (180, "3 minutes ago"),
        (7200, "2 hours ago"),
        (86_400 * 3, "3 days ago"),
        (-120, "in 2 minutes"),
        (-30, "in less than a minute"),
        (86_400 * 40, "5 Oct 2023"),
    ],
)
def test_times_read_as_people_say_them(seconds: float, says: str) -> None:
    assert ago(NOW - seconds, NOW) == says


def test_subjects_are_read_as_mail_programs_show_them() -> None:
    assert subject_of(b"From: a@b.test\r\nSUBJECT :  =?utf-8?b?w6ljaG8=?= \r\n\tnext\r\n\r\n") == (
        "écho next"
    )
    assert subject_of(b"From: a@b.test\r\n\r\nSubject: in the body\r\n") == ""
    assert subject_of(b"Subject: =?bogus?q?x?=\r\n\r\n") == "=?bogus?q?x?="  # never raises
    assert len(subject_of(b"Subject: " + b"x" * 2000 + b"\r\n\r\n")) == 500


def channel(*budgets: Budget) -> Channel:
    return Channel(
        id="ch_1",
        organization_id="org_1",
        name="box",
        kind=Kind.SMTP,
        host="smtp.test",
        port=587,
        security=Security.STARTTLS,
        auth=Auth.NONE,
        scope=Scope.DOMAIN,
        owner=Owner(team_id="t"),
        budgets=budgets,
    )


def test_the_hourly_limit_is_the_tightest_message_budget_of_an_hour_or_less() -> None:
    minute = Budget(30, 60, Unit.MESSAGES)
    day = Budget(10_000, 86_400, Unit.RECIPIENTS)
    assert hourly_limit((minute, day)) == 1800
    assert hourly_limit((minute, Budget(1000, 3600, Unit.MESSAGES))) == 1000
    assert hourly_limit((day, Budget(5000, 86_400, Unit.MESSAGES))) is None


def test_the_day_chart_draws_hours_against_the_limit() -> None:
    hours = [HourOfUse(NOW + i * 3600, 0, 0) for i in range(24)]
    hours[3] = HourOfUse(NOW + 3 * 3600, 60, 45)
    hours[20] = HourOfUse(NOW + 20 * 3600, 1, 1)
    chart = day_chart(channel(Budget(100, 3600, Unit.MESSAGES)), hours)
    assert chart.limit == 100 and chart.top == 100 and chart.limit_y == pytest.approx(2.0)
    bar = chart.bars[3]  # 98 units from the axis to the top
    assert bar.other_y == pytest.approx(BOTTOM - 58.8)
    assert bar.delivered_height == pytest.approx(44.1)
    assert chart.bars[20].other_y <= BOTTOM - 2  # one message still shows
    assert chart.bars[0].other_height == chart.bars[0].delivered_height == 0
    assert [h.tried for h in chart.busy] == [60, 1]
    assert "61 messages in the last 24 hours, 46 delivered" in chart.summary
    assert "Its limit: 100 an hour (the dashed line)." in chart.summary


def test_a_limit_far_above_the_mail_sent_does_not_flatten_the_bars() -> None:
    hours = [HourOfUse(NOW + i * 3600, 2 if i == 5 else 0, 2 if i == 5 else 0) for i in range(24)]
    chart = day_chart(channel(Budget(30, 60, Unit.MESSAGES)), hours)
    assert chart.limit == 1800 and chart.limit_y is None and chart.top == 4
    assert chart.bars[5].delivered_height == pytest.approx(49.0)  # half of the chart
    assert "Its limit, 1,800 an hour, is far above." in chart.summary
    empty = day_chart(channel(), [HourOfUse(NOW, 0, 0)] * 24)
    assert empty.limit_y is None and empty.summary.startswith("No messages")
    assert "No hourly limit." in empty.summary
