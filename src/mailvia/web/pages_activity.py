"""Activity: messages with their subject, recipients, channel, state and when, in plain words
(the servers' replies beside them), searched by subject or recipient and filtered by state
and channel, a page at a time; each channel's budget meters, queue and last 24 hours; held
and deferred mail with the reason. Members see their own messages, admins the
organization's (the Messages use case says so). Reads only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from mailvia.domain.channel import Channel, Kind
from mailvia.domain.errors import InvalidInput
from mailvia.domain.message import State
from mailvia.domain.replies import Outcome
from mailvia.domain.tenancy import User
from mailvia.outbox.records import MessageView
from mailvia.web.charts import ChannelUse, channel_use
from mailvia.web.common import UserDep, Web, WebDep, now, render
from mailvia.web.wording import WAITING, pool_held, provider

router = APIRouter()
PAGE = 25
Text = Annotated[str, Query(max_length=200)]


@dataclass(frozen=True)
class ChannelRow:
    channel: Channel
    provider: str
    counts: list[tuple[str, int]]
    use: ChannelUse


def _channels(web: Web, user: User) -> dict[str, Channel]:
    """The channels the user may see and the shared pool, as their rows read now."""
    return {c.id: c for c in web.services.channels.listed(user)}


def _summary(web: Web, user: User, channels: dict[str, Channel]) -> list[ChannelRow]:
    counts = web.services.backlog.counts(user.organization_id)
    at = now()
    rows = []
    for channel in channels.values():
        states = counts.get(channel.id, {})
        if channel.kind == "pool" and not any(states.values()):
            continue
        rows.append(
            ChannelRow(
                channel,
                provider(channel),
                [(str(s), states.get(s, 0)) for s in WAITING],
                channel_use(web.services, channel, at),
            )
        )
    return rows


@dataclass(frozen=True)
class Waiting:
    """Why a held or deferred message waits: a sentence, and the channel's reason or the
    servers' replies (shown beside it in their own words)."""

    sentence: str
    reason: str | None = None  # a channel's state_reason
    replies: tuple[str, ...] = ()
    channel: Channel | None = None  # whose words a refused sign-in is mended in


def waiting(message: MessageView, channel: Channel | None) -> Waiting:
    if message.state is State.HELD:
        if channel is None:
            return Waiting("Its channel was removed: nothing can send it until it is cancelled.")
        if channel.kind is Kind.POOL:  # the relay's reply is the operator's (as in the API)
            words = pool_held(channel)
            return Waiting(words[:1].upper() + words[1:], None, (), channel)
        return Waiting(f"{channel.name} is {channel.state}.", channel.state_reason, (), channel)
    replies = tuple(
        str(r.reply) for r in message.recipients if r.reply is not None and not r.state.terminal
    )
    return Waiting("Waiting for the next attempt.", None, replies, channel)


@router.get("/activity", response_class=HTMLResponse)
def activity(
    request: Request,
    user: UserDep,
    web: WebDep,
    q: Text = "",
    state: Text = "",
    channel: Text = "",
    cursor: Annotated[str, Query(max_length=500)] = "",
) -> HTMLResponse:
    messages = web.services.messages
    channels = _channels(web, user)
    try:
        chosen_state = State(state) if state else None
    except ValueError:
        raise InvalidInput(f"state: {state!r} is not a message state") from None
    shown, next_cursor = messages.page(
        user,
        state=chosen_state,
        channel=channel if channel in channels else None,
        limit=PAGE,
        cursor=cursor or None,
        search=q or None,
    )
    held = [
        m for s in (State.HELD, State.DEFERRED) for m in messages.page(user, state=s, limit=PAGE)[0]
    ]
    chosen = {"q": q, "state": state, "channel": channel}
    return render(
        request,
        "activity.html",
        messages=shown,
        older=f"/activity?{urlencode({**chosen, 'cursor': next_cursor})}" if next_cursor else None,
        newest=f"/activity?{urlencode(chosen)}" if cursor else None,
        waiting_list=held,
        waiting=waiting,
        channels=channels,
        summary=_summary(web, user, channels),
        states=list(State),
        chosen=chosen,
        searched=bool(q or state or channel),
    )


def _disconnected(message: MessageView) -> tuple[frozenset[str], frozenset[str]]:
    """The recipients whose reply is the one that disconnected the channel (their last
    attempt's, outcome channel_broken), and of those the ones held now. Cancelling and
    expiring write the recipient a reply of their own without an attempt, and a released
    recipient (queued again) waits for no reconnect any more."""
    last = {a.recipient: a for a in message.attempts}  # attempts come oldest first
    broke = frozenset(
        r.address
        for r in message.recipients
        if (a := last.get(r.address)) is not None
        and a.outcome == Outcome.CHANNEL_BROKEN
        and r.reply == a.reply
    )
    held = frozenset(r.address for r in message.recipients if r.state is State.HELD)
    return broke, broke & held


@router.get("/activity/{message_id}", response_class=HTMLResponse)
def message(request: Request, message_id: str, user: UserDep, web: WebDep) -> HTMLResponse:
    return message_page(request, web, user, message_id)


def message_page(
    request: Request,
    web: Web,
    user: User,
    message_id: str,
    *,
    status: int = 200,
    error: str | None = None,
) -> HTMLResponse:
    """A message's page (NotFound for one the user may not see), with Cancel while it waits."""
    view = web.services.messages.visible(user, message_id)
    channels = _channels(web, user)
    disconnected, held = _disconnected(view)
    return render(
        request,
        "message.html",
        status=status,
        message=view,
        disconnected=disconnected,
        held=held,
        channel_broken=Outcome.CHANNEL_BROKEN,
        channels=channels,
        waiting=waiting,
        error=error,
    )
