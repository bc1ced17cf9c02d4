"""Mending a channel: edit any of its fields, tested before they are saved; remove a channel
that still has mail (cancel the mail, or move it to another channel its sender may use);
cancel a channel's waiting mail. The owner of an address channel or an admin does this (the
rule of `Channels.manageable`).

Side effects: `edit` probes the edited channel (one connection) when a field that connecting
or signing in uses changes, and saves only after every step passed (unless the caller saves
without the test); a disconnected channel that passes becomes active and its held mail is
released in its original order (the reconnect path, probe.py); its deferred mail is tried
again now (the back-off was earned with the old settings). `remove` cancels or moves the
channel's waiting mail first (each cancelled message records a `message.cancelled` event),
then removes it (an OAuth mailbox's consent is revoked where the provider allows).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from mailvia.domain.channel import Channel, ChannelState, carries_mail_of, may_send_as
from mailvia.domain.clock import Instant
from mailvia.domain.errors import Conflict, InvalidInput, MailviaError
from mailvia.domain.probe import ProbeReport
from mailvia.domain.tenancy import User
from mailvia.outbox.channels import ChannelChanges, Channels
from mailvia.outbox.headers import read_headers
from mailvia.outbox.oauth.mailboxes import OAuthMailboxes
from mailvia.outbox.probe import ChannelTester
from mailvia.outbox.records import WaitingMail

# How each door names the two ways out for a channel's mail (its Conflict says them all).
CHOICES = (
    "cancel them or move them to another channel (API: ?mail=cancel or ?mail=move&to=CHANNEL; "
    "CLI: --cancel-mail or --move-mail-to CHANNEL; or on the channel's page)"
)


class MendStore(Protocol):
    """What mending needs from the store."""

    def waiting_mail(self, channel_id: str) -> list[WaitingMail]: ...
    def cancel_channel_mail(
        self, channel_id: str, now: Instant, reason: str, ids: Sequence[str] | None = None
    ) -> int: ...
    def move_mail(
        self, channel_id: str, ids: Sequence[str], to_channel_id: str, *, held: bool, now: Instant
    ) -> int: ...
    def retry_channel_now(self, channel_id: str, now: Instant) -> int: ...


class MailChoice(StrEnum):
    """What becomes of a removed channel's waiting mail."""

    CANCEL = "cancel"
    MOVE = "move"


@dataclass(frozen=True)
class Edit:
    """What `edit` did: the channel now (unchanged when refused), the test's report (None:
    not tested), whether it was saved, and whether it came back from disconnected."""

    channel: Channel
    report: ProbeReport | None
    saved: bool
    reconnected: bool = False
    released: int = 0
    retried: int = 0  # deferred messages made due now


@dataclass(frozen=True)
class Kept:
    """A message that could not move, and why."""

    id: str
    reason: str


@dataclass(frozen=True)
class Removal:
    """What `remove` did: removed (False while some mail could not move), how many messages
    were cancelled and moved, and those kept on the channel."""

    removed: bool
    cancelled: int = 0
    moved: int = 0
    kept: tuple[Kept, ...] = ()


class ChannelMending:
    """Edit, remove with mail, cancel mail: the ways out of a wrong channel."""

    def __init__(
        self,
        store: MendStore,
        channels: Channels,
        tester: ChannelTester,
        mailboxes: OAuthMailboxes,
    ) -> None:
        self.store = store
        self.channels = channels
        self.tester = tester
        self.mailboxes = mailboxes

    async def edit(
        self, actor: User, ref: str, changes: ChannelChanges, *, test: bool = True, now: Instant
    ) -> Edit:
        """Change a channel's fields. When a field that connecting or signing in uses changes,
        the edited channel is tested first and saved only if every step passes (`test`
        False: saved untested, and a disconnected channel stays so). Raises what
        `Channels.edited` raises, and Conflict (the name is taken)."""
        channel, updated = self.channels.edited(actor, ref, changes)
        if not changes.connection:
            return Edit(self.channels.save(updated, None), None, saved=True)
        if not test:
            saved = self.channels.save(updated, changes.password)
            await self.tester.forget(saved.id)  # no session keeps the old settings
            return Edit(saved, None, True, retried=self.store.retry_channel_now(saved.id, now))
        report = await self.tester.probe(updated, changes.password)
        if not report.ok:
            return Edit(channel, report, saved=False)
        saved = self.channels.save(updated, changes.password)
        done = await self.tester.passed(report, saved, now)
        retried = self.store.retry_channel_now(saved.id, now)
        return Edit(done.channel, report, True, done.reconnected, done.released, retried)

    async def remove(
        self,
        actor: User,
        ref: str,
        *,
        mail: MailChoice | None = None,
        to: str | None = None,
        now: Instant,
    ) -> Removal:
        """Remove a channel. Its waiting mail is cancelled (`mail` cancel) or moved to the
        channel `to` (`mail` move), message by message where the sender may use it; while some
        cannot move, the channel stays (`removed` False) with them. Raises NotFound,
        Forbidden, Conflict (mail waits and no choice was made; mail is being sent right
        now), InvalidInput (move without a channel, or to itself)."""
        channel = self.channels.manageable(actor, ref)
        waiting = self.store.waiting_mail(channel.id)
        cancelled = moved = 0
        kept: tuple[Kept, ...] = ()
        if waiting and mail is None:
            raise Conflict(
                f"channel {channel.name!r} still has {len(waiting)} message(s) waiting to send: "
                + CHOICES
            )
        if waiting and mail is MailChoice.CANCEL:
            reason = f"by {actor.email}: channel {channel.name} was removed"
            ids = [w.id for w in waiting]
            cancelled = self.store.cancel_channel_mail(channel.id, now, reason, ids)
        elif waiting and mail is MailChoice.MOVE:
            moved, kept = self._move(actor, channel, waiting, to, now)
        if kept:
            return Removal(False, cancelled, moved, kept)
        await self.mailboxes.remove(actor, channel.id)
        return Removal(True, cancelled, moved)

    def cancel_mail(self, actor: User, ref: str, now: Instant) -> int:
        """Cancel every waiting (queued, deferred, held) message of a channel the actor may
        change; each records a `message.cancelled` event. Returns how many. Raises NotFound,
        Forbidden."""
        channel = self.channels.manageable(actor, ref)
        return self.store.cancel_channel_mail(channel.id, now, f"by {actor.email}")

    def _move(
        self,
        actor: User,
        channel: Channel,
        waiting: list[WaitingMail],
        to: str | None,
        now: Instant,
    ) -> tuple[int, tuple[Kept, ...]]:
        if not to:
            raise InvalidInput("to: the channel to move the mail to is required")
        target = self.channels.get(actor, to)
        if target.id == channel.id:
            raise InvalidInput("to: the mail is already on this channel")
        movable, kept = [], []
        for item in waiting:
            why = _unmovable(item, target)
            if why is None:
                movable.append(item.id)
            else:
                kept.append(Kept(item.id, why))
        held = target.state is not ChannelState.ACTIVE
        moved = self.store.move_mail(channel.id, movable, target.id, held=held, now=now)
        if moved:
            self.channels.on_change(target.id)
        return moved, tuple(kept)


def _unmovable(item: WaitingMail, target: Channel) -> str | None:
    """Why `target` may not carry this message (None: it may): the check routing makes."""
    if not carries_mail_of(target, item.user_id):
        return f"{target.name} is another person's mailbox: it carries only its owner's mail"
    try:
        from_address = read_headers(item.head + b"\r\n\r\n").from_address
    except MailviaError:
        return "its From could not be read"
    if not may_send_as(target, from_address):
        return f"{target.name} may not send as {from_address}"
    return None
