"""`mailvia secrets rotate`: a new master key for every stored secret."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from mailvia.ingress.cli.root import (
    STORE_SETTINGS,
    Context,
    cli,
    pass_context,
    settings_options,
)
from mailvia.settings import Settings

if TYPE_CHECKING:
    from mailvia.outbox.services import Services


@cli.group()
def secrets() -> None:
    """Secrets at rest (channel passwords, API keys, tokens)."""


@secrets.command("rotate")
@settings_options(*STORE_SETTINGS)
@pass_context
def rotate(ctx: Context, settings: Settings) -> None:
    """Re-wrap every stored secret under a new master key and install the key."""

    def action(s: Services) -> str:
        return s.rotate_key()

    path = ctx.using(settings, action)
    click.echo(f"every secret is now sealed under a new master key in {path}")
    click.echo("restart running mailvia processes so they read the new key")
