"""The use cases, bundled as the composition root hands them to each ingress."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from mailvia.domain.channel import Channel
from mailvia.domain.ratelimit import RequestCaps, RequestRate
from mailvia.outbox.accounts import Sessions
from mailvia.outbox.channels import Channels
from mailvia.outbox.dispatch import Dispatcher
from mailvia.outbox.metrics import NO_METRICS
from mailvia.outbox.oauth.apps import OAuthApps
from mailvia.outbox.oauth.connect import OAuthConnect
from mailvia.outbox.oauth.mailboxes import OAuthMailboxes
from mailvia.outbox.ports import Store, Transport
from mailvia.outbox.probe import ChannelTester
from mailvia.outbox.submit import Submitter
from mailvia.outbox.tenancy import Tenancy
from mailvia.outbox.webhook_dispatch import WebhookDispatcher
from mailvia.outbox.webhook_ports import Metrics
from mailvia.outbox.webhooks import Webhooks


@dataclass
class Services:
    """Everything an ingress may call. Built by app.py; closed with `aclose`."""

    store: Store
    tenancy: Tenancy
    sessions: Sessions  # the pages' sign-in sessions
    channels: Channels
    submitter: Submitter
    dispatcher: Dispatcher
    transport: Transport
    pool: Callable[[], Channel | None]
    close: Callable[[], Awaitable[None]]
    max_message_size: int
    tester: ChannelTester | None = None
    rotate_key: Callable[[], str] | None = None  # re-wrap every secret under a new master key
    asgi: Callable[[], Any] | None = None  # builds the HTTP app (API and pages) to serve
    webhooks: Webhooks | None = None
    webhook_dispatcher: WebhookDispatcher | None = None
    metrics: Metrics = NO_METRICS
    metrics_token: str | None = field(default=None, repr=False)  # guards /metrics over HTTP
    api_rate_limit: RequestRate | None = None  # requests per API token; None: no limit
    oauth_apps: OAuthApps | None = None  # the organization's own OAuth apps (admins)
    oauth: OAuthConnect | None = None  # the connect flow of OAuth mailboxes
    mailboxes: OAuthMailboxes | None = None  # OAuth mailboxes: disconnect, remove, status
    http_url: str | None = None  # where `serve` listens (set once it has bound its socket)
    startup_notes: tuple[str, ...] = ()  # what building fixed (e.g. files made private)
    api_recipient_limit: RequestRate | None = None  # recipients per API token; None: no limit
    api_caps: RequestCaps = field(default_factory=RequestCaps)  # what one request may carry

    async def aclose(self) -> None:
        await self.close()
