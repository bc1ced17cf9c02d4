"""The composition root's wiring: `build(settings)` opens the store, the vault and the
transport and hands the use cases to the ingresses (imported only by a command that builds
the service: it pulls in SQLAlchemy, the HTTP clients and every use case)."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from mailvia.domain.api_mail import DEFAULT_LIMITS, ApiLimits
from mailvia.domain.channel import (
    Channel,
    Kind,
    Provider,
    TransportKind,
)
from mailvia.domain.errors import InvalidChannel
from mailvia.domain.oauth import AppSource, OAuthApp
from mailvia.domain.ratelimit import RequestCaps
from mailvia.keyring import open_vault, rotate
from mailvia.outbox.accounts import Accounts, Sessions
from mailvia.outbox.backlog import Backlog
from mailvia.outbox.channels import Channels
from mailvia.outbox.dispatch import Dispatcher, DispatchOptions
from mailvia.outbox.listeners import Listeners
from mailvia.outbox.mend import ChannelMending
from mailvia.outbox.messages import Messages
from mailvia.outbox.notices import Notices
from mailvia.outbox.oauth.apps import OAuthApps
from mailvia.outbox.oauth.connect import OAuthConnect
from mailvia.outbox.oauth.credentials import TokenSource
from mailvia.outbox.oauth.mailboxes import OAuthMailboxes
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
from mailvia.secrets import Vault, load_master_key
from mailvia.settings import Settings
from mailvia.shared_pool import ensure_pool, parse_relay
from mailvia.store import SqlStore, make_private, migrate, open_store
from mailvia.store.process import ChildStore, StoreProcess
from mailvia.transport import OutboundGuard, SmtpTransport
from mailvia.transport.apis import MailApiTransport
from mailvia.transport.composite import Transports
from mailvia.transport.oauth_client import Endpoints, OAuthClient
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
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    made_private = make_private(settings.data_dir, settings.database_url)
    migrate(settings.database_url)
    store = open_store(settings.database_url)
    vault = open_vault(store, settings, create=create_key)
    store.use_cursor_key(derived_key(settings, b"mailvia list cursors"))
    pool = ensure_pool(store, settings, time.time())
    guard = OutboundGuard(settings.allow_private_hosts)
    limits = api_limits(settings)
    transport = Transports(
        SmtpTransport(guard=guard),
        MailApiTransport(
            gmail_url=settings.gmail_api_url, graph_url=settings.graph_api_url, limits=limits
        ),
    )
    backlog = Backlog(store)
    metrics = prometheus(backlog)
    webhooks, webhook_dispatcher, sender = webhook_parts(store, vault, guard, metrics)
    channels = Channels(
        store, vault, check_plaintext_host=check_plaintext_host(settings.allow_private_hosts)
    )
    worker = settings.worker_id or f"{socket.gethostname()}:{os.getpid()}"
    listening = Listening(settings)
    oauth = oauth_parts(
        store, vault, settings, channels, transport, worker=worker, public_url=listening.url
    )
    credentials = credential_source(settings, channels, oauth)
    notices = Notices(store, pool=lambda: pool, notice_from=settings.notice_from or "")
    child = StoreProcess(settings.database_url) if settings.delivery_store == "process" else None
    delivering = store if child is None else ChildStore(store, child)
    dispatcher = Dispatcher(
        delivering,
        transport,
        credentials=credentials,
        notify_disconnected=notices.channel_disconnected,
        metrics=metrics,
        workers=delivering,
        slots=store,
        options=DispatchOptions(
            worker=worker,
            lease_seconds=settings.lease_seconds,
            shutdown_seconds=settings.shutdown_seconds,
            batch=settings.claim_batch,
            records_with_marks=store.dialect != "postgresql",
            host=socket.gethostname(),
            pid=os.getpid(),
        ),
    )
    submitter = Submitter(store, pool=lambda: pool, on_submit=dispatcher.wake, api_limits=limits)
    sessions, tokens = Sessions(store), ApiTokens(store)
    tenancy = Tenancy(store, hash_password=hash_password, tokens=tokens)

    async def close() -> None:
        await dispatcher.connections.aclose()  # slots kept between passes go back
        await transport.aclose()
        await sender.aclose()
        if child is not None:
            child.close()  # after the dispatcher's last record
        store.close()

    def http_app(url: str) -> FastAPI:
        listening.bound(url)
        return asgi_app(services, settings)

    tester = ChannelTester(
        store,
        channels,
        Prober(guard, apis=transport.apis),
        transport=transport,
        messages=TestMessages(store, submitter, clock=time.time),
        tokens=credentials,
    )
    services = Services(
        tenancy=tenancy,
        setup=Setup(store, tenancy),
        accounts=Accounts(
            store, sessions, verify_password=verify_password, hash_password=hash_password
        ),
        sessions=sessions,
        tokens=tokens,
        channels=channels,
        tester=tester,
        mend=ChannelMending(store, channels, tester, oauth.mailboxes),
        mailboxes=oauth.mailboxes,
        oauth_apps=oauth.apps,
        oauth=oauth.connect,
        submitter=submitter,
        messages=Messages(store, channels),
        backlog=backlog,
        webhooks=webhooks,
        dispatcher=dispatcher,
        webhook_dispatcher=webhook_dispatcher,
        metrics=metrics,
        listeners=Listeners(),
        pool=lambda: pool,
        rotate_key=lambda: str(rotate(store, vault, settings)),
        http_app=http_app,
        max_message_size=settings.max_message_size,
        api=api_options(settings),
        startup_notes=tuple(made_private),
        close=close,
    )
    return Wired(services, store, vault, transport)


def credential_source(
    settings: Settings, channels: Channels, oauth: OAuthParts
) -> CredentialSource:
    """What delivery signs in with: the pool's from POOL_RELAY, an OAuth mailbox's access
    token, or a channel's sealed password."""
    relay = parse_relay(settings.pool_relay) if settings.pool_relay else None

    async def credentials(
        channel: Channel, *, rejected: Credentials | None = None
    ) -> Credentials | None:
        if channel.kind is Kind.POOL:
            return relay.credentials if relay else None
        if channel.oauth is not None:
            return await oauth.tokens(channel, rejected=rejected)
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


class Listening:
    """Where people reach mailvia: PUBLIC_URL, else where `serve` listens once it has bound
    its socket, else the HTTP_LISTEN setting (OAuth redirect URIs are made from it)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._bound: str | None = None

    def bound(self, url: str) -> None:
        self._bound = url

    def url(self) -> str:
        return self._settings.public_url or self._bound or f"http://{self._settings.http_listen}"


def api_limits(settings: Settings) -> dict[TransportKind, ApiLimits]:
    """Each provider API's per-request limits, with the operator's sizes (docs/settings.md)."""
    gmail, graph = DEFAULT_LIMITS[TransportKind.GMAIL_API], DEFAULT_LIMITS[TransportKind.GRAPH]
    return {
        TransportKind.GMAIL_API: replace(gmail, max_size=settings.gmail_api_max_size),
        TransportKind.GRAPH: replace(graph, max_size=settings.graph_api_max_size),
    }


@dataclass(frozen=True)
class OAuthParts:
    """The OAuth mailboxes' use cases of one build."""

    apps: OAuthApps
    tokens: TokenSource
    mailboxes: OAuthMailboxes
    connect: OAuthConnect


def oauth_parts(
    store: SqlStore,
    vault: Vault,
    settings: Settings,
    channels: Channels,
    transport: Transports,
    *,
    worker: str,
    public_url: Callable[[], str],
) -> OAuthParts:
    """The organization's apps (the operator's as fallback), the token source (its lease
    owner unique per build, so two builds on one database never share a lease), mailboxes
    and the connect flow, over the providers' endpoints from the settings."""
    apps = OAuthApps(store, vault, operator=operator_apps(settings))
    client = OAuthClient(endpoints(settings))
    tokens = TokenSource(store, vault, apps, client, owner=f"{worker}/{os.urandom(4).hex()}")

    async def forget(channel_id: str) -> None:
        tokens.forget(channel_id)
        await transport.forget(channel_id)

    mailboxes = OAuthMailboxes(store, vault, channels, apps, client, forget=forget)
    connect = OAuthConnect(store, apps, client, vault, mailboxes, channels, public_url=public_url)
    return OAuthParts(apps, tokens, mailboxes, connect)


def operator_apps(settings: Settings) -> dict[Provider, OAuthApp]:
    """The operator-wide OAuth apps (MAILVIA_OAUTH_*_CLIENT_ID), for organizations without
    their own."""
    found: dict[Provider, OAuthApp] = {}
    if settings.oauth_google_client_id:
        found[Provider.GOOGLE] = OAuthApp(
            Provider.GOOGLE,
            settings.oauth_google_client_id,
            settings.oauth_google_client_secret,
            source=AppSource.OPERATOR,
        )
    if settings.oauth_microsoft_client_id:
        found[Provider.MICROSOFT] = OAuthApp(
            Provider.MICROSOFT,
            settings.oauth_microsoft_client_id,
            settings.oauth_microsoft_client_secret,
            settings.oauth_microsoft_tenant or "organizations",
            source=AppSource.OPERATOR,
        )
    return found


def endpoints(settings: Settings) -> Endpoints:
    return Endpoints(
        google_authorize=settings.oauth_google_authorize_url,
        google_token=settings.oauth_google_token_url,
        google_revoke=settings.oauth_google_revoke_url,
        google_userinfo=settings.oauth_google_userinfo_url,
        google_jwks=settings.oauth_google_jwks_url,
        microsoft_authorize=settings.oauth_microsoft_authorize_url,
        microsoft_token=settings.oauth_microsoft_token_url,
        microsoft_jwks=settings.oauth_microsoft_jwks_url,
    )


def prometheus(backlog: Backlog) -> Metrics:
    """The metrics registry of this process (prometheus-client, its own registry)."""
    from mailvia.ingress.metrics import PrometheusMetrics

    return PrometheusMetrics(backlog)


def webhook_parts(
    store: SqlStore, vault: Vault, guard: OutboundGuard, metrics: Metrics
) -> tuple[Webhooks, WebhookDispatcher, HttpWebhookSender]:
    """Webhooks for the API and their dispatcher, POSTing through the outbound address guard."""
    sender = HttpWebhookSender(guard=guard)
    webhooks = Webhooks(store, vault, check_url=url_checker(guard))
    return webhooks, WebhookDispatcher(store, vault, sender, metrics=metrics), sender


def session_key(settings: Settings) -> bytes:
    """The key that signs the pages' session cookies, derived from the master key so that
    every process serving pages agrees on it (rotating the master key ends all sessions)."""
    master = load_master_key(key=settings.master_key, key_file=settings.key_file, create=False)
    return hmac.new(master, b"mailvia web sessions", hashlib.sha256).digest()


def derived_key(settings: Settings, purpose: bytes) -> bytes:
    """A key for one purpose, derived from the master key (every process agrees on it;
    rotating the master key changes it)."""
    master = load_master_key(key=settings.master_key, key_file=settings.key_file, create=False)
    return hmac.new(master, purpose, hashlib.sha256).digest()


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def asgi_app(services: Services, settings: Settings) -> FastAPI:
    """The HTTP app that `serve` runs: the API (/v1/..., /healthz, /docs) and the setup pages
    beside it. Session cookies are always Secure unless the listener is on loopback (a local
    try-out, or a TLS proxy in front, whose HTTPS requests still get Secure cookies)."""
    from mailvia.ingress.http import create_app
    from mailvia.web import create_web, mount_beside
    from mailvia.web.docs_headers import protect_docs

    api = create_app(services)
    web = create_web(
        services,
        secure_cookies=not _loopback(settings.http_listen.host),
        session_key=session_key(settings),
    )
    mount_beside(api, web)
    protect_docs(api)
    return api
