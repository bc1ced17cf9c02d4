"""Settling one attempt: per-recipient outcomes, retry times, channel effects."""

from __future__ import annotations

from mailvia.domain.delivery import ChannelEffect, TransactionResult, settle
from mailvia.domain.message import State, message_state
from mailvia.domain.replies import Outcome, Reply, Stage, network_failure, timeout_after_dot
from mailvia.domain.retry import RetryPolicy

OK = Reply(250, "2.0.0", "OK")
A, B = "a@x.test", "b@x.test"


def run(result: TransactionResult, pending: tuple[str, ...] = (A, B), now: float = 1000.0):  # type: ignore[no-untyped-def]
    return settle(
        result,
        pending=pending,
        failures=0,
        policy=RetryPolicy(),
        now=now,
        expires_at=now + 86400,
        rand=0.5,
    )


def test_one_bad_recipient_never_bounces_the_other() -> None:
    result = TransactionResult(Stage.DATA_END, OK, {A: Reply(550, "5.1.1", "No such user"), B: OK})
    s = run(result)
    states = {r.address: r.state for r in s.recipients}
    assert states == {A: State.BOUNCED, B: State.DELIVERED}
    assert s.recipients[0].stage is Stage.RCPT
    assert s.channel_effect is ChannelEffect.NONE and not s.counts_as_failure
    assert message_state(states.values()) is State.DELIVERED


def test_temporary_rcpt_failure_defers_only_that_recipient() -> None:
    result = TransactionResult(Stage.DATA_END, OK, {A: Reply(451, "4.3.0", "later"), B: OK})
    s = run(result)
    assert [r.state for r in s.recipients] == [State.DEFERRED, State.DELIVERED]
    assert s.counts_as_failure and s.next_attempt_at == 1000 + 300


def test_network_failure_defers_all() -> None:
    s = run(TransactionResult(Stage.CONNECT, network_failure("connection refused")))
    assert {r.outcome for r in s.recipients} == {Outcome.RETRY}
    assert {r.state for r in s.recipients} == {State.DEFERRED}
    # No connection at all: the channel waits too (its other mail would fail the same way).
    assert s.channel_effect is ChannelEffect.UNREACHABLE and s.counts_as_failure
    lost = run(TransactionResult(Stage.DATA, network_failure("connection lost at data")))
    assert lost.channel_effect is ChannelEffect.NONE  # that server was there: only a retry


def test_timeout_after_dot_is_retried_and_flagged() -> None:
    s = run(
        TransactionResult(
            Stage.DATA_END, timeout_after_dot("timeout"), {A: OK, B: OK}, possible_duplicate=True
        )
    )
    assert s.possible_duplicate and {r.state for r in s.recipients} == {State.DEFERRED}


def test_auth_failure_holds_and_disconnects() -> None:
    s = run(TransactionResult(Stage.AUTH, Reply(535, "5.7.8", "bad credentials")))
    assert {r.state for r in s.recipients} == {State.HELD}
    assert s.channel_effect is ChannelEffect.DISCONNECT and not s.counts_as_failure


def test_throttle_defers_without_counting_a_failure() -> None:
    s = run(TransactionResult(Stage.MAIL, Reply(451, "4.7.500", "Server busy")))
    assert {r.state for r in s.recipients} == {State.DEFERRED}
    assert s.channel_effect is ChannelEffect.THROTTLE and not s.counts_as_failure
    daily = run(TransactionResult(Stage.MAIL, Reply(550, "5.4.5", "Daily limit")))
    assert daily.channel_effect is ChannelEffect.THROTTLE_DAILY
    assert {r.state for r in daily.recipients} == {State.DEFERRED}


def test_giving_up_expires() -> None:
    s = settle(
        TransactionResult(Stage.RCPT, None, {A: Reply(451, "4.3.0", "later")}),
        pending=(A,),
        failures=9,
        policy=RetryPolicy(),
        now=5000,
        expires_at=5000,
        rand=0.5,
    )
    assert s.recipients[0].state is State.EXPIRED and s.next_attempt_at is None


def test_message_state_rules() -> None:
    assert message_state([State.BOUNCED, State.EXPIRED]) is State.BOUNCED
    assert message_state([State.CANCELLED, State.EXPIRED]) is State.EXPIRED
    assert message_state([State.DELIVERED, State.DEFERRED]) is State.DEFERRED
    assert message_state([State.HELD, State.QUEUED]) is State.QUEUED
    assert message_state([State.SENDING, State.HELD]) is State.SENDING
