"""The ways out of a wrong channel on its page (outbox/mend.py): Edit (any field; tested before
it is saved unless "save without testing" is ticked), Remove with its waiting mail cancelled or
moved to another channel, Cancel its waiting mail; and Cancel on a message's Activity page.

Side effects: Edit probes the edited channel when a connection field changed and saves only
after a passing test; a disconnected channel that passes comes back and its held mail leaves
in its original order. Remove and Cancel change messages to `cancelled` (with an event each)
or move them.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData

from mailvia.domain.channel import Auth, Channel, Security
from mailvia.domain.errors import InvalidChannel, MailviaError
from mailvia.domain.tenancy import User
from mailvia.outbox.channels import ChannelChanges
from mailvia.outbox.mend import MailChoice
from mailvia.web.common import UserDep, Web, WebDep, now, redirect, status_for
from mailvia.web.forms import (
    EDIT_FIELDS,
    edit_values,
    parse_budgets,
    parse_choice,
    parse_port,
    text,
)
from mailvia.web.pages_activity import message_page
from mailvia.web.pages_channel_saved import channel_page

router = APIRouter()


def changes_of(channel: Channel, form: FormData) -> ChannelChanges:
    """The fields the form changes (the others stay None, so an unchanged connection is not
    tested again). Raises InvalidChannel for a field that cannot be read."""
    typed = {name: text(form, name).strip() for name in EDIT_FIELDS}
    saved = edit_values(channel)

    def changed(name: str) -> str | None:
        return typed[name] if typed[name] != saved[name] else None

    security, auth = changed("security") or "", changed("auth") or ""
    connections = changed("max_connections")
    if connections is not None and not (connections.isdigit() and 1 <= int(connections) <= 100):
        raise InvalidChannel("connections at once: a number from 1 to 100")
    budgets = changed("budgets")
    return ChannelChanges(
        name=changed("name"),
        host=changed("host"),
        port=parse_port(typed["port"]) if changed("port") is not None else None,
        security=parse_choice(Security, security, "security"),
        auth=parse_choice(Auth, auth, "sign-in method"),
        username=changed("username"),
        password=text(form, "password") or None,
        budgets=(parse_budgets(budgets) or ()) if budgets is not None else None,
        max_connections=int(connections) if connections else None,
    )


@router.post("/channels/{channel_id}/edit", response_class=HTMLResponse)
async def edit(request: Request, channel_id: str, user: UserDep, web: WebDep) -> Response:
    form = await request.form()
    channel = web.services.channels.get(user, channel_id)
    fields = {name: text(form, name).strip() for name in EDIT_FIELDS}
    try:
        changes = changes_of(channel, form)
        done = await web.services.mend.edit(
            user, channel.id, changes, test=text(form, "no_test") != "on", now=now()
        )
    except MailviaError as exc:
        return _page(request, web, user, channel, status_for(exc), fields, error=str(exc))
    if not done.saved:
        return _page(request, web, user, channel, 400, fields, edit_report=done.report)
    notice = "reconnected" if done.reconnected else "edited"
    return redirect(f"/channels/{channel.id}", notice=notice)


@router.post("/channels/{channel_id}/remove", response_class=HTMLResponse)
async def remove(request: Request, channel_id: str, user: UserDep, web: WebDep) -> Response:
    """Remove; with waiting mail, the form says whether to cancel it or move it (`mail`,
    `to`). Messages that may not move stay, listed on the page, and so does the channel."""
    form = await request.form()
    channel = web.services.channels.get(user, channel_id)
    raw, to = text(form, "mail"), text(form, "to") or None
    try:
        mail = MailChoice(raw) if raw else None
        done = await web.services.mend.remove(
            user, channel.id, mail=mail, to=to if mail is MailChoice.MOVE else None, now=now()
        )
    except ValueError:
        return _page(request, web, user, channel, 400, None, error="Choose what to do with it.")
    except MailviaError as exc:
        return _page(request, web, user, channel, status_for(exc), None, error=str(exc))
    if not done.removed:
        channel = web.services.channels.get(user, channel.id)
        return _page(request, web, user, channel, 409, None, removal=done)
    return redirect("/channel", notice="removed")


@router.post("/channels/{channel_id}/cancel-mail", response_class=HTMLResponse)
async def cancel_mail(request: Request, channel_id: str, user: UserDep, web: WebDep) -> Response:
    channel = web.services.channels.get(user, channel_id)
    try:
        web.services.mend.cancel_mail(user, channel.id, now())
    except MailviaError as exc:
        return _page(request, web, user, channel, status_for(exc), None, error=str(exc))
    return redirect(f"/channels/{channel.id}", notice="mail_cancelled")


@router.post("/activity/{message_id}/cancel", response_class=HTMLResponse)
async def cancel_message(request: Request, message_id: str, user: UserDep, web: WebDep) -> Response:
    view = web.services.messages.visible(user, message_id)
    try:
        web.services.messages.cancel(user, view.id, now())
    except MailviaError as exc:
        return message_page(request, web, user, view.id, status=status_for(exc), error=str(exc))
    return redirect(f"/activity/{view.id}", notice="cancelled")


def _page(
    request: Request,
    web: Web,
    user: User,
    channel: Channel,
    status: int,
    fields: dict[str, str] | None,
    **extra: object,
) -> HTMLResponse:
    return channel_page(request, web, user, channel, status=status, edit_fields=fields, **extra)
