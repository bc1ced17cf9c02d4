"""The composition root's wiring: `build(settings)` opens the store, the vault and the
transport and hands the use cases to the ingresses (imported only by a command that builds
the service: it pulls in SQLAlchemy, the HTTP clients and every use case)."""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from mailvia.app.asgi import Listening, asgi_app
from mailvia.app.oauth import OAuthParts, oauth_parts
from mailvia.domain.api_mail import DEFAULT_LIMITS, ApiLimits
from mailvia.domain.channel import (
    Channel,
    Kind,
    TransportKind,
)
from mailvia.domain.errors import InvalidChannel
from mailvia.domain.ratelimit import RequestCaps
from mailvia.keyring import derived_key, open_vault, rotate
from mailvia.outbox.accounts import Accounts, Sessions
from mailvia.outbox.backlog import Backlog
from mailvia.outbox.channels import Channels
from mailvia.outbox.dispatch import Dispatcher, DispatchOptions
from mailvia.outbox.listeners import Listeners
from mailvia.outbox.mend import ChannelMending
from mailvia.outbox.messages import Messages
from mailvia.outbox.notices import Notices
from mailvia.outbox.ports import Credentials, CredentialSource
from mailvia.outbox.probe import ChannelTester
from mailvia.outbox.services import ApiOptions, Services
from mailvia.outbox.setup import Setup
from mailvia.outbox.submit import Submitter
from mailvia.outbox.tenancy import Tenancy
from mailvia.outbox.test_message import TestMessages
from mailvia.outbox.tokens import ApiTokens
from mailvia.outbox.webhook_dispatch import WebhookDispatcher
from mailvia.outbox.webhook_ports import Metrics
from mailvia.outbox.webhooks import Webhooks
from mailvia.passwords import hash_password, verify_password
from mailvia.secrets import Vault
from mailvia.settings import Settings
from mailvia.shared_pool import ensure_pool, parse_relay
from mailvia.store import SqlStore, make_private, migrate, open_store
from mailvia.store.process import ChildStore, StoreProcess
from mailvia.transport import OutboundGuard, SmtpTransport
from mailvia.transport.apis import MailApiTransport
from mailvia.transport.composite import Transports
from mailvia.transport.probe import Prober
from mailvia.transport.webhooks import HttpWebhookSender, url_checker

if TYPE_CHECKING:
    from fastapi import FastAPI


def check_plaintext_host(
    allowed: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...],
) -> Callable[[str], None]:
    """A check that a host for `security: none` resolves only inside the allowed networks."""

    def check(host: str) -> None:
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise InvalidChannel(f"host {host!r} does not resolve") from exc
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            if not any(address in net for net in allowed):
                raise InvalidChannel(
                    "security none is allowed only for hosts inside MAILVIA_ALLOW_PRIVATE_HOSTS"
                )

    return check


@dataclass(frozen=True)
class Wired:
    """What `wire` built: the services an ingress gets, and the adapters behind them (for
    tests and the operator's tools; no ingress ever sees these)."""

    services: Services
    store: SqlStore
    vault: Vault
    transport: Transports


def build(settings: Settings, *, create_key: bool = False) -> Services:
    """The services for an ingress (see `wire`)."""
    return wire(settings, create_key=create_key).services


def wire(settings: Settings, *, create_key: bool = False) -> Wired:
    """Wire the service. Raises SecretsUnavailable when the master key does not fit, and
    StoreUnavailable when the data folder or the database cannot be made private."""
    adapters = open_adapters(settings, create_key=create_key)
    store, vault = adapters.store, adapters.vault
    backlog = Backlog(store)
    metrics = prometheus(backlog)
    webhooks = webhook_parts(store, vault, adapters.guard, metrics)
    pool = adapters.pool
    channels = Channels(
        store,
        vault,
        check_plaintext_host=check_plaintext_host(settings.allow_private_hosts),
        pool=lambda: pool,
    )
    worker = settings.worker_id or f"{socket.gethostname()}:{os.getpid()}"
    listening = Listening(settings)
    oauth = oauth_parts(
        store,
        vault,
        settings,
        channels,
        adapters.transport,
        worker=worker,
        public_url=listening.url,
    )
    delivery = delivery_parts(adapters, settings, channels, oauth, metrics, worker=worker)
    services = assemble(
        settings,
        adapters,
        channels=channels,
        oauth=oauth,
        delivery=delivery,
        webhooks=webhooks,
        backlog=backlog,
        metrics=metrics,
        listening=listening,
    )
    return Wired(services, store, vault, adapters.transport)


@dataclass(frozen=True)
class Adapters:
    """What the use cases are built over: the adapters (the store, the vault, the transport,
    the outbound address guard), with the shared pool's channel (None: POOL_RELAY unset),
    each provider API's limits, and what opening made private (one line each)."""

    store: SqlStore
    vault: Vault
    pool: Channel | None
    guard: OutboundGuard
    limits: dict[TransportKind, ApiLimits]
    transport: Transports
    made_private: tuple[str, ...]


def open_adapters(settings: Settings, *, create_key: bool) -> Adapters:
    """Make the data folder (private), bring the schema up to date, open the store and the
    vault, and keep the shared pool's row in step. Raises as `wire` says."""
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    made_private = make_private(settings.data_dir, settings.database_url)
    migrate(settings.database_url)
    store = open_store(settings.database_url)
    vault = open_vault(store, settings, create=create_key)
    store.use_cursor_key(derived_key(settings, b"mailvia list cursors"))
    pool = ensure_pool(store, settings, time.time())
    guard = OutboundGuard(settings.allow_private_hosts)
    limits = api_limits(settings)
    transport = transports(settings, guard, limits)
    return Adapters(store, vault, pool, guard, limits, transport, tuple(made_private))


def transports(
    settings: Settings, guard: OutboundGuard, limits: dict[TransportKind, ApiLimits]
) -> Transports:
    """SMTP through the outbound address guard, and the providers' mail APIs."""
    return Transports(
        SmtpTransport(guard=guard),
        MailApiTransport(
            gmail_url=settings.gmail_api_url, graph_url=settings.graph_api_url, limits=limits
        ),
    )


@dataclass(frozen=True)
class DeliveryParts:
    """The delivery side of one build: the dispatcher (its hot store calls in the store
    process `child` with DELIVERY_STORE=process), the submitter that wakes it, and the
    channel tester (Test connection, a test message)."""

    dispatcher: Dispatcher
    submitter: Submitter
    tester: ChannelTester
    child: StoreProcess | None


def delivery_parts(
    adapters: Adapters,
    settings: Settings,
    channels: Channels,
    oauth: OAuthParts,
    metrics: Metrics,
    *,
    worker: str,
) -> DeliveryParts:
    """Delivery, submission and Test connection, signing in with the same credentials."""
    store, pool = adapters.store, adapters.pool
    credentials = credential_source(settings, channels, oauth)
    notices = Notices(store, pool=lambda: pool, notice_from=settings.notice_from or "")
    child = StoreProcess(settings.database_url) if settings.delivery_store == "process" else None
    delivering = store if child is None else ChildStore(store, child)
    dispatcher = Dispatcher(
        delivering,
        adapters.transport,
        credentials=credentials,
        notify_disconnected=notices.channel_disconnected,
        metrics=metrics,
        workers=delivering,
        slots=store,
        options=dispatch_options(settings, worker=worker, dialect=store.dialect),
    )
    submitter = Submitter(
        store, pool=lambda: pool, on_submit=dispatcher.wake, api_limits=adapters.limits
    )
    tester = ChannelTester(
        store,
        channels,
        Prober(adapters.guard, apis=adapters.transport.apis),
        transport=adapters.transport,
        messages=TestMessages(store, submitter, clock=time.time),
        tokens=credentials,
        notify_disconnected=notices.channel_disconnected,
    )
    return DeliveryParts(dispatcher, submitter, tester, child)


def dispatch_options(settings: Settings, *, worker: str, dialect: str) -> DispatchOptions:
    """The dispatcher's options from the settings (records ride with the started marks
    except on PostgreSQL)."""
    return DispatchOptions(
        worker=worker,
        lease_seconds=settings.lease_seconds,
        shutdown_seconds=settings.shutdown_seconds,
        batch=settings.claim_batch,
        records_with_marks=dialect != "postgresql",
        host=socket.gethostname(),
        pid=os.getpid(),
    )


def assemble(
    settings: Settings,
    adapters: Adapters,
    *,
    channels: Channels,
    oauth: OAuthParts,
    delivery: DeliveryParts,
    webhooks: WebhookParts,
    backlog: Backlog,
    metrics: Metrics,
    listening: Listening,
) -> Services:
    """The use cases an ingress gets, over the adapters built before."""
    store, vault, pool = adapters.store, adapters.vault, adapters.pool
    sessions, tokens = Sessions(store), ApiTokens(store)
    tenancy = Tenancy(store, hash_password=hash_password, tokens=tokens)

    def http_app(url: str) -> FastAPI:
        listening.bound(url)
        return asgi_app(services, settings)

    services = Services(
        tenancy=tenancy,
        setup=Setup(store, tenancy),
        accounts=Accounts(
            store, sessions, verify_password=verify_password, hash_password=hash_password
        ),
        sessions=sessions,
        tokens=tokens,
        channels=channels,
        tester=delivery.tester,
        mend=ChannelMending(store, channels, delivery.tester, oauth.mailboxes),
        mailboxes=oauth.mailboxes,
        oauth_apps=oauth.apps,
        oauth=oauth.connect,
        submitter=delivery.submitter,
        messages=Messages(store, channels),
        backlog=backlog,
        webhooks=webhooks.webhooks,
        dispatcher=delivery.dispatcher,
        webhook_dispatcher=webhooks.dispatcher,
        metrics=metrics,
        listeners=Listeners(),
        pool=lambda: pool,
        rotate_key=lambda: str(rotate(store, vault, settings)),
        http_app=http_app,
        max_message_size=settings.max_message_size,
        api=api_options(settings),
        startup_notes=adapters.made_private,
        close=closer(adapters, delivery, webhooks.sender),
    )
    return services


def closer(
    adapters: Adapters, delivery: DeliveryParts, sender: HttpWebhookSender
) -> Callable[[], Awaitable[None]]:
    """What `Services.aclose` does: the connections, then the store process, then the store."""

    async def close() -> None:
        await delivery.dispatcher.connections.aclose()  # slots kept between passes go back
        await adapters.transport.aclose()
        await sender.aclose()
        if delivery.child is not None:
            delivery.child.close()  # after the dispatcher's last record
        adapters.store.close()

    return close


def credential_source(
    settings: Settings, channels: Channels, oauth: OAuthParts
) -> CredentialSource:
    """What delivery signs in with: the pool's from POOL_RELAY, an OAuth mailbox's access
    token, or a channel's sealed password."""
    relay = parse_relay(settings.pool_relay) if settings.pool_relay else None

    async def credentials(
        channel: Channel, *, rejected: Credentials | None = None, renew: bool = False
    ) -> Credentials | None:
        if channel.kind is Kind.POOL:
            return relay.credentials if relay else None
        if channel.oauth is not None:
            return await oauth.tokens(channel, rejected=rejected, renew=renew)
        return channels.credentials(channel)

    return credentials


def api_options(settings: Settings) -> ApiOptions:
    return ApiOptions(
        rate_limit=settings.api_rate_limit,
        recipient_limit=settings.api_recipient_limit,
        caps=RequestCaps(
            messages=settings.api_batch_max_messages,
            recipients=settings.api_request_max_recipients,
        ),
        metrics_token=settings.metrics_token,
    )


def api_limits(settings: Settings) -> dict[TransportKind, ApiLimits]:
    """Each provider API's per-request limits, with the operator's sizes (docs/settings.md)."""
    gmail, graph = DEFAULT_LIMITS[TransportKind.GMAIL_API], DEFAULT_LIMITS[TransportKind.GRAPH]
    return {
        TransportKind.GMAIL_API: replace(gmail, max_size=settings.gmail_api_max_size),
        TransportKind.GRAPH: replace(graph, max_size=settings.graph_api_max_size),
    }


def prometheus(backlog: Backlog) -> Metrics:
    """The metrics registry of this process (prometheus-client, its own registry)."""
    from mailvia.ingress.metrics import PrometheusMetrics

    return PrometheusMetrics(backlog)


@dataclass(frozen=True)
class WebhookParts:
    """Webhooks for the API, their dispatcher, and the sender it POSTs with (closed with the
    service)."""

    webhooks: Webhooks
    dispatcher: WebhookDispatcher
    sender: HttpWebhookSender


def webhook_parts(
    store: SqlStore, vault: Vault, guard: OutboundGuard, metrics: Metrics
) -> WebhookParts:
    """Webhooks for the API and their dispatcher, POSTing through the outbound address guard."""
    sender = HttpWebhookSender(guard=guard)
    webhooks = Webhooks(store, vault, check_url=url_checker(guard))
    dispatcher = WebhookDispatcher(store, vault, sender, metrics=metrics)
    return WebhookParts(webhooks, dispatcher, sender)
