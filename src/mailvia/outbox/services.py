"""The use cases, bundled as the composition root hands them to each ingress: the only door
web/ and ingress/ have to the store (they never hold the store itself)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from mailvia.domain.channel import Channel
from mailvia.domain.ratelimit import RequestCaps, RequestRate
from mailvia.outbox.accounts import Accounts, Sessions
from mailvia.outbox.backlog import Backlog
from mailvia.outbox.channels import Channels
from mailvia.outbox.dispatch import Dispatcher
from mailvia.outbox.listeners import Listeners
from mailvia.outbox.mend import ChannelMending
from mailvia.outbox.messages import Messages
from mailvia.outbox.oauth.apps import OAuthApps
from mailvia.outbox.oauth.connect import OAuthConnect
from mailvia.outbox.oauth.mailboxes import OAuthMailboxes
from mailvia.outbox.probe import ChannelTester
from mailvia.outbox.setup import Setup
from mailvia.outbox.submit import Submitter
from mailvia.outbox.tenancy import Tenancy
from mailvia.outbox.tokens import ApiTokens
from mailvia.outbox.webhook_dispatch import WebhookDispatcher
from mailvia.outbox.webhook_ports import Metrics
from mailvia.outbox.webhooks import Webhooks


@dataclass(frozen=True)
class ApiOptions:
    """What the HTTP listener holds callers to (docs/settings.md); None: that limit is off."""

    rate_limit: RequestRate | None  # requests per API token
    recipient_limit: RequestRate | None  # recipients per API token
    caps: RequestCaps  # what one request may carry
    metrics_token: str | None = field(repr=False)  # guards /metrics over HTTP (None: no route)


@dataclass(frozen=True)
class Services:
    """Everything an ingress may call. Built by app/wiring.py; closed with `aclose`."""

    tenancy: Tenancy  # organizations (their default channel), teams, users, identities
    setup: Setup  # the first run of a fresh install, the getting-started checklist
    accounts: Accounts  # signing in with a password, the password policy
    sessions: Sessions  # the pages' sign-in sessions
    tokens: ApiTokens
    channels: Channels
    tester: ChannelTester  # Test connection, reconnect
    mend: ChannelMending  # edit (tested first), remove with mail, cancel a channel's mail
    mailboxes: OAuthMailboxes  # OAuth mailboxes: disconnect, remove, status
    oauth_apps: OAuthApps  # the organization's own OAuth apps (admins)
    oauth: OAuthConnect  # the connect flow of OAuth mailboxes
    submitter: Submitter
    messages: Messages  # who may see a message: read, list, cancel; the event stream
    backlog: Backlog  # queue counts and budget use
    webhooks: Webhooks
    dispatcher: Dispatcher
    webhook_dispatcher: WebhookDispatcher
    metrics: Metrics
    listeners: Listeners  # the submission ports this process listens on, told by serve
    pool: Callable[[], Channel | None]  # the shared pool's channel (None: not configured)
    rotate_key: Callable[[], str]  # re-wrap every secret under a new master key
    http_app: Callable[[str], Any]  # the HTTP app (API and pages), given where it listens
    max_message_size: int
    api: ApiOptions
    startup_notes: tuple[str, ...]  # what building fixed (e.g. files made private)
    close: Callable[[], Awaitable[None]]

    async def aclose(self) -> None:
        await self.close()
