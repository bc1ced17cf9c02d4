"""Reading the setup forms: fields as text, and a channel spec from the connect form."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.datastructures import FormData

from mailvia.domain.channel import Auth, Budget, Channel, Scope, Security
from mailvia.domain.errors import InvalidChannel
from mailvia.domain.presets import PRESETS, Preset
from mailvia.outbox.channels import ChannelSpec

CHANNEL_FIELDS = (
    "preset",
    "name",
    "host",
    "port",
    "security",
    "auth",
    "username",
    "ca_pem",
    "address",
    "share",
    "team",
    "domains",
    "budgets",
    "test_to",
)


def text(form: FormData | Mapping[str, Any], name: str) -> str:
    """A field's text ('' when missing or a file)."""
    value = form.get(name)
    return value if isinstance(value, str) else ""


def values(form: FormData) -> dict[str, str]:
    """The connect form's fields as text, to fill it again (never the password)."""
    return {name: text(form, name).strip() for name in CHANNEL_FIELDS}


def preset_of(name: str) -> Preset | None:
    return PRESETS.get(name) if name else None


def budgets_text(budgets: tuple[Budget, ...]) -> str:
    return ", ".join(str(b) for b in budgets)


def _choice(kind: type[Security] | type[Auth], raw: str, field: str) -> Any:
    if not raw:
        return None
    try:
        return kind(raw)
    except ValueError:
        raise InvalidChannel(f"{field}: {raw!r} is not one of the choices") from None


def _port(raw: str) -> int | None:
    if not raw:
        return None
    if not raw.isdigit():
        raise InvalidChannel("port: a number between 1 and 65535")
    return int(raw)


def _budgets(raw: str) -> tuple[Budget, ...] | None:
    parts = [p.strip() for p in raw.replace(";", ",").split(",") if p.strip()]
    return tuple(Budget.parse(p) for p in parts) if parts else None


parse_choice, parse_port, parse_budgets = _choice, _port, _budgets  # for the edit form


def channel_spec(fields: Mapping[str, str], password: str | None) -> ChannelSpec:
    """The spec the connect form describes. Sharing with the team makes it domain-scoped.
    Raises InvalidChannel for a field that cannot be read."""
    share = fields.get("share") == "on"
    domains = tuple(d.strip() for d in fields.get("domains", "").split(",") if d.strip())
    return ChannelSpec(
        name=fields.get("name", ""),
        preset=fields.get("preset") or None,
        host=fields.get("host") or None,
        port=_port(fields.get("port", "")),
        security=_choice(Security, fields.get("security", ""), "security"),
        auth=_choice(Auth, fields.get("auth", ""), "auth"),
        username=fields.get("username") or None,
        password=password or None,
        ca_pem=fields.get("ca_pem") or None,
        scope=Scope.DOMAIN if share else Scope.ADDRESS,
        address=None if share else fields.get("address") or None,
        domains=domains if share else (),
        team_name=(fields.get("team") or "default") if share else None,
        budgets=_budgets(fields.get("budgets", "")),
    )


EDIT_FIELDS = ("name", "host", "port", "security", "auth", "username", "budgets", "max_connections")


def edit_values(channel: Channel) -> dict[str, str]:
    """The edit form's first values: the channel as saved (never its password)."""
    return {
        "name": channel.name,
        "host": channel.host,
        "port": str(channel.port),
        "security": str(channel.security),
        "auth": str(channel.auth),
        "username": channel.username or "",
        "budgets": budgets_text(channel.budgets),
        "max_connections": str(channel.max_connections),
    }
