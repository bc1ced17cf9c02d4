"""OAuth over HTTP: the organization's own OAuth app per provider (admins; the client secret
write-only), and starting a mailbox connection from an API client.

`GET /v1/oauth/{provider}/start` answers a mailvia link, not the provider's: whoever opens it
must sign in to mailvia as the token's user before the browser goes on to the provider, so a
link handed to someone else connects nothing (see outbox/oauth/connect.py).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from mailvia.domain.channel import Provider, TransportKind
from mailvia.domain.clock import to_iso
from mailvia.domain.oauth import AppSource
from mailvia.ingress.api.auth import CallerDep, JsonCallerDep, ServicesDep
from mailvia.ingress.api.errors import problems
from mailvia.ingress.api.schemas import Input, Line, Text, Timestamp
from mailvia.outbox.oauth.apps import AppView
from mailvia.outbox.services import Services

router = APIRouter(prefix="/v1", tags=["oauth"])


class OAuthAppIn(Input):
    """The organization's app as registered with the provider."""

    client_id: Annotated[Line, Field(min_length=1, max_length=500)]
    client_secret: Annotated[Text, Field(min_length=1, max_length=4096)] | None = Field(
        None, description="Write-only. Required the first time; omitted: the stored one stays."
    )
    tenant: Annotated[Line, Field(max_length=255)] | None = Field(
        None,
        description=(
            "Microsoft only: a tenant id or domain, or `organizations` (a new app's "
            "default); omitted, the stored one is kept."
        ),
    )


class OAuthAppOut(BaseModel):
    provider: Provider
    client_id: str
    tenant: str | None
    has_client_secret: bool
    source: AppSource = Field(
        description="`organization`: its own app; `operator`: the operator-wide fallback."
    )
    redirect_uri: str = Field(description="The redirect URI to register with the app.")
    updated_at: Timestamp | None


class OAuthStartOut(BaseModel):
    authorization_url: str = Field(
        description="Open in the user's browser: mailvia asks for the user's own sign-in, "
        "then sends the browser to the provider's consent page."
    )
    expires_at: Timestamp


def _payload(services: Services, app: AppView) -> dict[str, Any]:
    return {
        "provider": str(app.provider),
        "client_id": app.client_id,
        "tenant": app.tenant,
        "has_client_secret": app.has_client_secret,
        "source": str(app.source),
        "redirect_uri": services.oauth.redirect_uri(app.provider),
        "updated_at": to_iso(app.updated_at),
    }


@router.put(
    "/organization/oauth/{provider}",
    response_model=OAuthAppOut,
    responses=problems(400, 401, 403, 413, 422, 503),
    summary="Set the organization's own OAuth app for a provider (admins)",
)
def put_app(
    provider: Provider, body: OAuthAppIn, services: ServicesDep, user: JsonCallerDep
) -> dict[str, Any]:
    """The client secret is sealed at rest and never returned (`has_client_secret`)."""
    app = services.oauth_apps.put(
        user,
        provider,
        client_id=body.client_id,
        client_secret=body.client_secret,
        tenant=body.tenant,
        now=time.time(),
    )
    return _payload(services, app)


@router.get(
    "/organization/oauth/{provider}",
    response_model=OAuthAppOut,
    responses=problems(401, 403, 404, 422, 503),
    summary="The OAuth app the organization's connections use (admins)",
)
def get_app(provider: Provider, services: ServicesDep, user: CallerDep) -> dict[str, Any]:
    """Its own, else the operator-wide one; 404 when there is neither."""
    return _payload(services, services.oauth_apps.view(user, provider))


@router.delete(
    "/organization/oauth/{provider}",
    status_code=204,
    response_class=Response,
    responses=problems(401, 403, 404, 422, 503),
    summary="Remove the organization's own OAuth app (admins)",
)
def delete_app(provider: Provider, services: ServicesDep, user: CallerDep) -> Response:
    """Mailboxes connected with it can no longer renew their tokens: reconnect them with the
    app that takes over (the operator's, or a new one)."""
    services.oauth_apps.remove(user, provider)
    return Response(status_code=204)


@router.get(
    "/oauth/{provider}/start",
    response_model=OAuthStartOut,
    responses=problems(401, 403, 404, 422, 503),
    summary="Start connecting the caller's mailbox by OAuth",
)
def start(
    provider: Provider,
    services: ServicesDep,
    user: CallerDep,
    transport: Annotated[
        TransportKind | None,
        Query(description="`gmail_api` / `graph` (the default) or `smtp` (XOAUTH2)."),
    ] = None,
    channel: Annotated[
        str | None,
        Query(
            pattern=r"^[^\x00-\x1f\x7f]{1,200}$",
            description="A channel of the caller's to reconnect (or to turn into an OAuth "
            "mailbox), by id or name.",
        ),
    ] = None,
) -> dict[str, Any]:
    """The mailbox's address comes from the provider and must be one of the caller's sender
    identities. The link is good for 10 minutes, once."""
    started = services.oauth.start_for_api(
        user, provider, transport=transport, channel_ref=channel, now=time.time()
    )
    return {"authorization_url": started.url, "expires_at": to_iso(started.expires_at)}
