"""`mailvia channel ...`: add, list, show, test, reconnect, pause, resume, presets (edit,
remove and cancel-mail: cli/mend.py)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

import click

from mailvia.domain.channel import (
    MAX_CONNECTIONS_RANGE,
    MAX_RECIPIENTS_RANGE,
    PORT_RANGE,
    Auth,
    Budget,
    Channel,
    Kind,
    Scope,
    Security,
)
from mailvia.domain.errors import InvalidInput
from mailvia.domain.presets import PRESETS
from mailvia.domain.probe import ProbeReport
from mailvia.ingress.cli.root import (
    STORE_SETTINGS,
    Context,
    F,
    cli,
    emit,
    pass_context,
    settings_options,
)
from mailvia.ingress.payloads import channel_payload, report_payload
from mailvia.settings import Settings

if TYPE_CHECKING:
    from mailvia.outbox.channels import ChannelSpec
    from mailvia.outbox.services import Services


ORG_OPTION = click.option(
    "--org",
    default=None,
    help="The organization. Left out: the --user's, else the one with a channel of that "
    "name, else the only one with a sending domain, else the only one, else `default`.",
)


@cli.group()
def channel() -> None:
    """Delivery channels: one way out for mail."""


def _together(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    """Several click options as one decorator, in the order given."""

    def apply(command: F) -> F:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


# The options `add` and `edit` share, written once (the sizes as the domain bounds them).
CONNECTION_OPTIONS = _together(
    click.option("--host", help="The SMTP server's host name."),
    click.option("--port", type=click.IntRange(*PORT_RANGE), help="587 for starttls, 465 for tls."),
    click.option(
        "--security",
        type=click.Choice([s.value for s in Security]),
        help="none only with --auth none, to hosts MAILVIA_ALLOW_PRIVATE_HOSTS allows.",
    ),
    click.option(
        "--auth", "auth", type=click.Choice([a.value for a in Auth]), help="Sign-in method."
    ),
)
PASSWORD_OPTIONS = _together(
    click.option("--password-stdin", is_flag=True, help="Read the password from standard input."),
    click.option("--password-env", metavar="VAR", help="Read the password from this variable."),
)
LIMIT_OPTIONS = _together(
    click.option(
        "--budget",
        "budgets",
        multiple=True,
        metavar="N/SECONDS[:UNIT]",
        help="A limit, e.g. 30/60:messages or 10000/86400:recipients; repeat.",
    ),
    click.option(
        "--max-connections",
        type=click.IntRange(*MAX_CONNECTIONS_RANGE),
        help="Connections to the server at once.",
    ),
    click.option(
        "--max-recipients",
        "max_recipients",
        type=click.IntRange(*MAX_RECIPIENTS_RANGE),
        help="Recipients per message the server takes (more are split).",
    ),
)


def read_password(stdin: bool, env: str | None) -> str | None:
    """A password never comes from the command line itself."""
    if stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise InvalidInput("--password-stdin: standard input held no password")
        return password
    if env:
        value = os.environ.get(env)
        if value is None:
            raise InvalidInput(f"--password-env: {env} is not set")
        return value
    return None


@channel.command("add")
@click.argument("name")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), help="Provider preset.")
@CONNECTION_OPTIONS
@click.option("--username", help="The sign-in name.")
@PASSWORD_OPTIONS
@click.option("--ca-file", type=click.File("r"), help="A PEM CA added to the trust store.")
@click.option(
    "--scope",
    type=click.Choice([s.value for s in Scope]),
    help="address: one sender's mailbox; domain: a team channel for whole domains.",
)
@click.option("--address", help="The From address (address scope).")
@click.option("--domain", "domains", multiple=True, help="A domain (domain scope); repeat.")
@click.option("--user", "user_email", help="Owner (address scope).")
@click.option("--team", "team_name", help="Owning team (domain scope).")
@LIMIT_OPTIONS
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
@ORG_OPTION
@settings_options(*STORE_SETTINGS)
@pass_context
def add(
    ctx: Context,
    name: str,
    settings: Settings,
    org: str | None,
    as_json: bool,
    preset: str | None,
    host: str | None,
    port: int | None,
    security: str | None,
    auth: str | None,
    username: str | None,
    password_stdin: bool,
    password_env: str | None,
    ca_file: TextIO | None,
    scope: str | None,
    address: str | None,
    domains: tuple[str, ...],
    user_email: str | None,
    team_name: str | None,
    budgets: tuple[str, ...],
    max_connections: int | None,
    max_recipients: int | None,
) -> None:
    """Add a channel (from a preset, or by hand)."""
    from mailvia.outbox.channels import ChannelSpec

    spec = ChannelSpec(
        name=name,
        preset=preset,
        host=host,
        port=port,
        security=Security(security) if security else None,
        auth=Auth(auth) if auth else None,
        username=username,
        password=read_password(password_stdin, password_env),
        ca_pem=ca_file.read() if ca_file else None,
        scope=Scope(scope) if scope else None,
        address=address,
        domains=domains,
        user_email=user_email,
        team_name=team_name,
        budgets=tuple(Budget.parse(b) for b in budgets) if budgets else None,
        max_connections=max_connections,
        max_recipients_per_message=max_recipients,
    )

    ctx.using(settings, lambda s: _add(s, spec, org=org, as_json=as_json))


def _add(s: Services, spec: ChannelSpec, *, org: str | None, as_json: bool) -> None:
    """Add the channel `spec` asks for, as the organization's operator (or its owner's);
    print its warnings, then the channel."""
    actor = s.tenancy.operator(org, user_email=spec.user_email)
    created, warnings = s.channels.add(actor, spec, time.time())
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    emit(
        channel_payload(created),
        as_json=as_json,
        text=lambda: click.echo(f"added {created.name} ({created.id})"),
    )


@channel.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
@ORG_OPTION
@settings_options(*STORE_SETTINGS)
@pass_context
def list_(ctx: Context, as_json: bool, org: str | None, settings: Settings) -> None:
    """List the organization's channels."""

    def action(s: Services) -> None:
        actor = s.tenancy.operator(org)
        channels = s.channels.listed(actor)
        statuses = s.mailboxes.statuses(actor.organization_id)
        views = [channel_payload(c, statuses.get(c.id)) for c in channels]
        emit(views, as_json=as_json, text=lambda: _table(channels))

    ctx.using(settings, action)


def _table(channels: list[Channel]) -> None:
    if not channels:
        click.echo("no channels")
    for c in channels:
        pool = c.kind is Kind.POOL
        who = "any address (the shared pool)" if pool else c.address or ", ".join(c.domains)
        scope = "pool" if pool else c.scope
        click.echo(f"{c.name:24} {c.state:12} {scope:7} {who:30} {c.host}:{c.port} {c.id}")


@channel.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
@ORG_OPTION
@settings_options(*STORE_SETTINGS)
@pass_context
def show(ctx: Context, name: str, as_json: bool, org: str | None, settings: Settings) -> None:
    """Show one channel (the password is never shown)."""

    def action(s: Services) -> None:
        actor = s.tenancy.operator(org, channel=name)
        found = s.channels.get(actor, name)
        statuses = s.mailboxes.statuses(actor.organization_id)
        view = channel_payload(found, statuses.get(found.id))
        text = "\n".join(f"{k:28} {readable(k, v)}" for k, v in view.items())
        emit(view, as_json=as_json, text=text)

    ctx.using(settings, action)


def readable(key: str, value: object) -> str:
    """One field of `channel show` as text: `none` for nothing, `yes`/`no`, lists joined,
    budgets as `30 messages per 60 s`, objects as `name value`, a CA as its certificates'
    count (the JSON output keeps every field as the API gives it)."""
    if value is None or value == []:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key == "ca_pem" and isinstance(value, str):
        count = value.count("-----BEGIN CERTIFICATE-----")
        return f"{count} certificate{'s' if count != 1 else ''} added (--json shows the PEM)"
    if key == "budgets" and isinstance(value, list):
        return ", ".join(f"{b['count']} {b['unit']} per {b['per_seconds']} s" for b in value)
    if isinstance(value, list):
        return ", ".join(readable(key, item) for item in value)
    if isinstance(value, dict):
        shown = [f"{k} {readable(k, v)}" for k, v in value.items() if v is not None]
        return ", ".join(shown) or "none"
    return str(value)


# Given to click when the command is made: a docstring set afterwards never reaches --help.
_STATE_HELP = {
    "pause": "Pause a channel: its mail is held until it is resumed.",
    "resume": "Resume a channel and release its held mail in its original order.",
}


def _state_command(verb: str) -> None:
    @channel.command(verb, help=_STATE_HELP[verb])
    @click.argument("name")
    @ORG_OPTION
    @settings_options(*STORE_SETTINGS)
    @pass_context
    def command(ctx: Context, name: str, org: str | None, settings: Settings) -> None:
        def action(s: Services) -> None:
            actor = s.tenancy.operator(org, channel=name)
            change = s.channels.pause if verb == "pause" else s.channels.resume
            changed, count = change(actor, name, time.time())
            moved = "held" if verb == "pause" else "released"
            click.echo(f"{changed.name} is {changed.state}; {count} messages {moved}")

        ctx.using(settings, action)


for _verb in ("pause", "resume"):
    _state_command(_verb)


@channel.command("test")
@click.argument("name")
@click.option("--to", metavar="ADDRESS", help="Also send a small test message to this address.")
@click.option(
    "--user",
    "user_email",
    metavar="EMAIL",
    help="Who sends the test message, From their own address (default: the channel's owner).",
)
@click.option(
    "--password-stdin", is_flag=True, help="Test with this password (from stdin); not saved."
)
@click.option("--password-env", metavar="VAR", help="Test with the password in this variable.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
@ORG_OPTION
@settings_options(*STORE_SETTINGS)
@pass_context
def probe_command(
    ctx: Context,
    name: str,
    to: str | None,
    user_email: str | None,
    password_stdin: bool,
    password_env: str | None,
    as_json: bool,
    org: str | None,
    settings: Settings,
) -> None:
    """Test a channel step by step: resolve, connect, TLS, EHLO, AUTH, sender (or a test message).

    A test message is a message: From the sender's own address, within the channel's budgets,
    recorded (`mailvia message show`). Exits 0 when every step passes, 1 otherwise."""
    password = read_password(password_stdin, password_env)

    def action(s: Services) -> ProbeReport:
        actor, now = s.tenancy.operator(org, channel=name), time.time()
        tester = s.tester
        if to is not None:  # the operator sends as a user, as `mailvia send --user` does
            sender = s.tenancy.user(user_email) if user_email else tester.owner(actor, name)
            actor = sender or actor
        report = asyncio.run(tester.test(actor, name, to=to, password=password, now=now))
        emit(report_payload(report), as_json=as_json, text=lambda: print_report(report))
        return report

    if not ctx.using(settings, action).ok:
        sys.exit(1)


@channel.command("reconnect")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the new password from stdin.")
@click.option("--password-env", metavar="VAR", help="Read the new password from this variable.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
@ORG_OPTION
@settings_options(*STORE_SETTINGS)
@pass_context
def reconnect(
    ctx: Context,
    name: str,
    password_stdin: bool,
    password_env: str | None,
    as_json: bool,
    org: str | None,
    settings: Settings,
) -> None:
    """Test a channel with a new password (or the stored one); when every step passes, save
    it, make the channel active and release its held mail in its original order."""
    password = read_password(password_stdin, password_env)

    def action(s: Services) -> bool:
        actor, now = s.tenancy.operator(org, channel=name), time.time()
        done = asyncio.run(s.tester.reconnect(actor, name, password=password, now=now))
        view = report_payload(done.report) | {
            "reconnected": done.reconnected,
            "released": done.released,
            "channel": channel_payload(done.channel),
        }

        def text() -> None:
            print_report(done.report)
            failed = done.report.failed
            if failed is not None:
                click.echo(f"not reconnected: the test failed at {failed.name}")
            elif done.reconnected:
                click.echo(f"reconnected; {done.released} held messages released")
            else:
                click.echo(f"the test passed; {done.channel.name} is {done.channel.state}")

        emit(view, as_json=as_json, text=text)
        return done.report.ok

    if not ctx.using(settings, action):
        sys.exit(1)


def print_report(report: ProbeReport) -> None:
    """One line per step (✓, ✗, or - for one not tried, name, detail), then the server's
    reply and the hint."""
    for step in report.steps:
        mark = "-" if step.skipped else "✓" if step.ok else "✗"
        click.echo(f"{mark} {step.name:8} {step.detail}")
        if step.reply:
            click.echo(f"  {'':8} server: {step.reply}")
        if step.hint:
            click.echo(f"  {'':8} hint: {step.hint}")
    if not report.ok:
        click.echo("the test failed")
    elif any(step.skipped for step in report.steps):
        click.echo("all steps tried passed")
    else:
        click.echo("all steps passed")


@channel.command("presets")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
def presets(as_json: bool) -> None:
    """List the provider presets and what they fill in."""
    data = [
        {
            "name": p.name,
            "title": p.title,
            "host": p.host,
            "port": p.port,
            "security": str(p.security),
            "auth": str(p.auth),
            "scope": str(p.scope),
            "username": p.username,
            "budgets": [str(b) for b in p.budgets],
            "max_recipients_per_message": p.max_recipients_per_message,
            "max_connections": p.max_connections,
            "advice": p.advice,
            "sources": list(p.sources),
        }
        for p in PRESETS.values()
    ]
    lines = (
        f"{p.name:14} {p.host}:{p.port} {p.security:8} scope {p.scope:7} "
        + " ".join(str(b) for b in p.budgets)
        for p in PRESETS.values()
    )
    emit(data, as_json=as_json, text="\n".join(lines))
