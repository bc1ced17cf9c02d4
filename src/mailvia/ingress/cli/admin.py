"""`mailvia admin ...`: the operator's tenancy commands."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

import click

from mailvia.domain.channel import Provider
from mailvia.domain.errors import InvalidInput
from mailvia.domain.tenancy import Fallback
from mailvia.ingress.cli.root import STORE_SETTINGS, Context, cli, pass_context, settings_options
from mailvia.settings import Settings

if TYPE_CHECKING:
    from mailvia.outbox.services import Services
    from mailvia.outbox.tenancy import DefaultChoice


@cli.group()
def admin() -> None:
    """Organizations, teams, users, domains, identities and API tokens."""


@admin.command("create-org")
@click.argument("name")
@settings_options(*STORE_SETTINGS)
@pass_context
def create_org(ctx: Context, name: str, settings: Settings) -> None:
    """Create an organization."""
    if name.startswith("_"):
        raise click.BadParameter("names starting with _ are reserved", param_hint="NAME")
    ctx.using(settings, lambda s: click.echo(s.tenancy.create_org(name, time.time()).id))


@admin.command("create-team")
@click.argument("name")
@click.option("--org", "org", required=True, help="The organization's name.")
@settings_options(*STORE_SETTINGS)
@pass_context
def create_team(ctx: Context, name: str, org: str, settings: Settings) -> None:
    """Create a team in an organization."""
    ctx.using(settings, lambda s: click.echo(s.tenancy.create_team(name, org, time.time()).id))


@admin.command("create-user")
@click.argument("email")
@click.option("--org", required=True, help="The organization's name.")
@click.option("--team", required=True, help="The team's name.")
@click.option("--admin", "is_admin", is_flag=True, help="Make the user an admin.")
@settings_options(*STORE_SETTINGS)
@pass_context
def create_user(
    ctx: Context, email: str, org: str, team: str, is_admin: bool, settings: Settings
) -> None:
    """Create a user; prints a one-time password (changed at first sign-in)."""

    def action(s: Services) -> None:
        user, password = s.tenancy.create_user(
            email, org_name=org, team_name=team, admin=is_admin, now=time.time()
        )
        click.echo(f"created {user.email} ({user.role}) {user.id}")
        click.echo(f"one-time password: {password}")

    ctx.using(settings, action)


@admin.command("add-domain")
@click.argument("org")
@click.argument("domain")
@settings_options(*STORE_SETTINGS)
@pass_context
def add_domain(ctx: Context, org: str, domain: str, settings: Settings) -> None:
    """Assign a sending domain to one organization."""

    def action(s: Services) -> None:
        stored = s.tenancy.add_domain(org, domain, time.time())
        click.echo(f"{stored} now belongs to {org}")

    ctx.using(settings, action)


@admin.command("grant")
@click.argument("email")
@click.argument("identity")
@settings_options(*STORE_SETTINGS)
@pass_context
def grant(ctx: Context, email: str, identity: str, settings: Settings) -> None:
    """Let a user send From ADDRESS, or from every address of @DOMAIN."""

    def action(s: Services) -> None:
        granted = s.tenancy.grant(email, identity, time.time())
        click.echo(f"{email} may now send as {granted}")

    ctx.using(settings, action)


@admin.command("create-token")
@click.argument("email")
@click.option("--name", default="cli", help="A label for the token.")
@settings_options(*STORE_SETTINGS)
@pass_context
def create_token(ctx: Context, email: str, name: str, settings: Settings) -> None:
    """Create an API token for a user; it is printed once and stored only as a hash."""
    ctx.using(settings, lambda s: click.echo(s.tokens.create(email, name, time.time())))


@admin.command("set-org")
@click.argument("org")
@click.option("--default-channel", help="A channel name, or 'none'.")
@click.option(
    "--fallback",
    type=click.Choice([f.value for f in Fallback]),
    help="hold: keep a broken channel's mail; next: use the next channel that may "
    "send as that From.",
)
@settings_options(*STORE_SETTINGS)
@pass_context
def set_org(
    ctx: Context, org: str, default_channel: str | None, fallback: str | None, settings: Settings
) -> None:
    """Set an organization's default channel and fallback policy (never an address-scoped
    channel: one person's mailbox carries only its owner's mail)."""

    from mailvia.outbox.tenancy import UNCHANGED

    def action(s: Services) -> None:
        choice: DefaultChoice = UNCHANGED
        if default_channel is not None:
            choice = None if default_channel.lower() == "none" else default_channel
        updated = s.tenancy.update_organization(
            s.tenancy.organization(org).id,
            default_channel=choice,
            fallback=Fallback(fallback) if fallback else None,
        )
        click.echo(
            f"{org}: default channel {updated.default_channel_id or 'none'}, "
            f"fallback {updated.fallback}"
        )

    ctx.using(settings, action)


@admin.command("oauth-app")
@click.argument("org")
@click.argument("provider", type=click.Choice([p.value for p in Provider]))
@click.option("--client-id", required=True, help="The app's client (application) id.")
@click.option(
    "--client-secret-stdin",
    is_flag=True,
    help="Read the client secret from standard input (required the first time).",
)
@click.option(
    "--tenant",
    help="Microsoft: a tenant id or domain (default: the stored one, else organizations).",
)
@settings_options(*STORE_SETTINGS)
@pass_context
def oauth_app(
    ctx: Context,
    org: str,
    provider: str,
    client_id: str,
    client_secret_stdin: bool,
    tenant: str | None,
    settings: Settings,
) -> None:
    """Set an organization's own OAuth app for Google or Microsoft (its mailboxes connect
    through it). The secret is sealed at rest and never printed."""
    secret = None
    if client_secret_stdin:
        secret = sys.stdin.readline().rstrip("\r\n")
        if not secret:
            raise InvalidInput("--client-secret-stdin: standard input held no secret")

    def action(s: Services) -> None:
        actor = s.tenancy.operator(org)
        app = s.oauth_apps.put(
            actor,
            Provider(provider),
            client_id=client_id,
            client_secret=secret,
            tenant=tenant,
            now=time.time(),
        )
        where = f", tenant {app.tenant}" if app.tenant else ""
        click.echo(f"{org}: {app.provider.display_name} app {app.client_id}{where} (secret stored)")
        click.echo(f"redirect URI to register: {s.oauth.redirect_uri(app.provider)}")
        if app.revived:  # disconnected only because the provider refused the app
            click.echo(f"{app.revived} mailbox(es) refused with the app tried again")

    ctx.using(settings, action)
