"""OAuth mailboxes for tests: a Gmail API or Graph channel for jane, stored as the OAuth
connect flow would make it (the preset's limits over that transport), and a credential source
that gets access tokens from a token endpoint (the fake providers') with a refresh token."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import httpx

from mailvia.domain.channel import Auth, Channel, Kind, Owner, Provider, Scope, Security
from mailvia.domain.channel import TransportKind as T
from mailvia.domain.errors import CredentialsFailed
from mailvia.domain.presets import PRESETS
from mailvia.domain.replies import Reply
from mailvia.outbox.ports import Credentials
from support.world import World

PROVIDERS = {T.GMAIL_API: Provider.GOOGLE, T.GRAPH: Provider.MICROSOFT, T.SMTP: Provider.GOOGLE}


def oauth_mailbox(world: World, transport: T, **changes: Any) -> Channel:
    """Jane's OAuth mailbox sending through `transport`, with its preset's limits there."""
    provider = PROVIDERS[transport]
    preset = PRESETS[provider.preset]
    limits = preset.limits(transport)
    channel = Channel(
        id=f"ch_{transport}",
        organization_id=world.jane.organization_id,
        name=f"jane-{transport}",
        kind=Kind.SMTP,
        host=preset.host,
        port=preset.port,
        security=Security.STARTTLS,
        auth=Auth.XOAUTH2,
        scope=Scope.ADDRESS,
        owner=Owner(user_id=world.jane.id),
        preset=preset.name,
        username="jane@acme.test",
        address="jane@acme.test",
        budgets=limits.budgets,
        max_recipients_per_message=limits.max_recipients_per_message,
        max_connections=limits.max_connections,
        transport=transport,
        oauth=provider,
    )
    return world.store.add_channel(replace(channel, **changes), None, time.time())


class TokenEndpoint:
    """A credential source that refreshes access tokens at a real token endpoint: a fresh
    token when none is held, when the one held was refused (the dispatcher's renewal) or
    when one is asked for (`renew`: Test connection)."""

    def __init__(self, url: str, refresh_token: str, *, client_id: str, secret: str) -> None:
        self.url = url
        self.refresh_token = refresh_token
        self.client = (client_id, secret)
        self.token: str | None = None
        self.renewals = 0

    async def __call__(
        self, channel: Channel, *, rejected: Credentials | None = None, renew: bool = False
    ) -> Credentials | None:
        refused = rejected is not None and rejected.password == self.token
        if self.token is None or refused or renew:
            self.token = await self._refresh()
            self.renewals += rejected is not None
        return Credentials(channel.address or "", self.token)

    async def _refresh(self) -> str:
        form = {
            "grant_type": "refresh_token",
            "refresh_token": self.refresh_token,
            "client_id": self.client[0],
            "client_secret": self.client[1],
        }
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.post(self.url, data=form)
        if response.status_code != 200:
            raise CredentialsFailed(Reply(535, "5.7.8", f"mailvia: {response.text[:200]}"))
        token: str = response.json()["access_token"]
        if "refresh_token" in response.json():
            self.refresh_token = response.json()["refresh_token"]
        return token
