"""`mailvia send`, `queue`, `message show|cancel`, `route explain`: mail from the command line."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click
from click.termui import progressbar

from mailvia.domain.channel import Channel
from mailvia.domain.errors import MailviaError
from mailvia.domain.message import Envelope, State
from mailvia.domain.presets import PRESETS
from mailvia.domain.shaping import describe_use
from mailvia.domain.tenancy import User
from mailvia.domain.waiting import ALIVE_WITHIN, Waiting
from mailvia.ingress.cli.root import (
    STORE_SETTINGS,
    Context,
    cli,
    emit,
    pass_context,
    settings_options,
)
from mailvia.ingress.payloads import (
    message_payloads,
    one_message_payload,
    receipt_payload,
    route_payload,
)
from mailvia.settings import Settings

if TYPE_CHECKING:
    from mailvia.outbox.compose import Composed
    from mailvia.outbox.receipts import Receipt
    from mailvia.outbox.records import MessageView
    from mailvia.outbox.services import Services


@cli.command("send")
@click.option("--user", "user_email", required=True, help="The sender (a user's email).")
@click.option("--from", "from_", help="The From address (required without files).")
@click.option("--to", "to", multiple=True, help="A recipient; repeat.")
@click.option("--cc", multiple=True, help="A Cc recipient; repeat.")
@click.option("--bcc", multiple=True, help="A Bcc recipient (not shown in the headers); repeat.")
@click.option("--subject", default="", help="The Subject line.")
@click.option("--text", help="The plain-text body.")
@click.option("--html", help="The HTML body.")
@click.option("--wait", is_flag=True, help="Wait until each message has left (or stopped).")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds --wait waits.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@settings_options(*STORE_SETTINGS, "max_message_size")
@pass_context
def send(
    ctx: Context,
    settings: Settings,
    user_email: str,
    from_: str | None,
    to: tuple[str, ...],
    cc: tuple[str, ...],
    bcc: tuple[str, ...],
    subject: str,
    text: str | None,
    html: str | None,
    wait: bool,
    timeout: float,
    as_json: bool,
    files: tuple[Path, ...],
) -> None:
    """Submit a message from flags, or one per FILE.eml; prints each message id."""
    from mailvia.outbox.compose import Draft, compose
    from mailvia.outbox.submit import Submission

    def action(s: Services) -> int:
        sender = s.tenancy.user(user_email)
        if not files:
            if not from_:
                raise click.UsageError("--from is required without files")
            draft = Draft(from_=from_, to=to, cc=cc, bcc=bcc, subject=subject, text=text, html=html)
            composed = compose(draft, now=time.time(), max_size=s.max_message_size)
            receipts = s.submitter.submit(sender, [Submission(composed)], now=time.time())
            return _report(s, receipts, wait=wait, timeout=timeout, as_json=as_json)
        return _send_files(s, sender, files, from_, to + cc + bcc, wait, timeout, as_json)

    failures = ctx.using(settings, action)
    if failures:
        raise SystemExit(NOTHING_DELIVERS if failures == NOTHING_DELIVERS else 1)


def _send_files(
    s: Services,
    sender: User,
    files: tuple[Path, ...],
    from_: str | None,
    rcpts: tuple[str, ...],
    wait: bool,
    timeout: float,
    as_json: bool,
) -> int:
    from mailvia.outbox.compose import inspect_raw
    from mailvia.outbox.submit import Submission

    envelope = Envelope(from_, rcpts) if from_ and rcpts else None
    receipts: list[Receipt] = []
    failures = 0
    stderr = sys.stderr
    with progressbar(files, label="submitting", file=stderr, hidden=len(files) < 2) as bar:
        for path in bar:
            try:
                composed: Composed = inspect_raw(
                    path.read_bytes(), envelope=envelope, max_size=s.max_message_size
                )
                receipts += s.submitter.submit(
                    sender,
                    [Submission(composed)],
                    now=time.time(),
                )
            except MailviaError as exc:
                failures += 1
                click.echo(f"mailvia: {path}: {exc}", err=True)
    reported = _report(s, receipts, wait=wait, timeout=timeout, as_json=as_json)
    return reported if reported == NOTHING_DELIVERS else min(failures + reported, 1)


# `send --wait`: a message that nothing will deliver until someone acts (held, its channel
# paused or disconnected, or no process delivering): the explanation, then this exit code.
NOTHING_DELIVERS = 6
# A `serve` or `worker` just started beats within seconds: no dispatcher is believed gone
# before this long into the wait.
STARTING = ALIVE_WITHIN


def _report(
    s: Services, receipts: list[Receipt], *, wait: bool, timeout: float, as_json: bool
) -> int:
    """Print the receipts (or, with `wait`, each message once it stops waiting); the exit
    code: 0, 1 (a recipient not delivered) or NOTHING_DELIVERS."""
    for receipt in receipts:
        for warning in receipt.warnings:
            click.echo(f"warning: {warning.message}", err=True)
    if not wait:
        emit(
            [receipt_payload(r) for r in receipts],
            as_json=as_json,
            text="\n".join(r.id for r in receipts),
        )
        return 0
    views, stuck = _wait(s, [r.id for r in receipts], timeout)
    emit(
        message_payloads(views, s.backlog),
        as_json=as_json,
        text="\n".join(f"{v.id} {v.state}" for v in views),
    )
    for message_id, waiting in stuck.items():
        click.echo(f"mailvia: {message_id} is not being delivered: {waiting.sentence}", err=True)
    for view in views:
        if view.id in stuck:
            continue
        if (missed := _not_delivered(view)) is not None:
            click.echo(f"{view.id}: {missed}", err=True)
        if not view.state.terminal:  # the timeout: say it is not given up (nor to send again)
            click.echo(
                f"mailvia: stopped waiting after {timeout:g} s: {view.id} is still "
                f"{view.state}, and mailvia goes on with it (mailvia message show {view.id})",
                err=True,
            )
    if stuck:
        return NOTHING_DELIVERS
    # Exit 1 unless every recipient of every message was delivered.
    return int(any(r.state is not State.DELIVERED for v in views for r in v.recipients))


def _not_delivered(view: MessageView) -> str | None:
    """`delivered to 1 of 2 recipients; bob@x.test: 550 5.1.1 No such user (bounced)`: each
    recipient not delivered with its last reply and state; None when every one was."""
    missed = [r for r in view.recipients if r.state is not State.DELIVERED]
    if not missed:
        return None
    each = "; ".join(
        f"{r.address}: {r.reply} ({r.state})" if r.reply else f"{r.address}: {r.state}"
        for r in missed
    )
    done = len(view.recipients) - len(missed)
    return f"delivered to {done} of {len(view.recipients)} recipients; {each}"


def _wait(
    s: Services, ids: list[str], timeout: float
) -> tuple[list[MessageView], dict[str, Waiting]]:
    """Wait until each message is finished, or nothing will deliver it, or `timeout` passes;
    on stderr, what each waits for whenever that changes. The messages as they are then, and
    those that nothing delivers with why."""
    started = time.monotonic()
    deadline = started + timeout
    views = {i: s.messages.for_operator(i) for i in ids}
    said: dict[str, str] = {}
    stuck: dict[str, Waiting] = {}
    while True:
        pending = False
        for message_id in ids:
            if message_id in stuck:
                continue
            views[message_id] = view = s.messages.for_operator(message_id)
            waiting = s.backlog.waiting(view, time.time())
            if waiting is None:
                continue
            starting = waiting.nobody_delivering and time.monotonic() - started < STARTING
            if waiting.stuck and not starting:  # said once, when the wait ends
                stuck[message_id] = waiting
                continue
            pending = True
            if said.get(message_id) != waiting.sentence:
                said[message_id] = waiting.sentence
                click.echo(f"{message_id}: {waiting.sentence}", err=True)
        if not pending or time.monotonic() > deadline:
            return [views[i] for i in ids], stuck
        time.sleep(0.2)


@cli.command("queue")
@click.option("--org", default=None, help="Only this organization.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
@settings_options(*STORE_SETTINGS)
@pass_context
def queue(ctx: Context, org: str | None, as_json: bool, settings: Settings) -> None:
    """Messages per channel and state, and each channel's budget use."""

    def action(s: Services) -> None:
        now = time.time()
        org_id = s.tenancy.organization(org).id if org else None
        backlog = s.backlog.snapshot(org_id, now)
        channels = {c.id: c for c in backlog.channels}
        data: dict[str, dict[str, object]] = {}
        lines = []
        for cid, states in backlog.counts.items():
            channel = channels.get(cid)
            entry: dict[str, object] = {str(k): v for k, v in states.items()}
            line = f"{channel.name if channel else cid:24} " + "  ".join(
                f"{k} {v}" for k, v in states.items() if v
            )
            log = backlog.use.get(cid)
            if channel is not None and log is not None:
                entry["budgets"] = describe_use(channel.budgets, log, now)
                line += f"\n{'':24} {_via(channel)}: {entry['budgets']}"
            data[cid] = entry
            lines.append(line)
        emit(data, as_json=as_json, text="\n".join(lines) or "the outbox is empty")

    ctx.using(settings, action)


def _via(channel: Channel) -> str:
    preset = PRESETS.get(channel.preset or "")
    who = channel.address or ", ".join(channel.domains) or channel.name
    return f"{who} via {preset.title if preset else channel.host}"


@cli.group()
def message() -> None:
    """Messages in the outbox."""


@message.command("show")
@click.argument("message_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
@settings_options(*STORE_SETTINGS)
@pass_context
def show(ctx: Context, message_id: str, as_json: bool, settings: Settings) -> None:
    """A message's state, why it waits (as send --wait says it), recipients and attempts."""

    def action(s: Services) -> None:
        message = s.messages.for_operator(message_id)
        view = one_message_payload(message, s.backlog)
        waiting = s.backlog.waiting(message, time.time())
        why = waiting.sentence if waiting is not None else None
        emit(view, as_json=as_json, text=lambda: _print_message(view, why))

    ctx.using(settings, action)


@message.command("cancel")
@click.argument("message_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
@settings_options(*STORE_SETTINGS)
@pass_context
def cancel(ctx: Context, message_id: str, as_json: bool, settings: Settings) -> None:
    """Cancel a message's recipients still waiting (queued, deferred or held). Exits 4 while
    it is being sent or once it is finished, 3 for an unknown id."""

    def action(s: Services) -> None:
        view = one_message_payload(
            s.messages.cancel_for_operator(message_id, time.time()), s.backlog
        )
        emit(view, as_json=as_json, text=f"{view['id']} is {view['state']}")

    ctx.using(settings, action)


def _print_message(view: dict[str, object], why: str | None) -> None:
    for key in ("id", "state", "channel_id", "created_at", "next_attempt_at", "possible_duplicate"):
        value = view[key]
        click.echo(f"{key:20} {'none' if value is None else value}")
    if why is not None:
        click.echo(f"{'waiting':20} {why}")
    click.echo("recipients:")
    for r in view["recipients"]:  # type: ignore[attr-defined]
        reply = r["reply"]
        said = f"{reply['code']} {reply['enhanced'] or ''} {reply['text']}" if reply else ""
        click.echo(f"  {r['address']:30} {r['state']:10} {said}")
        if reply and reply.get("hint"):
            click.echo(f"  {'':30} {'':10} {reply['hint']}")
    click.echo("attempts:")
    for a in view["attempts"]:  # type: ignore[attr-defined]
        click.echo(
            f"  {a['at']} {a['recipient']:30} {a['outcome']:15} {a['code']} "
            f"{a['enhanced'] or ''} {a['text']}"
        )


@cli.group()
def route() -> None:
    """Which channel mail takes."""


@route.command("explain")
@click.option("--user", "user_email", required=True, help="The sender (a user's email).")
@click.option("--from", "from_", required=True, help="The From address to route.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
@settings_options(*STORE_SETTINGS)
@pass_context
def explain(ctx: Context, user_email: str, from_: str, as_json: bool, settings: Settings) -> None:
    """Which channel mail From this address would take, and why, step by step."""

    from mailvia.outbox.addresses import check_address  # email-validator: not for --help

    def action(s: Services) -> None:
        sender = s.tenancy.user(user_email)
        address = check_address(from_, "from")  # as a message's From is read (A-labels decoded)
        chosen = s.submitter.explain(sender, address)
        view = route_payload(chosen)
        lines = [
            f"{i}. {st.rule}: {st.verdict} - {st.reason}" for i, st in enumerate(chosen.steps, 1)
        ]
        try:
            s.submitter.check_sender(sender, address)
        except MailviaError as exc:
            view["refused"] = str(exc)
            lines.append(f"refused: {exc}")
        emit(view, as_json=as_json, text="\n".join(lines))

    ctx.using(settings, action)
