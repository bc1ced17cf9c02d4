"""The connect flow: authorization code with PKCE (S256), `state` and an OpenID nonce, from
"Connect Gmail" (or an API client) to the provider's callback.

A flow is stored (state hashed, verifier sealed) so that any process can finish it, once,
within FLOW_SECONDS. It is bound to the web session that sends the browser to the provider:
the callback must come back, signed in as the same user, in that same session. So a rep
cannot hand a colleague a consent link and collect the colleague's mailbox into a channel of
their own (the colleague's browser finishes the flow in the colleague's session, or in none,
and the flow is spent, refused). An API client gets a mailvia link (`/oauth/go/ID`) that asks
for the user's own sign-in before it sends the browser on to the provider.

Side effects: flow rows; a finished flow makes or reconnects a mailbox (mailboxes.py).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace

from mailvia.domain.channel import Provider, TransportKind
from mailvia.domain.clock import Instant
from mailvia.domain.errors import Forbidden, InvalidInput, ProviderRefused
from mailvia.domain.ids import make_id
from mailvia.domain.oauth import (
    APP_REFUSED,
    OAuthApp,
    connect_refused,
    oauth_offer,
    scopes_for,
)
from mailvia.domain.tenancy import User
from mailvia.outbox.channels import Channels
from mailvia.outbox.oauth.apps import OAuthApps
from mailvia.outbox.oauth.mailboxes import Connected, OAuthMailboxes
from mailvia.outbox.oauth.ports import AuthorizationRequest, FlowStore, PendingFlow, ProviderClient
from mailvia.outbox.ports import Vault

FLOW_SECONDS = 600.0
SPENT = (
    "This connection link is unknown, has expired or was already used: nothing was connected. "
    "Start again from My delivery channel."
)
ANOTHER_SESSION = (
    "This connection was started by another user or in another browser session, so nothing "
    "was connected. To connect your own mailbox, sign in and start from My delivery channel."
)


@dataclass(frozen=True)
class Started:
    """Where to send the browser, and until when the flow waits."""

    url: str
    expires_at: Instant


def _digest(kind: str, value: str) -> str:
    return hashlib.sha256(f"mailvia oauth {kind} {value}".encode()).hexdigest()


class OAuthConnect:
    """Start, launch and finish connections."""

    def __init__(
        self,
        flows: FlowStore,
        apps: OAuthApps,
        client: ProviderClient,
        vault: Vault,
        mailboxes: OAuthMailboxes,
        channels: Channels,
        *,
        public_url: Callable[[], str],
    ) -> None:
        self.flows = flows
        self.apps = apps
        self.client = client
        self.vault = vault
        self.mailboxes = mailboxes
        self.channels = channels
        self.public_url = public_url

    def redirect_uri(self, provider: Provider) -> str:
        """The callback to register with the provider's app."""
        return f"{self.public_url().rstrip('/')}/oauth/{provider.value}/callback"

    def start_for_api(
        self,
        actor: User,
        provider: Provider,
        *,
        transport: TransportKind | None = None,
        channel_ref: str | None = None,
        now: Instant,
    ) -> Started:
        """A flow for an API client: a mailvia link that asks for the actor's own sign-in,
        then sends the browser to the provider. Raises InvalidInput (no app, a transport the
        provider lacks), NotFound, Forbidden (a channel the actor does not own)."""
        flow = self._new_flow(actor, provider, transport, channel_ref, now)
        self.flows.add_flow(flow, now)
        return Started(f"{self.public_url().rstrip('/')}/oauth/go/{flow.id}", flow.expires_at)

    def start_in_browser(
        self,
        actor: User,
        provider: Provider,
        *,
        session: str,
        transport: TransportKind | None = None,
        channel_ref: str | None = None,
        now: Instant,
    ) -> str:
        """Start and launch at once (the pages): the provider's authorization URL."""
        flow = self._new_flow(actor, provider, transport, channel_ref, now)
        self.flows.add_flow(flow, now)
        return self.launch(actor, flow.id, session=session, now=now)

    def launch(self, actor: User, flow_id: str, *, session: str, now: Instant) -> str:
        """Bind the flow to this web session and make the provider's authorization URL.
        Raises InvalidInput (unknown, expired or already launched), Forbidden (another
        user's flow)."""
        flow = self.flows.get_flow(flow_id)
        if flow is None or flow.expires_at <= now or flow.state_hash is not None:
            raise InvalidInput(SPENT)
        if flow.user_id != actor.id:
            self.flows.drop_flow(flow.id)  # a link opened by someone else is spent
            raise Forbidden(ANOTHER_SESSION)
        app = self._app(actor.organization_id, flow.provider)
        state, verifier, nonce = (secrets.token_urlsafe(n) for n in (32, 48, 16))
        launched = replace(
            flow,
            session=_digest("session", session),
            state_hash=_digest("state", state),
            verifier=self.vault.seal(verifier.encode()),
            nonce=nonce,
        )
        if not self.flows.launch_flow(launched, now):
            raise InvalidInput(SPENT)
        hint = None
        if flow.channel_id is not None:
            hint = self.channels.get(actor, flow.channel_id).address
        request = AuthorizationRequest(
            redirect_uri=self.redirect_uri(flow.provider),
            scopes=scopes_for(flow.provider, flow.transport),
            state=state,
            verifier=verifier,
            nonce=nonce,
            login_hint=hint,
        )
        return self.client.authorization_url(app, request)

    async def finish(
        self,
        actor: User | None,
        session: str | None,
        provider: Provider,
        *,
        state: str,
        code: str | None,
        error: str | None,
        now: Instant,
    ) -> Connected:
        """The provider's callback. The flow is spent whatever happens. Raises InvalidInput
        (unknown, expired or spent state), Forbidden (another user or session, an address
        that is not the actor's), ProviderRefused (consent declined, the code refused, an ID
        token that does not verify), ProviderUnavailable."""
        flow = self.flows.take_flow(_digest("state", state)) if state else None
        if flow is None or flow.expires_at <= now or flow.provider is not provider:
            raise InvalidInput(SPENT)
        if actor is None or session is None or actor.id != flow.user_id:
            raise Forbidden(ANOTHER_SESSION)
        if flow.session != _digest("session", session):
            raise Forbidden(ANOTHER_SESSION)
        if error or not code or flow.verifier is None or flow.nonce is None:
            why = error or "no authorization code"
            raise ProviderRefused(connect_refused(provider, why, at_callback=True), error=why)
        app = self._app(actor.organization_id, provider)
        try:
            consent = await self.client.exchange(
                app,
                code=code,
                verifier=self.vault.open(flow.verifier).decode(),
                redirect_uri=self.redirect_uri(provider),
                nonce=flow.nonce,
                now=now,
            )
        except ProviderRefused as exc:
            if exc.error not in APP_REFUSED and exc.error != "invalid_grant":
                raise
            words = connect_refused(provider, exc.error, at_callback=False, source=app.source)
            raise ProviderRefused(words, error=exc.error) from None
        return await self.mailboxes.connect(actor, flow, app, consent, now)

    def _new_flow(
        self,
        actor: User,
        provider: Provider,
        transport: TransportKind | None,
        channel_ref: str | None,
        now: Instant,
    ) -> PendingFlow:
        self._app(actor.organization_id, provider)
        channel_id = None
        if channel_ref is not None:
            channel = self.channels.get(actor, channel_ref)
            if channel.owner.user_id != actor.id:
                raise Forbidden(
                    "only the mailbox's owner can connect it: the consent comes from the "
                    "mailbox itself"
                )
            if provider not in (channel.oauth, oauth_offer(channel)):
                raise InvalidInput(f"{channel.name} is not a {provider.display_name} mailbox")
            channel_id = channel.id
            if transport is None and channel.oauth is provider:
                transport = channel.transport
        transport = transport or provider.api_transport
        scopes_for(provider, transport)  # raises InvalidInput for a transport it lacks
        return PendingFlow(
            id=make_id("flw", now, os.urandom(10)),
            organization_id=actor.organization_id,
            user_id=actor.id,
            provider=provider,
            transport=transport,
            channel_id=channel_id,
            created_at=now,
            expires_at=now + FLOW_SECONDS,
        )

    def _app(self, org_id: str, provider: Provider) -> OAuthApp:
        app = self.apps.resolve(org_id, provider)
        if app is None:
            raise InvalidInput(
                f"no {provider.display_name} OAuth app is set up: an admin enters the "
                "organization's app on the Team channels page"
            )
        return app
