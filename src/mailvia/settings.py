"""The one settings object: every MAILVIA_<NAME> variable and its --<name> flag.

Nothing else in mailvia reads the environment. See docs/settings.md.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mailvia.domain.errors import InvalidInput
from mailvia.domain.ratelimit import RequestRate

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Listen:
    """A host and port to listen on; port 0 picks a free one."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Listen:
        host, sep, port = text.strip().rpartition(":")
        if not sep or not port.isdigit() or int(port) > 65535:
            raise InvalidInput(f"listen address {text!r}: expected HOST:PORT (port 0-65535)")
        return cls(host.strip("[]") or "127.0.0.1", int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Settings:
    """Everything an operator can set. Build it with `Settings.load(environ, overrides)`."""

    data_dir: Path = Path("./mailvia-data")
    db_url: str | None = None
    http_listen: Listen = field(default_factory=lambda: Listen("127.0.0.1", 8025))
    submission_listen: Listen | None = field(default_factory=lambda: Listen("127.0.0.1", 8587))
    submissions_listen: Listen | None = None
    submission_tls_cert: Path | None = None
    submission_tls_key: Path | None = None
    metrics_listen: Listen | None = None
    metrics_token: str | None = field(default=None, repr=False)  # guards /metrics over HTTP
    master_key_file: Path | None = None
    master_key: str | None = field(default=None, repr=False)
    pool_relay: str | None = field(default=None, repr=False)
    notice_from: str | None = None  # From of mailvia's own notices (sent through the pool)
    allow_private_hosts: tuple[Network, ...] = ()
    trusted_networks: tuple[tuple[Network, str], ...] = ()
    # HTTP clients whose X-Forwarded-For / -Proto are believed (a reverse proxy); none by default
    trusted_proxies: tuple[Network, ...] = ()
    max_message_size: int = 25 * 1024 * 1024
    api_rate_limit: RequestRate | None = field(default_factory=lambda: RequestRate(600, 60.0))
    # recipients per API token (all its requests), and what one request may carry
    api_recipient_limit: RequestRate | None = field(
        default_factory=lambda: RequestRate(20_000, 60.0)
    )
    api_batch_max_messages: int = 1000
    api_request_max_recipients: int = 10_000
    submission_max_connections: int = 500  # at once, on the submission ports together
    submission_max_connections_per_client: int = 50  # at once, from one client address
    worker_id: str | None = None
    lease_seconds: float = 30.0  # a claim lasts this long after its worker's last beat
    claim_batch: int = 200
    shutdown_seconds: float = 30.0  # a stop's bound for the work in flight (SIGTERM, SIGINT)
    # where `serve` delivers: auto (process with 2+ CPUs, else inline), process (a child
    # `mailvia worker`), inline (its own event loop), off (the operator runs `mailvia worker`s)
    dispatch: str = "auto"
    # where a dispatcher's claims, started marks and records run: thread (threads of its own
    # process) or process (a child process of its own: store/process.py); serve delivering
    # inline always uses threads
    delivery_store: str = "process"
    # Mailbox providers' HTTP APIs: the operator's, like the pool relay (no address guard).
    gmail_api_url: str = "https://gmail.googleapis.com"
    graph_api_url: str = "https://graph.microsoft.com/v1.0"
    gmail_api_max_size: int = 36_700_160  # bytes of a message (the API's 35 MiB upload)
    graph_api_max_size: int = 4 * 1024 * 1024  # bytes of a request (base64 MIME), unverified
    # OAuth mailboxes: where people reach mailvia (redirect URIs), the providers' endpoints,
    # and the operator-wide OAuth apps (for organizations that have none of their own).
    public_url: str | None = None  # default: the HTTP listener, http://HOST:PORT
    oauth_google_authorize_url: str = "https://accounts.google.com/o/oauth2/v2/auth"
    oauth_google_token_url: str = "https://oauth2.googleapis.com/token"
    oauth_google_revoke_url: str = "https://oauth2.googleapis.com/revoke"
    oauth_google_userinfo_url: str = "https://openidconnect.googleapis.com/v1/userinfo"
    oauth_google_jwks_url: str = "https://www.googleapis.com/oauth2/v3/certs"
    oauth_microsoft_authorize_url: str = (
        "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize"
    )
    oauth_microsoft_token_url: str = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"
    oauth_microsoft_jwks_url: str = "https://login.microsoftonline.com/{tenant}/discovery/v2.0/keys"
    oauth_google_client_id: str | None = None
    oauth_google_client_secret: str | None = field(default=None, repr=False)
    oauth_microsoft_client_id: str | None = None
    oauth_microsoft_client_secret: str | None = field(default=None, repr=False)
    oauth_microsoft_tenant: str | None = None  # default: organizations (any work account)

    @property
    def database_url(self) -> str:
        """The SQLAlchemy URL: `db_url`, or SQLite in the data folder."""
        if self.db_url:
            return self.db_url
        return f"sqlite:///{(self.data_dir / 'mailvia.db').resolve()}"

    @property
    def key_file(self) -> Path:
        return self.master_key_file or self.data_dir / "master.key"

    @classmethod
    def load(
        cls, environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
    ) -> Settings:
        """Read MAILVIA_* variables, then apply flag values (None means "not given")."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"MAILVIA_{f.name.upper()}")
            if raw is not None and raw != "":
                values[f.name] = _parse(f.name, raw)
        for name, value in (overrides or {}).items():
            if value is not None:
                values[name] = _parse(name, value) if isinstance(value, str) else value
        return replace(cls(), **values)


def environment(settings: Settings) -> dict[str, str]:
    """The MAILVIA_* variables that give `settings` back through `Settings.load` (the ones
    not at their default), for a child process: secrets among them, never on a command line."""
    default = Settings()
    env = {}
    for f in fields(Settings):
        value = getattr(settings, f.name)
        if value != getattr(default, f.name):
            env[f"MAILVIA_{f.name.upper()}"] = _text(value)
    return env


def _text(value: Any) -> str:
    """A setting's value as its variable's text (what `_parse` reads back)."""
    if value is None:
        return "off"  # only the settings that take off have None away from their default
    if isinstance(value, tuple):
        return ",".join(
            f"{item[0]}={item[1]}" if isinstance(item, tuple) else str(item) for item in value
        )
    return str(value)


def _parse(name: str, raw: str) -> Any:
    try:
        return _PARSERS.get(name, str)(raw)
    except (ValueError, InvalidInput) as exc:
        raise InvalidInput(f"setting {name.upper()}: {exc}") from exc


def _listen_or_off(raw: str) -> Listen | None:
    return None if raw.lower() in {"off", "none", "no", ""} else Listen.parse(raw)


def _rate_or_off(raw: str) -> RequestRate | None:
    return None if raw.strip().lower() == "off" else RequestRate.parse(raw)


def _non_negative(value: float) -> float:
    if not value >= 0:
        raise ValueError("must be 0 or more")
    return value


def _positive(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError(f"{raw!r}: expected a whole number of 1 or more")
    return value


DISPATCH_MODES = ("auto", "process", "inline", "off")


def _dispatch(raw: str) -> str:
    """auto, process, inline or off; on (and yes, true, 1) is auto, as before these modes."""
    value = raw.strip().lower()
    if value in {"on", "yes", "true", "1"}:
        return "auto"
    if value in {"no", "false", "0"}:
        return "off"
    if value not in DISPATCH_MODES:
        raise ValueError(f"{raw!r}: expected {', '.join(DISPATCH_MODES)}")
    return value


DELIVERY_STORES = ("thread", "process")


def _delivery_store(raw: str) -> str:
    value = raw.strip().lower()
    if value not in DELIVERY_STORES:
        raise ValueError(f"{raw!r}: expected {', '.join(DELIVERY_STORES)}")
    return value


def _networks(raw: str) -> tuple[Network, ...]:
    return tuple(
        ipaddress.ip_network(part.strip(), strict=False)
        for part in raw.replace(";", ",").split(",")
        if part.strip()
    )


def _trusted(raw: str) -> tuple[tuple[Network, str], ...]:
    pairs = []
    for part in raw.replace(";", ",").split(","):
        if not part.strip():
            continue
        cidr, sep, org = part.partition("=")
        if not sep or not org.strip():
            raise ValueError(f"{part!r}: expected CIDR=organization")
        pairs.append((ipaddress.ip_network(cidr.strip(), strict=False), org.strip()))
    return tuple(pairs)


def _api_url(raw: str) -> str:
    """An http(s) base URL without a trailing slash (http only for a local fake or proxy)."""
    url = raw.strip().rstrip("/")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("https", "http") or not rest or any(c.isspace() for c in url):
        raise ValueError(f"{raw!r}: expected an http(s) URL")
    return url


def _url(raw: str, *schemes: str) -> str:
    """An absolute http(s) URL, without a trailing slash."""
    value = raw.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.netloc or any(c.isspace() for c in value):
        raise ValueError(f"{raw!r}: expected an absolute {' or '.join(schemes)} URL")
    return value


_PARSERS: dict[str, Any] = {
    "data_dir": Path,
    "master_key_file": Path,
    "submission_tls_cert": Path,
    "submission_tls_key": Path,
    "http_listen": Listen.parse,
    "submission_listen": _listen_or_off,
    "submissions_listen": _listen_or_off,
    "metrics_listen": _listen_or_off,
    "allow_private_hosts": _networks,
    "trusted_proxies": _networks,
    "trusted_networks": _trusted,
    "max_message_size": int,
    "api_rate_limit": _rate_or_off,
    "api_recipient_limit": _rate_or_off,
    "api_batch_max_messages": _positive,
    "api_request_max_recipients": _positive,
    "submission_max_connections": _positive,
    "submission_max_connections_per_client": _positive,
    "lease_seconds": float,
    "claim_batch": int,
    "shutdown_seconds": lambda raw: _non_negative(float(raw)),
    "dispatch": _dispatch,
    "delivery_store": _delivery_store,
    "gmail_api_url": _api_url,
    "graph_api_url": _api_url,
    "gmail_api_max_size": int,
    "graph_api_max_size": int,
    "public_url": lambda raw: _url(raw, "http", "https"),
    **{
        name: (lambda raw: _url(raw, "http", "https"))
        for name in (
            "oauth_google_authorize_url",
            "oauth_google_token_url",
            "oauth_google_revoke_url",
            "oauth_google_userinfo_url",
            "oauth_google_jwks_url",
            "oauth_microsoft_authorize_url",
            "oauth_microsoft_token_url",
            "oauth_microsoft_jwks_url",
        )
    },
}
