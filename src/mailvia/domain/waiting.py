"""Why a message that has not left is waiting, in plain words, and whether anything will move
it without someone acting: the words of the states (the pages' badges and sentences) and the
lines `mailvia send --wait` prints while it waits. Pure: time and the facts are parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from mailvia.domain.channel import Channel, ChannelState
from mailvia.domain.clock import Instant
from mailvia.domain.message import State
from mailvia.domain.probe import fix_for, state_hint
from mailvia.domain.replies import Reply


@dataclass(frozen=True)
class Words:
    """A state in plain words: a short label for a badge, and a sentence."""

    label: str
    sentence: str


STATES: dict[State, Words] = {
    State.QUEUED: Words("Waiting", "Waiting for its turn to be sent."),
    State.HELD: Words("On hold", "On hold: its channel needs attention first. Nothing is lost."),
    State.SENDING: Words("Sending", "Being handed to the channel right now."),
    State.DEFERRED: Words(
        "Trying again", "Not delivered yet: a temporary problem, mailvia tries again by itself."
    ),
    State.DELIVERED: Words("Delivered", "Delivered: the receiving server accepted it."),
    State.BOUNCED: Words("Not delivered", "Not delivered: the receiving server refused it."),
    State.EXPIRED: Words(
        "Gave up", "Not delivered: mailvia kept trying until the retry period ran out."
    ),
    State.CANCELLED: Words("Cancelled", "Cancelled before it was sent."),
}


def message_sentence(state: State, recipients: Sequence[State]) -> str:
    """A message's sentence: its state's, except that a message delivered to only some of its
    recipients (`delivered` once any was, SURFACE.md) says how many, not "accepted it"."""
    delivered = sum(1 for r in recipients if r is State.DELIVERED)
    if state is State.DELIVERED and delivered < len(recipients):
        return (
            f"Delivered to {delivered} of {len(recipients)} recipients: the others were not "
            "delivered (each recipient's state and reply are below)."
        )
    return STATES[state].sentence


CHANNEL_STATES: dict[ChannelState, Words] = {
    ChannelState.ACTIVE: Words("Working", "Working: this channel is active and sends mail."),
    ChannelState.DISCONNECTED: Words(
        "Disconnected",
        "Disconnected: this channel sends nothing until it is reconnected. Its mail is held "
        "until then.",
    ),
    ChannelState.PAUSED: Words(
        "Paused", "Paused: its mail is held until the channel's owner or an admin resumes it."
    ),
}

# A dispatcher beats every 5 seconds at most (outbox/liveness.py BEAT_EVERY): one silent
# for three beats is not delivering.
ALIVE_WITHIN = 15.0
NOBODY_DELIVERING = (
    "No mailvia process is delivering mail: start mailvia serve (or mailvia worker, when "
    "serve runs with --dispatch off) on this data folder or database."
)


@dataclass(frozen=True)
class Waiting:
    """What a message waits for; `stuck`: nothing will deliver it until someone acts."""

    sentence: str
    stuck: bool
    nobody_delivering: bool = False  # stuck only because no dispatcher has beaten lately


def clock_time(at: Instant) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%H:%M:%S UTC")


def why_waiting(
    state: State,
    *,
    channel: Channel | None,
    last_reply: Reply | None,
    next_attempt_at: Instant | None,
    budget_free_at: Instant | None,
    delivering: bool,
    now: Instant,
) -> Waiting | None:
    """Why a message in `state` has not left (None: it is finished). `budget_free_at`: when
    the channel's budgets next fit it; `delivering`: whether a dispatcher is alive."""
    if state.terminal:
        return None
    if state is State.HELD or (channel is not None and channel.state is not ChannelState.ACTIVE):
        return Waiting(_held(channel), stuck=True)
    if not delivering:
        sentence = f"{STATES[state].sentence} {NOBODY_DELIVERING}"
        return Waiting(sentence, stuck=True, nobody_delivering=True)
    name = channel.name if channel is not None else "its channel"
    if state is State.SENDING:
        return Waiting(f"Being handed to channel {name} right now.", stuck=False)
    if state is State.DEFERRED:
        said = (
            f'Not delivered yet: the last reply was "{last_reply}"'
            if last_reply
            else (STATES[state].sentence.rstrip("."))
        )
        when = f"; the next attempt is at {clock_time(next_attempt_at)}" if next_attempt_at else ""
        fix = fix_for(last_reply, channel)
        return Waiting(f"{said}{when}." + (f" {fix}" if fix else ""), stuck=False)
    if budget_free_at is not None and budget_free_at > now:
        return Waiting(
            f"Waiting behind channel {name}'s sending limit until {clock_time(budget_free_at)}.",
            stuck=False,
        )
    return Waiting(f"Waiting for its turn on channel {name}.", stuck=False)


def _held(channel: Channel | None) -> str:
    if channel is None:
        return STATES[State.HELD].sentence
    name = channel.name
    if channel.state is ChannelState.PAUSED:
        return (
            f"On hold: channel {name} is paused. Resume it (mailvia channel resume {name}, or "
            "the channel's page) and its mail leaves. Nothing is lost."
        )
    reason = f' after the reply "{channel.state_reason}"' if channel.state_reason else ""
    fix = state_hint(channel.state_reason, channel) or (
        f"Reconnect it (mailvia channel reconnect {name}, or the channel's page)."
    )
    return f"On hold: channel {name} is disconnected{reason}. {fix} Nothing is lost."
