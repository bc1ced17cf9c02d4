"""What one SMTP transaction returned, and how it settles each recipient.

The transport reports replies (never raises for a delivery failure); `settle` turns them
into per-recipient states, the next attempt time and any effect on the channel.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from mailvia.domain.clock import Instant
from mailvia.domain.message import State
from mailvia.domain.replies import Outcome, Reply, Stage, Verdict, classify
from mailvia.domain.retry import RetryPolicy


@dataclass(frozen=True)
class TransactionResult:
    """The replies one attempt got.

    `stage` is where the session ended; `reply` is the session- or message-level reply at
    that stage (a failure before RCPT, or the DATA / final-dot reply), None when the session
    ended at RCPT because no recipient was accepted. `rcpt_replies` holds each RCPT reply.
    """

    stage: Stage
    reply: Reply | None
    rcpt_replies: Mapping[str, Reply] = field(default_factory=dict)
    possible_duplicate: bool = False


class ChannelEffect(StrEnum):
    """What an attempt means for the whole channel."""

    NONE = "none"
    THROTTLE = "throttle"
    THROTTLE_DAILY = "throttle_daily"
    DISCONNECT = "disconnect"
    # The server could not be reached at all (refused, unreachable, timed out at connect):
    # every message would fail the same way, so the channel waits, as for a throttle.
    UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class RecipientSettlement:
    """One recipient after an attempt."""

    address: str
    outcome: Outcome
    reply: Reply
    state: State
    stage: Stage = Stage.DATA_END  # where this recipient's reply came


@dataclass(frozen=True)
class Settlement:
    """A message after an attempt."""

    recipients: tuple[RecipientSettlement, ...]
    next_attempt_at: Instant | None
    counts_as_failure: bool  # advances the message's retry count (throttling does not)
    channel_effect: ChannelEffect
    channel_reply: Reply | None
    possible_duplicate: bool

    @property
    def wait(self) -> float | None:
        """How long the provider said to pause the channel (Retry-After), if it said."""
        if self.channel_effect in (ChannelEffect.THROTTLE, ChannelEffect.THROTTLE_DAILY):
            return self.channel_reply.retry_after if self.channel_reply else None
        return None


_NO_REPLY = Reply(451, "4.4.2", "mailvia: the session ended without a reply for this recipient")


def recipient_verdicts(
    result: TransactionResult, pending: tuple[str, ...]
) -> list[tuple[str, Verdict, Reply, Stage]]:
    """Classify each pending recipient: its own RCPT refusal, else the session's reply."""
    verdicts = []
    for address in pending:
        own = result.rcpt_replies.get(address)
        if own is not None and not own.positive:
            verdicts.append((address, classify(own, Stage.RCPT), own, Stage.RCPT))
        elif result.reply is not None:
            reply = result.reply
            verdicts.append((address, classify(reply, result.stage), reply, result.stage))
        else:
            verdicts.append((address, classify(_NO_REPLY, result.stage), _NO_REPLY, result.stage))
    return verdicts


def settle(
    result: TransactionResult,
    *,
    pending: tuple[str, ...],
    failures: int,
    policy: RetryPolicy,
    now: Instant,
    expires_at: Instant,
    rand: float,
) -> Settlement:
    """Decide every pending recipient's new state after an attempt.

    `failures` is the message's count of earlier temporary failures. Throttling and a broken
    channel neither bounce nor advance the retry count: the channel backs off or is held.
    """
    verdicts = recipient_verdicts(result, pending)
    outcomes = {v.outcome for _, v, _, _ in verdicts}
    failed = Outcome.RETRY in outcomes
    next_at = (
        policy.next_attempt_at(failures=failures + 1, now=now, expires_at=expires_at, rand=rand)
        if failed
        else now
    )
    recipients = tuple(
        RecipientSettlement(address, v.outcome, reply, _state_after(v.outcome, next_at), stage)
        for address, v, reply, stage in verdicts
    )
    effect, channel_reply = _channel_effect(verdicts)
    return Settlement(
        recipients=recipients,
        next_attempt_at=next_at,
        counts_as_failure=failed,
        channel_effect=effect,
        channel_reply=channel_reply,
        possible_duplicate=result.possible_duplicate,
    )


def _state_after(outcome: Outcome, next_at: Instant | None) -> State:
    if outcome is Outcome.DELIVERED:
        return State.DELIVERED
    if outcome is Outcome.BOUNCE:
        return State.BOUNCED
    if outcome is Outcome.CHANNEL_BROKEN:
        return State.HELD
    if outcome is Outcome.RETRY and next_at is None:
        return State.EXPIRED
    return State.DEFERRED


def _channel_effect(
    verdicts: list[tuple[str, Verdict, Reply, Stage]],
) -> tuple[ChannelEffect, Reply | None]:
    for _, verdict, reply, _ in verdicts:
        if verdict.outcome is Outcome.CHANNEL_BROKEN:
            return ChannelEffect.DISCONNECT, reply
    for _, verdict, reply, _ in verdicts:
        if verdict.outcome is Outcome.THROTTLED:
            daily = ChannelEffect.THROTTLE_DAILY if verdict.daily else ChannelEffect.THROTTLE
            return daily, reply
    if verdicts and all(
        v.outcome is Outcome.RETRY and stage is Stage.CONNECT for _, v, _, stage in verdicts
    ):
        return ChannelEffect.UNREACHABLE, verdicts[0][2]
    return ChannelEffect.NONE, None
