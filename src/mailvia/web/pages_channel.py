"""My delivery channel: each address's route and why, the user's channels, and connecting a
new one (Microsoft 365, Gmail, a custom SMTP server or a provider preset) with Test
connection before saving.

Side effects: Test connection probes the server and stores nothing; Save stores the channel
(its password sealed by the vault).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from mailvia.domain.channel import Auth, Provider, Scope, Security
from mailvia.domain.errors import MailviaError
from mailvia.domain.oauth import connect_blocked, connect_taken
from mailvia.domain.presets import PRESETS, Preset
from mailvia.domain.probe import ProbeReport
from mailvia.domain.tenancy import User, domain_of
from mailvia.web.common import UserDep, Web, WebDep, now, redirect, render, status_for
from mailvia.web.forms import (
    CHANNEL_FIELDS,
    budgets_text,
    channel_spec,
    preset_of,
    text,
    values,
)
from mailvia.web.wording import (
    explain_addresses,
    limit_words,
    preset_choices,
    provider,
    sharing,
)

router = APIRouter()


@router.get("/channel", response_class=HTMLResponse)
def my_channel(request: Request, user: UserDep, web: WebDep) -> HTMLResponse:
    services = web.services
    visible = services.channels.visible(user)
    apps = services.oauth_apps
    return render(
        request,
        "my_channel.html",
        explained=explain_addresses(services, user),
        own=[c for c in visible if c.owner.user_id == user.id],
        team=[c for c in visible if c.scope is Scope.DOMAIN],
        presets=preset_choices(),
        provider=provider,
        limit_words=limit_words,
        mailbox_providers=[
            (p, PRESETS[p.preset], apps.ready(user.organization_id, p)) for p in Provider
        ],
        # Said before the consent round trip: the addresses a Connect would be refused for.
        connect_refusals={
            p: [(c.address, connect_taken(c, p)) for c in connect_blocked(visible, user.id, p)]
            for p in Provider
        },
    )


def defaults(web: Web, user: User, preset: Preset | None) -> dict[str, str]:
    """The connect form's first values: the preset's settings, the user's first address, the
    domains to share for (`share_domains`)."""
    tenancy = web.services.tenancy
    addresses = tenancy.addresses(user) or [user.email]
    domains = share_domains(web, user, addresses)
    team = next((t.name for t in tenancy.teams(user) if t.id == user.team_id), "")
    fields = dict.fromkeys(CHANNEL_FIELDS, "")
    title = preset.title if preset else "SMTP"
    fields.update(
        preset=preset.name if preset else "",
        name=f"{title} {addresses[0]}" if not preset or preset.mailbox else title,
        host=preset.host if preset else "",
        port=str(preset.port if preset else 587),
        security=str(preset.security if preset else Security.STARTTLS),
        auth=str(preset.auth if preset else Auth.PLAIN),
        username=(preset.username or "") if preset and not preset.mailbox else addresses[0],
        budgets=budgets_text(preset.budgets) if preset else "",
        address=addresses[0],
        domains=", ".join(domains),
        team=team,
        share="on" if can_share(user, preset) and preset is not None else "",
    )
    return fields


def share_domains(web: Web, user: User, addresses: list[str]) -> list[str]:
    """The sending domains the connect form offers to share a channel for: the user's domain
    identities; else the organization's domain that the user's address is at, that one only
    (a relay shared for all of them may not be allowed to send for the others); else all the
    organization's (an admin's own address may be at none: `admin@localhost`). None while
    the organization has none: the save would refuse any other, and the form says so."""
    tenancy = web.services.tenancy
    granted = [i[1:] for i in tenancy.identities(user) if i.startswith("@")]
    if granted:
        return granted
    theirs = tenancy.domains(user)
    own = next((d for d in map(domain_of, addresses) if d in theirs), None)
    return [own] if own is not None else theirs


def can_share(user: User, preset: Preset | None) -> bool:
    """Only admins share, and only credentials that authenticate a domain or an account."""
    return user.is_admin and (preset is None or preset.scope is Scope.DOMAIN)


def connect_page(
    request: Request,
    web: Web,
    user: User,
    fields: dict[str, str],
    *,
    status: int = 200,
    report: ProbeReport | None = None,
    error: str | None = None,
    sealed: str = "",
) -> HTMLResponse:
    preset = preset_of(fields["preset"])
    oauth_provider = next((p for p in Provider if preset and p.preset == preset.name), None)
    context: dict[str, Any] = {
        "preset": preset,
        # A Microsoft 365 or Gmail password form points to the OAuth way when it is set up.
        "oauth_provider": oauth_provider,
        "oauth_ready": oauth_provider is not None
        and web.services.oauth_apps.ready(user.organization_id, oauth_provider),
        "fields": fields,
        "report": report,
        "error": error,
        "sealed": sealed,
        "addresses": web.services.tenancy.addresses(user) or [user.email],
        "teams": web.services.tenancy.teams(user),
        "can_share": can_share(user, preset),
        "no_domains": can_share(user, preset) and not web.services.tenancy.domains(user),
        "not_shared": sharing(preset),
        "limits": limit_words(preset.budgets) if preset else "",
        "host_warning": preset.host_warning(fields["host"]) if preset and fields["host"] else None,
        "securities": [str(s) for s in Security],
        "auths": [str(a) for a in Auth],
    }
    return render(request, "connect.html", status=status, **context)


@router.get("/channels/new", response_class=HTMLResponse)
def connect_form(
    request: Request, user: UserDep, web: WebDep, preset: str = "", share: str = ""
) -> Response:
    """The connect form; `share=on` (Team channels' custom server) opens it shared with the
    team, under the Team channels crumb, for an admin who may share it."""
    chosen = preset_of(preset)
    if preset and chosen is None:
        return redirect("/channel")
    fields = defaults(web, user, chosen)
    if share == "on" and can_share(user, chosen):
        fields["share"] = "on"
    return connect_page(request, web, user, fields)


@router.post("/channels/new", response_class=HTMLResponse)
async def connect(request: Request, user: UserDep, web: WebDep) -> Response:
    """`action=test` probes the channel described; `action=save` stores it."""
    form = await request.form()
    fields = values(form)
    channels = web.services.channels
    password = text(form, "password") or channels.open_typed(user, text(form, "sealed"), now())
    sealed = channels.seal_typed(user, password, now()) if password else ""
    try:
        spec = channel_spec(fields, password)
        if text(form, "action") == "save":
            channel, _warnings = web.services.channels.add(user, spec, now())
            return redirect(f"/channels/{channel.id}", notice="saved")
        report = await web.services.tester.test_spec(
            user, spec, to=fields["test_to"] or None, now=now()
        )
    except MailviaError as exc:
        return connect_page(
            request, web, user, fields, status=status_for(exc), error=str(exc), sealed=sealed
        )
    return connect_page(request, web, user, fields, report=report, sealed=sealed)
