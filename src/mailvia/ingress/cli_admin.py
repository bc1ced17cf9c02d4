"""`mailvia admin ...`: the operator's tenancy commands."""

from __future__ import annotations

import time

import click

from mailvia.domain.tenancy import Fallback
from mailvia.ingress.cli import STORE_SETTINGS, Context, cli, pass_context, settings_options
from mailvia.outbox.services import Services
from mailvia.outbox.tenancy import UNCHANGED, DefaultChoice
from mailvia.settings import Settings


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
        s.tenancy.add_domain(org, domain, time.time())
        click.echo(f"{domain.lower()} now belongs to {org}")

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
    ctx.using(settings, lambda s: click.echo(s.tenancy.create_token(email, name, time.time())))


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
