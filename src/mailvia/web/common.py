"""What every page shares: the web state, who is signed in, rendering, banners and notices.

Pages render Jinja2 templates (autoescaped) from `templates/`; a signed-in user sees a banner
on every page for each disconnected channel they own (a team channel: its team's admins),
with the reason, the held count and a Reconnect link.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.resources import files
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from mailvia.domain.channel import Channel, ChannelState, concerns
from mailvia.domain.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    MailviaError,
    NotFound,
    ProviderRefused,
    Unauthenticated,
)
from mailvia.domain.message import State
from mailvia.domain.oauth import RefusedApp, basic_auth_off, oauth_offer
from mailvia.domain.signins import PAGES, FailedSignIns
from mailvia.domain.tenancy import User
from mailvia.domain.waiting import message_sentence
from mailvia.outbox.services import Services
from mailvia.web.auth import current_session
from mailvia.web.charts import hour_words
from mailvia.web.wording import (
    CHANNEL_STATES,
    OUTCOMES,
    SETTINGS,
    STATES,
    STEPS,
    Words,
    ago,
    outbox_words,
    reason_words,
    reply_words,
)

TEMPLATES = files("mailvia.web") / "templates"

# Short notices a redirect may ask a page to show (?notice=KEY); never free text from a URL.
NOTICES = {
    "saved": "Channel saved.",
    "removed": "Channel removed.",
    "edited": "Channel saved.",
    "reconnected": "Channel saved and reconnected: its held mail is released, in its original "
    "order.",
    "mail_cancelled": "The channel's waiting mail is cancelled.",
    "cancelled": "Message cancelled: it will not be sent.",
    "paused": "Channel paused: its mail is held until you resume it.",
    "resumed": "Channel resumed: its held mail is released.",
    "password": "Password changed.",
    "policy": "Organization settings saved.",
    "granted": "Sender identity granted.",
    "revoked": "Token revoked.",
    "signedout": "You are signed out.",
    "oauth_connected": "Mailbox connected: mailvia holds no password, only tokens it renews "
    "itself.",
    "oauth_reconnected": "Reconnected: the held mail is released, in its original order.",
    "oauth_revoked": "Disconnected: the consent is revoked at Google and mailvia's tokens are "
    "deleted. Mail for this channel is held until you reconnect.",
    "oauth_no_revocation": "Disconnected: mailvia's tokens are deleted. Microsoft offers no way "
    "for an app to revoke a refresh token: to cut access at Microsoft too, remove mailvia from "
    "your account's apps (myapps.microsoft.com) or ask your admin to revoke your sessions. "
    "Mail for this channel is held until you reconnect.",
    "oauth_unrevoked": "Disconnected: mailvia's tokens are deleted, but the provider could not "
    "be reached to revoke the consent: remove mailvia from your account's permissions there. "
    "Mail for this channel is held until you reconnect.",
    "setup": "Your organization is set up: you now sign in and send as your own address.",
    "renamed": "Organization renamed.",
    "domain": "Sending domain added.",
    "team": "Team added.",
    "oauth_app": "OAuth app saved.",
    "oauth_app_revived": "OAuth app saved. The mailboxes disconnected only because the "
    "provider refused the app are being tried again with it, their held mail in order.",
    "oauth_app_removed": "OAuth app removed.",
}


class SignInRequired(Exception):
    """No valid session: go to the sign-in page."""


class PasswordChangeRequired(Exception):
    """A one-time password is in use: change it before anything else."""


@dataclass
class Web:
    """The state of the web app: the services, and failed sign-ins (counted in this process's
    memory, on `monotonic` time)."""

    services: Services
    signins: FailedSignIns = field(default_factory=lambda: FailedSignIns(PAGES))
    monotonic: Callable[[], float] = time.monotonic
    env: Environment = field(init=False)

    def __post_init__(self) -> None:
        self.env = Environment(
            loader=FileSystemLoader(str(TEMPLATES)),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["when"] = when
        self.env.filters["iso"] = iso
        self.env.filters["ago"] = lambda at: ago(at, now())
        self.env.filters["thousands"] = lambda n: f"{n:,}"
        self.env.globals.update(
            oauth_offer=oauth_offer,
            basic_auth_off=basic_auth_off,
            state_words=state_words,
            message_sentence=message_sentence,
            reply_words=reply_words,
            reason_words=reason_words,
            outcome_words=lambda outcome: OUTCOMES.get(outcome, outcome),
            step_words=lambda step: STEPS.get(step, step),
            setting_words=lambda value: SETTINGS.get(value, value),
            hour_words=hour_words,
            outbox_words=outbox_words,
        )


def get_web(request: Request) -> Web:
    web: Web = request.app.state.web
    return web


WebDep = Annotated[Web, Depends(get_web)]


def signed_in(request: Request, web: WebDep) -> User:
    """The signed-in user of a session that has not ended; raises SignInRequired, or
    PasswordChangeRequired while a one-time password is in use (except on the password page
    itself)."""
    secret = current_session(request).secret
    user = web.services.sessions.check(secret, now()) if secret else None
    if user is None:
        raise SignInRequired()
    request.state.user = user
    if user.must_change_password and request.url.path != "/password":
        raise PasswordChangeRequired()
    return user


UserDep = Annotated[User, Depends(signed_in)]


def when(at: float | None) -> str:
    """An instant as people read it, in UTC."""
    if at is None:
        return ""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(at: float) -> str:
    """An instant for a `<time datetime>`."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def state_words(value: str) -> Words:
    """A message's, recipient's or channel's state in plain words (its code as the label when
    the table has none)."""
    found = STATES.get(value) or CHANNEL_STATES.get(value)  # type: ignore[call-overload]
    return found or Words(str(value), str(value))


def render(request: Request, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    """Render a page with the session's CSRF token, the user, the nav and the banners."""
    web = get_web(request)
    user: User | None = getattr(request.state, "user", None)
    notice = NOTICES.get(request.query_params.get("notice", ""))
    page = web.env.get_template(template).render(
        request=request,
        path=request.url.path,
        csrf=current_session(request).csrf,
        user=user,
        banners=banners(web.services, user) if user else [],
        app_banners=app_banners(web.services, user) if user else [],
        notice=notice,
        **context,
    )
    return HTMLResponse(page, status_code=status)


def redirect(path: str, *, notice: str | None = None) -> RedirectResponse:
    """303 See Other to a path of this site (a form's answer: POST, then GET)."""
    if notice:
        path += ("&" if "?" in path else "?") + "notice=" + quote(notice)
    return RedirectResponse(path, status_code=303)


@dataclass(frozen=True)
class Banner:
    channel: Channel
    held: int


def app_banners(services: Services, user: User) -> list[RefusedApp]:
    """For admins: the OAuth apps a provider refused, keeping the organization's mailboxes
    disconnected (the Team channels page is where they mend them)."""
    if not user.is_admin:
        return []
    return services.oauth_apps.refused(user, services.channels.visible(user))


def banners(services: Services, user: User) -> list[Banner]:
    """The disconnected channels this user must fix, with how much mail each holds."""
    broken = [
        c
        for c in services.channels.visible(user)
        if c.state is ChannelState.DISCONNECTED and concerns(c, user)
    ]
    if not broken:
        return []
    counts = services.backlog.counts(user.organization_id)
    return [Banner(c, counts.get(c.id, {}).get(State.HELD, 0)) for c in broken]


def now() -> float:
    return time.time()


def status_for(exc: MailviaError) -> int:
    """The HTTP status of a page that shows this error."""
    for kind, status in (
        (InvalidInput, 400),
        (ProviderRefused, 400),
        (Unauthenticated, 401),
        (Forbidden, 403),
        (NotFound, 404),
        (Conflict, 409),
    ):
        if isinstance(exc, kind):
            return status
    return 503
