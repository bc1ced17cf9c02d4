"""Activity: messages with their state, channel and each recipient's reply, filtered by state
and channel; each channel's budget use and queue counts; held and deferred mail with the
reason. Members see their own messages, admins the organization's (the Messages use case
says so). Reads only."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from mailvia.domain.channel import Channel
from mailvia.domain.errors import InvalidInput
from mailvia.domain.message import State
from mailvia.domain.tenancy import User
from mailvia.outbox.records import MessageView
from mailvia.web.common import UserDep, Web, WebDep, now, render
from mailvia.web.wording import WAITING, channel_use, provider

router = APIRouter()
PAGE = 25


@dataclass(frozen=True)
class ChannelRow:
    channel: Channel
    provider: str
    counts: list[tuple[str, int]]
    use: list[str]


def _channels(web: Web, user: User) -> dict[str, Channel]:
    found = {c.id: c for c in web.services.channels.visible(user)}
    pool = web.services.pool()
    if pool is not None:
        found[pool.id] = pool
    return found


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


def reason(message: MessageView, channel: Channel | None) -> str:
    """Why a held or deferred message waits."""
    if message.state is State.HELD:
        if channel is None:
            return "its channel was removed"
        why = f": {channel.state_reason}" if channel.state_reason else ""
        return f"{channel.name} is {channel.state}{why}"
    replies = [r.reply for r in message.recipients if r.reply is not None and not r.state.terminal]
    said = "; ".join(f"{r.code} {r.enhanced or ''} {r.text}".replace("  ", " ") for r in replies)
    return said or "waiting for the next attempt"


@router.get("/activity", response_class=HTMLResponse)
def activity(
    request: Request,
    user: UserDep,
    web: WebDep,
    state: str = "",
    channel: str = "",
    cursor: str = "",
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
    )
    waiting = [
        m for s in (State.HELD, State.DEFERRED) for m in messages.page(user, state=s, limit=PAGE)[0]
    ]
    return render(
        request,
        "activity.html",
        messages=shown,
        next_cursor=next_cursor,
        waiting=waiting,
        reason=reason,
        channels=channels,
        summary=_summary(web, user, channels),
        states=[str(s) for s in State],
        chosen={"state": state, "channel": channel},
    )


@router.get("/activity/{message_id}", response_class=HTMLResponse)
def message(request: Request, message_id: str, user: UserDep, web: WebDep) -> HTMLResponse:
    view = web.services.messages.visible(user, message_id)
    channels = _channels(web, user)
    return render(request, "message.html", message=view, channels=channels, reason=reason)
