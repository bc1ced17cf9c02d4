"""`mailvia channel edit|remove|cancel-mail`: the ways out of a wrong channel (outbox/mend.py):
edit any field (tested before it is saved), remove a channel with its mail cancelled or moved,
cancel a channel's waiting mail."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TYPE_CHECKING

import click

from mailvia.domain.channel import Auth, Budget, Security
from mailvia.domain.errors import InvalidInput
from mailvia.ingress.cli.channel import (
    CONNECTION_OPTIONS,
    LIMIT_OPTIONS,
    ORG_OPTION,
    PASSWORD_OPTIONS,
    channel,
    print_report,
    read_password,
)
from mailvia.ingress.cli.root import STORE_SETTINGS, Context, emit, pass_context, settings_options
from mailvia.ingress.payloads import channel_payload, removal_payload, report_payload
from mailvia.settings import Settings

if TYPE_CHECKING:
    from mailvia.outbox.mend import Edit, MailChoice, Removal
    from mailvia.outbox.services import Services


@channel.command("remove")
@click.argument("name")
@click.option("--cancel-mail", is_flag=True, help="Cancel its waiting mail.")
@click.option(
    "--move-mail-to",
    metavar="CHANNEL",
    help="Move its waiting mail to this channel (each message whose sender may use it).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
@ORG_OPTION
@settings_options(*STORE_SETTINGS)
@pass_context
def remove(
    ctx: Context,
    name: str,
    cancel_mail: bool,
    move_mail_to: str | None,
    as_json: bool,
    org: str | None,
    settings: Settings,
) -> None:
    """Remove a channel; an OAuth mailbox's grant is revoked where the provider allows.

    With mail waiting (queued, deferred, held) it is refused (exit 4) unless --cancel-mail or
    --move-mail-to says what becomes of it. Messages that may not move stay, listed, and the
    channel is then kept (exit 4)."""
    if cancel_mail and move_mail_to:
        raise InvalidInput("--cancel-mail and --move-mail-to: choose one")
    from mailvia.outbox.mend import MailChoice

    mail = MailChoice.CANCEL if cancel_mail else MailChoice.MOVE if move_mail_to else None

    def action(s: Services) -> bool:
        actor = s.tenancy.operator(org, channel=name)
        done = asyncio.run(s.mend.remove(actor, name, mail=mail, to=move_mail_to, now=time.time()))
        emit(removal_payload(done), as_json=as_json, text=lambda: _say_removed(done, name, mail))
        return done.removed

    if not ctx.using(settings, action):
        sys.exit(4)


def _say_removed(done: Removal, name: str, mail: MailChoice | None) -> None:
    """What `channel remove` prints: removed (and what became of its mail), or kept and why."""
    counts = f"{done.cancelled} messages cancelled, {done.moved} moved"
    if done.removed:
        click.echo(f"removed {name}" + (f"; {counts}" if mail else ""))
        return
    click.echo(f"{name} is kept: {len(done.kept)} messages could not move; {counts}")
    for k in done.kept:
        click.echo(f"  {k.id} {k.reason}")


@channel.command("cancel-mail")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
@ORG_OPTION
@settings_options(*STORE_SETTINGS)
@pass_context
def cancel_mail_command(
    ctx: Context, name: str, as_json: bool, org: str | None, settings: Settings
) -> None:
    """Cancel a channel's waiting (queued, deferred, held) mail; mail being sent finishes."""

    def action(s: Services) -> None:
        count = s.mend.cancel_mail(s.tenancy.operator(org, channel=name), name, time.time())
        emit({"cancelled": count}, as_json=as_json, text=f"{count} messages cancelled")

    ctx.using(settings, action)


@channel.command("edit")
@click.argument("name")
@click.option("--name", "new_name", help="A new name.")
@CONNECTION_OPTIONS
@click.option("--username", help="The sign-in name ('' clears it, with --auth none).")
@PASSWORD_OPTIONS
@LIMIT_OPTIONS
@click.option("--no-test", is_flag=True, help="Save connection changes without testing them.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
@ORG_OPTION
@settings_options(*STORE_SETTINGS)
@pass_context
def edit(
    ctx: Context,
    name: str,
    new_name: str | None,
    host: str | None,
    port: int | None,
    security: str | None,
    auth: str | None,
    username: str | None,
    password_stdin: bool,
    password_env: str | None,
    budgets: tuple[str, ...],
    max_connections: int | None,
    max_recipients: int | None,
    no_test: bool,
    as_json: bool,
    org: str | None,
    settings: Settings,
) -> None:
    """Change a channel's fields; only those given change (--budget replaces every budget).

    A change of host, port, security, sign-in method, user name or password is tested first
    (the steps of `channel test`) and saved only when every step passes: else the report is
    printed and nothing changes (exit 1). A disconnected channel that passes becomes active
    and its held mail is released in its original order."""
    from mailvia.outbox.channels import ChannelChanges

    changes = ChannelChanges(
        name=new_name,
        host=host,
        port=port,
        security=Security(security) if security else None,
        auth=Auth(auth) if auth else None,
        username=username,
        password=read_password(password_stdin, password_env),
        budgets=tuple(Budget.parse(b) for b in budgets) if budgets else None,
        max_connections=max_connections,
        max_recipients_per_message=max_recipients,
    )

    def action(s: Services) -> bool:
        actor, now = s.tenancy.operator(org, channel=name), time.time()
        done = asyncio.run(s.mend.edit(actor, name, changes, test=not no_test, now=now))
        emit(_edit_payload(done), as_json=as_json, text=lambda: _say_edited(done))
        return done.saved

    if not ctx.using(settings, action):
        sys.exit(1)


def _edit_payload(done: Edit) -> dict[str, object]:
    """What `channel edit --json` prints."""
    return {
        "saved": done.saved,
        "test": report_payload(done.report) if done.report else None,
        "reconnected": done.reconnected,
        "released": done.released,
        "retried": done.retried,
        "channel": channel_payload(done.channel),
    }


def _say_edited(done: Edit) -> None:
    """What `channel edit` prints: the test's report, then whether it saved."""
    if done.report is not None:
        print_report(done.report)
    if not done.saved:
        failed = done.report.failed if done.report else None
        where = f" at {failed.name}" if failed else ""
        click.echo(f"not saved: the test failed{where}; --no-test saves anyway")
    elif done.reconnected:
        click.echo(f"saved; reconnected, {done.released} held messages released")
    else:
        click.echo(f"saved {done.channel.name} ({done.channel.state})")
