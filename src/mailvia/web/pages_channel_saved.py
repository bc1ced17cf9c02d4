"""A saved channel: its settings (the password masked), state, limits and budget use, queue
counts; Test connection, Reconnect (or replace the password), pause, resume and remove.

Side effects: Test stores nothing (a password typed for it is not saved). Reconnect stores
the new password only after a passing test, makes a disconnected channel active and releases
its held mail in its original order. Pause holds the channel's mail; resume releases it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from mailvia.domain.channel import Channel, TransportKind
from mailvia.domain.errors import MailviaError, NotFound
from mailvia.domain.oauth import oauth_offer
from mailvia.domain.presets import PRESETS
from mailvia.domain.tenancy import User
from mailvia.outbox.oauth.mailboxes import MailboxStatus
from mailvia.web.charts import channel_use
from mailvia.web.common import UserDep, Web, WebDep, now, redirect, render, status_for
from mailvia.web.forms import edit_values, text
from mailvia.web.wording import WAITING, covers, limit_words, provider, sharing

router = APIRouter()


def owner_label(web: Web, user: User, channel: Channel) -> str:
    if channel.owner.user_id is not None:
        if channel.owner.user_id == user.id:
            return f"you ({user.email})"
        try:
            return web.services.tenancy.member(user, channel.owner.user_id).email
        except NotFound:
            return "a removed user"
    teams = web.services.tenancy.teams(user)
    name = next((t.name for t in teams if t.id == channel.owner.team_id), "a team")
    return f"team {name}"


def channel_page(
    request: Request,
    web: Web,
    user: User,
    channel: Channel,
    *,
    status: int = 200,
    **extra: Any,
) -> HTMLResponse:
    services = web.services
    preset = PRESETS.get(channel.preset or "")
    counts = services.backlog.counts(user.organization_id).get(channel.id, {})
    counts_list = [(str(s), counts.get(s, 0)) for s in WAITING]
    context: dict[str, Any] = {
        "channel": channel,
        "preset": preset,
        "provider": provider(channel),
        "covers": covers(channel),
        "owner": owner_label(web, user, channel),
        "limits": limit_words(channel.budgets),
        "use": channel_use(services, channel, now()),
        "counts": counts_list,
        "manage": channel.owner.user_id == user.id or user.is_admin,
        # only a mailbox's owner can give its consent (outbox/oauth/connect.py)
        "consents": channel.owner.user_id == user.id,
        "not_shared": sharing(preset),
        # an API mailbox never dials its host: no warning about it
        "host_warning": (
            preset.host_warning(channel.host)
            if preset and channel.transport is TransportKind.SMTP
            else None
        ),
        "report": None,
        "reconnected": None,
        "error": None,
        "mailbox": _status(web, channel),
        "edit_fields": None,
        "edit_report": None,
        "removal": None,
        "waiting_count": sum(n for _, n in counts_list),
        "move_targets": [(c.id, c.name) for c in services.channels.visible(user) if c != channel],
        "oauth_ready": _oauth_ready(web, channel),
        "transport_words": TRANSPORT_WORDS,
        **extra,
    }
    if context["edit_fields"] is None:
        context["edit_fields"] = edit_values(channel)
    return render(request, "channel.html", status=status, **context)


TRANSPORT_WORDS = {
    "smtp": "SMTP",
    "gmail_api": "the Gmail API",
    "graph": "Microsoft Graph",
}


def _status(web: Web, channel: Channel) -> MailboxStatus | None:
    """An OAuth mailbox's token facts (None for other channels, or once its tokens are gone)."""
    if channel.oauth is None:
        return None
    return web.services.mailboxes.statuses(channel.organization_id).get(channel.id)


def _oauth_ready(web: Web, channel: Channel) -> bool:
    """Whether an OAuth app is set up for the provider this channel can connect with."""
    provider = channel.oauth or oauth_offer(channel)
    apps = web.services.oauth_apps
    return provider is not None and apps.ready(channel.organization_id, provider)


@router.get("/channels/{channel_id}", response_class=HTMLResponse)
def show(request: Request, channel_id: str, user: UserDep, web: WebDep) -> HTMLResponse:
    return channel_page(request, web, user, web.services.channels.get(user, channel_id))


@router.post("/channels/{channel_id}/test", response_class=HTMLResponse)
async def test(request: Request, channel_id: str, user: UserDep, web: WebDep) -> HTMLResponse:
    form = await request.form()
    channel = web.services.channels.get(user, channel_id)
    try:
        report = await web.services.tester.test(
            user,
            channel.id,
            to=text(form, "test_to").strip() or None,
            password=text(form, "password") or None,
            now=now(),
        )
    except MailviaError as exc:
        return channel_page(request, web, user, channel, status=status_for(exc), error=str(exc))
    return channel_page(request, web, user, channel, report=report)


@router.post("/channels/{channel_id}/reconnect", response_class=HTMLResponse)
async def reconnect(request: Request, channel_id: str, user: UserDep, web: WebDep) -> HTMLResponse:
    form = await request.form()
    channel = web.services.channels.get(user, channel_id)
    password = text(form, "password") or None
    try:
        done = await web.services.tester.reconnect(user, channel.id, password=password, now=now())
    except MailviaError as exc:
        return channel_page(request, web, user, channel, status=status_for(exc), error=str(exc))
    channel = web.services.channels.get(user, channel.id)
    status = 200 if done.report.ok else 400
    return channel_page(
        request, web, user, channel, status=status, report=done.report, reconnected=done
    )


@router.post("/channels/{channel_id}/{verb}", response_class=HTMLResponse)
async def change_state(
    request: Request, channel_id: str, verb: str, user: UserDep, web: WebDep
) -> Response:
    """`pause` or `resume` (the owner or an admin; remove: pages_mend.py)."""
    channels = web.services.channels
    channel = channels.get(user, channel_id)
    try:
        if verb == "pause":
            channels.pause(user, channel.id, now())
        elif verb == "resume":
            channels.resume(user, channel.id, now())
        else:
            raise NotFound(f"no action {verb!r}")
    except MailviaError as exc:
        return channel_page(request, web, user, channel, status=status_for(exc), error=str(exc))
    return redirect(f"/channels/{channel.id}", notice="paused" if verb == "pause" else "resumed")
