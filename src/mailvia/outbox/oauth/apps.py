"""The organization's own OAuth app for each provider: admins set, read and remove it (the
client secret sealed by the vault, never read back); the operator-wide app from the settings
stands in for an organization that has none.

An organization's own app is what lets a Google Workspace keep the connection "Internal" (no
Google verification, providers_2026-12.md [N17]) and a Microsoft 365 tenant consent to its own
Entra app registration.

When the provider refuses an app (its secret expired, the app disabled: domain/oauth.Refusal),
every mailbox connected through it is disconnected for that refusal alone; changing the app
tries them again (`revive`): an admin saving the organization's app, or the operator's app
found changed when a process starts (`revive_operator`: its fingerprint, an HMAC under a key
derived from the master key, differs from the refused one's). Their refresh tokens still
work, so no rep has to reconnect; a mailbox disconnected for its own reason (a revoked
consent, a changed password) stays disconnected.

Side effects: app rows; revived mailboxes' token and channel rows, their held mail queued
again, a `channel.reconnected` event each.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from mailvia.domain.channel import Channel, Provider
from mailvia.domain.clock import Instant
from mailvia.domain.errors import InvalidInput, MailviaError, NotFound
from mailvia.domain.oauth import (
    APP_REFUSALS,
    AppSource,
    OAuthApp,
    Refusal,
    RefusedApp,
    refused_apps,
)
from mailvia.domain.tenancy import User, require_admin
from mailvia.outbox.dispatch import new_event
from mailvia.outbox.oauth.ports import AppStore, Revived, SealedApp
from mailvia.outbox.ports import Vault

log = logging.getLogger(__name__)

DEFAULT_TENANT = "organizations"  # any work or school account (Entra's multi-tenant endpoint)
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,254}$")


@dataclass(frozen=True)
class AppView:
    """An app as people see it: never the secret, only whether one is stored."""

    provider: Provider
    client_id: str
    tenant: str | None
    has_client_secret: bool
    source: AppSource
    updated_at: Instant | None = None
    revived: int = 0  # saved: how many mailboxes disconnected for its refusal are active again


def _check_client_id(client_id: str) -> str:
    client_id = client_id.strip()
    if not client_id or len(client_id) > 500 or any(c.isspace() for c in client_id):
        raise InvalidInput("client_id: one word of up to 500 characters is required")
    return client_id


def _check_tenant(provider: Provider, tenant: str | None) -> str | None:
    if provider is Provider.GOOGLE:
        if tenant:
            raise InvalidInput("tenant: only a Microsoft app has a tenant")
        return None
    tenant = (tenant or DEFAULT_TENANT).strip()
    if not _TENANT.match(tenant):
        raise InvalidInput(
            "tenant: a tenant id, a domain (contoso.onmicrosoft.com), organizations or common"
        )
    return tenant


class OAuthApps:
    """Admins' settings for the organization's OAuth apps; `resolve` for the flow and tokens."""

    def __init__(
        self,
        store: AppStore,
        vault: Vault,
        *,
        operator: Mapping[Provider, OAuthApp],
        fingerprint_key: bytes,
    ) -> None:
        """`fingerprint_key`: the secret key of the apps' fingerprints (an HMAC: unkeyed, the
        hash of a client secret could be guessed offline); required, never empty."""
        if not fingerprint_key:
            raise ValueError("an OAuth app's fingerprint needs a secret key")
        self.store = store
        self.vault = vault
        self.operator = dict(operator)
        self.fingerprint_key = fingerprint_key

    def fingerprint(self, app: OAuthApp) -> str:
        """Names this app as it is now (client id, secret, tenant) without revealing its
        secret: an HMAC under a key derived from the master key."""
        said = "\0".join(
            (app.provider.value, app.client_id, app.client_secret or "", app.tenant or "")
        )
        return hmac.new(self.fingerprint_key, said.encode(), hashlib.sha256).hexdigest()[:32]

    def revive_operator(self, now: Instant) -> list[Revived]:
        """At a process's start: the mailboxes whose operator's app was refused, tried again if
        that app (the settings) is not the one refused any more."""
        revived: list[Revived] = []
        for provider, app in self.operator.items():
            revived += self._revive(
                provider, app.client_id, [Refusal.OPERATOR_APP], now,
                unless_app=self.fingerprint(app),
            )  # fmt: skip
        return revived

    def _revive(
        self,
        provider: Provider,
        client_id: str,
        refusals: Sequence[Refusal],
        now: Instant,
        *,
        org_id: str | None = None,
        unless_app: str | None = None,
    ) -> list[Revived]:
        """Try the mailboxes again (the store's `revive_mailboxes`), with their events. Never
        raises for the store: the app is saved, or the process starts, all the same (a
        mailbox not tried again is logged, and stays as it was)."""
        try:
            revived = self.store.revive_mailboxes(
                provider, client_id, [r.value for r in refusals], now,
                org_id=org_id, unless_app=unless_app,
            )  # fmt: skip
        except MailviaError as exc:
            log.warning("%s OAuth app changed, its mailboxes not tried again: %s", provider, exc)
            return []
        events = [
            new_event(
                r.organization_id,
                "channel.reconnected",
                now,
                {"channel_id": r.channel_id, "released": r.released, "app_changed": True},
            )
            for r in revived
            if r.channel is not None
        ]
        if events:
            try:
                self.store.add_events(events)
            except MailviaError as exc:  # the mailboxes are back all the same
                log.warning("%s OAuth app changed: events not recorded: %s", provider, exc)
        if revived:
            log.info("%s OAuth app changed: %d mailbox(es) tried again", provider, len(revived))
        return revived

    def put(
        self,
        actor: User,
        provider: Provider,
        *,
        client_id: str,
        client_secret: str | None,
        tenant: str | None,
        now: Instant,
    ) -> AppView:
        """Set the organization's app (admins). A missing secret keeps the stored one; the
        first time, one is required. A missing tenant (None) keeps the stored one too (so a
        secret rotated with `admin oauth-app` leaves a single-tenant app single-tenant); an
        empty one, or none stored, is `organizations`. Raises Forbidden, InvalidInput."""
        _require_admin(actor)
        client_id = _check_client_id(client_id)
        existing = self.store.oauth_app(actor.organization_id, provider)
        if tenant is None and existing is not None:
            tenant = existing.tenant
        tenant = _check_tenant(provider, tenant)
        if client_secret is not None and (not client_secret or len(client_secret) > 4096):
            raise InvalidInput("client_secret: up to 4096 characters")
        if client_secret:
            secret = self.vault.seal(client_secret.encode())
        elif existing is not None and existing.secret is not None:
            secret = existing.secret
        else:
            raise InvalidInput("client_secret: required (the app's secret from the provider)")
        self.store.put_oauth_app(
            SealedApp(actor.organization_id, provider, client_id, secret, tenant, now)
        )
        # the mailboxes of this client refused for their app (this one, or the operator's
        # of the same client id that this one now stands in for) are tried again
        revived = self._revive(
            provider, client_id, sorted(APP_REFUSALS), now, org_id=actor.organization_id
        )
        back = sum(1 for r in revived if r.channel is not None)  # made active again
        return replace(self.view(actor, provider), revived=back)

    def view(self, actor: User, provider: Provider) -> AppView:
        """The app connections use: the organization's own, else the operator's (admins).
        Raises Forbidden, NotFound when there is none."""
        _require_admin(actor)
        own = self.store.oauth_app(actor.organization_id, provider)
        if own is not None:
            return AppView(
                provider, own.client_id, own.tenant, own.secret is not None,
                AppSource.ORGANIZATION, own.updated_at,
            )  # fmt: skip
        fallback = self.operator.get(provider)
        if fallback is None:
            raise NotFound(f"no {provider.display_name} OAuth app is set up")
        return AppView(
            provider, fallback.client_id, fallback.tenant, bool(fallback.client_secret),
            AppSource.OPERATOR,
        )  # fmt: skip

    def refused(self, actor: User, channels: list[Channel]) -> list[RefusedApp]:
        """For admins: the apps a provider refused, keeping some of these channels (the
        organization's) disconnected; only the mailboxes whose tokens are of the client the
        provider's app has now are counted as coming back when it is mended, the others
        (connected through a client since replaced) as `stranded`: their reps reconnect."""
        if not actor.is_admin:
            return []
        org_id = actor.organization_id
        clients = {t.channel_id: t.client_id for t in self.store.oauth_token_list(org_id)}
        now_of: dict[Provider, str | None] = {}
        for provider in Provider:
            own = self.store.oauth_app(org_id, provider)
            fallback = self.operator.get(provider)
            now_of[provider] = own.client_id if own else fallback.client_id if fallback else None

        def current(channel: Channel) -> bool:
            client = clients.get(channel.id)
            return (
                client is not None
                and channel.oauth is not None
                and (client == now_of[channel.oauth])
            )

        return refused_apps(channels, current)

    def remove(self, actor: User, provider: Provider) -> None:
        """Remove the organization's own app (the operator's, if any, takes over). Raises
        Forbidden, NotFound."""
        _require_admin(actor)
        if not self.store.remove_oauth_app(actor.organization_id, provider):
            raise NotFound(f"the organization has no {provider.display_name} OAuth app")

    def ready(self, org_id: str, provider: Provider) -> bool:
        """Whether new connections have an app (the organization's or the operator's), without
        opening its secret (a page asks only whether to offer OAuth)."""
        return self.store.oauth_app(org_id, provider) is not None or provider in self.operator

    def resolve(self, org_id: str, provider: Provider) -> OAuthApp | None:
        """The app new connections use (secret opened), or None when there is none."""
        own = self.store.oauth_app(org_id, provider)
        if own is None:
            return self.operator.get(provider)
        secret = self.vault.open(own.secret).decode() if own.secret else None
        return OAuthApp(provider, own.client_id, secret, own.tenant, AppSource.ORGANIZATION)

    def for_client(self, org_id: str, provider: Provider, client_id: str) -> OAuthApp | None:
        """The app with this client id (the one a mailbox's consent was given through), if it is
        still set up: refresh tokens only work with the client they were issued to."""
        for app in (self.resolve(org_id, provider), self.operator.get(provider)):
            if app is not None and app.client_id == client_id:
                return app
        return None


def _require_admin(actor: User) -> None:
    require_admin(actor, "manage the organization's OAuth apps")
