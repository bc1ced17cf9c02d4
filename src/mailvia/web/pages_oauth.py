"""Connecting mailboxes by OAuth from the pages: "Connect Gmail" / "Connect Microsoft 365"
(and "Reconnect with ..."), the API's `/oauth/go/ID` links, the provider's callback, and
Disconnect.

The start links are plain links, not forms: the answer redirects to the provider, and the
pages' Content-Security-Policy (`form-action 'self'`) would stop a form's redirect there.
Each flow is bound to this browser's session (outbox/oauth/connect.py); the callback is
finished only in that session, signed in as the same user, and is spent either way.

Side effects: flow rows; a finished flow makes or reconnects a channel and releases its held
mail; Disconnect deletes the tokens (revoking the consent at Google) and holds the mail.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from mailvia.domain.channel import Provider, TransportKind
from mailvia.domain.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    ProviderRefused,
    ProviderUnavailable,
)
from mailvia.domain.tenancy import User
from mailvia.web.auth import current_session
from mailvia.web.common import (
    PasswordChangeRequired,
    SignInRequired,
    UserDep,
    Web,
    WebDep,
    now,
    redirect,
    render,
    signed_in,
    status_for,
)

router = APIRouter()
Line = Annotated[str | None, Query(max_length=4096)]


def _session(request: Request) -> str:
    """The secret of this browser's signed-in session: a flow is bound to it."""
    return current_session(request).secret or ""


def _away(url: str) -> RedirectResponse:
    """303 to the provider (or to mailvia's own callback, for a fake on loopback)."""
    return RedirectResponse(url, status_code=303)


@router.get("/oauth/{provider}/start")
def start(
    request: Request,
    provider: Provider,
    user: UserDep,
    web: WebDep,
    transport: TransportKind | None = None,
    channel: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """Start a flow in this session and send the browser to the provider's consent page."""
    url = web.services.oauth.start_in_browser(
        user,
        provider,
        session=_session(request),
        transport=transport,
        channel_ref=channel or None,
        now=now(),
    )
    return _away(url)


@router.get("/oauth/go/{flow_id}")
def go(request: Request, flow_id: str, user: UserDep, web: WebDep) -> Response:
    """An API client's link: after the user's own sign-in, on to the provider."""
    url = web.services.oauth.launch(user, flow_id, session=_session(request), now=now())
    return _away(url)


def _signed_in_or_none(request: Request, web: Web) -> User | None:
    try:
        return signed_in(request, web)
    except (SignInRequired, PasswordChangeRequired):
        return None


@router.get("/oauth/{provider}/callback", response_class=HTMLResponse)
async def callback(
    request: Request,
    provider: Provider,
    web: WebDep,
    state: Line = None,
    code: Line = None,
    error: Line = None,
) -> Response:
    """The provider sends the browser back here, with a code or an error."""
    user = _signed_in_or_none(request, web)
    session = _session(request) if user is not None else None
    try:
        done = await web.services.oauth.finish(
            user, session, provider, state=state or "", code=code, error=error, now=now()
        )
    except (InvalidInput, Forbidden, Conflict, ProviderRefused, ProviderUnavailable) as exc:
        return render(
            request,
            "error.html",
            status=status_for(exc),
            title=f"{provider.display_name}: nothing was connected",
            detail=str(exc),
            back=("/channel", "My delivery channel"),  # where connecting started
        )
    notice = "oauth_reconnected" if done.reconnected else "oauth_connected"
    return redirect(f"/channels/{done.channel.id}", notice=notice)


@router.post("/channels/{channel_id}/disconnect")
async def disconnect(channel_id: str, user: UserDep, web: WebDep) -> Response:
    """Delete the mailbox's tokens (the consent revoked at Google), hold its mail."""
    done = await web.services.mailboxes.disconnect(user, channel_id, now())
    notice = {True: "oauth_revoked", False: "oauth_no_revocation", None: "oauth_unrevoked"}
    return redirect(f"/channels/{done.channel.id}", notice=notice[done.revoked])
