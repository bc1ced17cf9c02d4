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
    max_message_size: int = 25 * 1024 * 1024
    api_rate_limit: RequestRate | None = field(default_factory=lambda: RequestRate(600, 60.0))
    worker_id: str | None = None
    lease_seconds: float = 30.0  # a claim lasts this long after its worker's last beat
    claim_batch: int = 200
    dispatch: bool = True  # `serve` also runs the dispatcher; off: run `mailvia worker`s

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


def _parse(name: str, raw: str) -> Any:
    try:
        return _PARSERS.get(name, str)(raw)
    except (ValueError, InvalidInput) as exc:
        raise InvalidInput(f"setting {name.upper()}: {exc}") from exc


def _listen_or_off(raw: str) -> Listen | None:
    return None if raw.lower() in {"off", "none", "no", ""} else Listen.parse(raw)


def _rate_or_off(raw: str) -> RequestRate | None:
    return None if raw.strip().lower() == "off" else RequestRate.parse(raw)


def _on_off(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"on", "yes", "true", "1"}:
        return True
    if value in {"off", "no", "false", "0"}:
        return False
    raise ValueError(f"{raw!r}: expected on or off")


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
    "trusted_networks": _trusted,
    "max_message_size": int,
    "api_rate_limit": _rate_or_off,
    "lease_seconds": float,
    "claim_batch": int,
    "dispatch": _on_off,
}
