"""Notices: plain emails mailvia itself sends through the shared pool, e.g. to tell a
channel's owner (or a team channel's admins) that the channel was disconnected, and the
organization's admins that a provider refused its OAuth app (once for all the mailboxes it
disconnects: the first of them tells them)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Protocol

from mailvia.domain.channel import Channel, ChannelState, Provider, TransportKind, concerns
from mailvia.domain.clock import Instant
from mailvia.domain.errors import MailviaError, NotFound
from mailvia.domain.ids import make_id
from mailvia.domain.message import State
from mailvia.domain.oauth import (
    AppSource,
    app_refused_words,
    basic_auth_refused,
    oauth_offer,
    refusal,
)
from mailvia.domain.tenancy import User
from mailvia.outbox.compose import Draft, compose
from mailvia.outbox.oauth.ports import SealedApp, StoredTokens
from mailvia.outbox.ports import NewMessage

log = logging.getLogger(__name__)


class NoticeStore(Protocol):
    """What notices need from the store: who to tell, and the outbox to put the notice in."""

    def list_users(self, org_id: str) -> list[User]: ...
    def list_channels(self, org_id: str | None = None) -> list[Channel]: ...
    def oauth_token_list(self, org_id: str) -> list[StoredTokens]: ...
    def oauth_app(self, org_id: str, provider: Provider) -> SealedApp | None: ...
    def add_messages(self, messages: Sequence[NewMessage]) -> list[tuple[str, bool]]: ...
    def get_channel(self, channel_id: str) -> Channel: ...


SYSTEM_USER = "system"


class Notices:
    """Queues notices on the shared pool; without a pool there is nowhere to send them."""

    def __init__(
        self, store: NoticeStore, *, pool: Callable[[], Channel | None], notice_from: str
    ) -> None:
        self.store = store
        self.pool = pool
        self.notice_from = notice_from

    def recipients(self, channel: Channel) -> list[str]:
        """Whom the channel's trouble concerns: its owner, or a team channel's team admins."""
        return [
            u.email for u in self.store.list_users(channel.organization_id) if concerns(channel, u)
        ]

    async def channel_disconnected(self, channel: Channel, reason: str, now: Instant) -> None:
        """Queue a notice that `channel` broke, why, and how to fix it."""
        fix = (
            "Reconnect the channel with new credentials (mailvia channel reconnect, or the "
            "setup page)"
        )
        kind = refusal(channel.refusal)
        if channel.oauth is not None and kind is not None and (source := kind.app) is not None:
            self._tell_admins(channel, source, reason, now)
            name = channel.oauth.display_name
            fix = (
                f"{app_refused_words(channel.oauth, source)}, not your mailbox: "
                f"{_ASK_ADMIN[source].format(name=name)}"
            )
        elif channel.oauth is not None:
            name = channel.oauth.display_name
            fix = f'Sign in again with "Reconnect with {name}" on the setup page'
        elif (offer := oauth_offer(channel)) is not None and basic_auth_refused(reason):
            fix = (
                'Password sign-in is off for this mailbox: use "Reconnect with '
                f'{offer.display_name} (OAuth)" on the setup page, which keeps this channel '
                "and its mail"
            )
        text = (
            f"The delivery channel {channel.name!r} ({_where(channel)}) was disconnected "
            f"because of this reply:\n\n    {reason}\n\n"
            f"Mail sent through it is being held, not lost. {fix}, and the held mail "
            "is sent in its original order.\n"
        )
        self.send(
            channel.organization_id,
            self.recipients(channel),
            f"mailvia: your channel {channel.name} is disconnected",
            text,
            now,
        )

    def _tell_admins(self, channel: Channel, source: AppSource, reason: str, now: Instant) -> None:
        """The organization's admins hear that the provider refused its app, from the first
        mailbox disconnected for that very app: none of the organization's was disconnected
        earlier for the same refusal of the same app (its tokens' `refused_app` fingerprint)
        since the organization's app was last saved (two at the same instant may both tell,
        none fails to). A mailbox left disconnected by an older app's refusal never silences
        the notice of a newer app's."""
        assert channel.oauth is not None
        org_id = channel.organization_id
        refused = {t.channel_id: t.refused_app for t in self.store.oauth_token_list(org_id)}
        app = refused.get(channel.id)
        saved = (
            self.store.oauth_app(org_id, channel.oauth)
            if source is AppSource.ORGANIZATION
            else None
        )
        since = saved.updated_at if saved is not None else float("-inf")
        same = [
            c
            for c in self.store.list_channels(org_id)
            if c.state is ChannelState.DISCONNECTED
            and c.refusal == channel.refusal
            and c.oauth is channel.oauth
            and c.id != channel.id
            and app is not None
            and refused.get(c.id) == app
            and since <= (c.state_changed_at or 0.0) < (channel.state_changed_at or 0.0)
        ]
        if same:
            return
        admins = [u.email for u in self.store.list_users(channel.organization_id) if u.is_admin]
        words = app_refused_words(channel.oauth, source)
        text = (
            f"{words}, so every mailbox connected through it is being disconnected as it "
            f"next sends, its mail held, not lost. The first was {channel.name!r}, with this "
            f"reply:\n\n    {reason}\n\n{_ADMIN_FIX[source]}\n"
        )
        self.send(channel.organization_id, admins, f"mailvia: {words}", text, now)

    def send(self, org_id: str, to: list[str], subject: str, text: str, now: Instant) -> str | None:
        """Queue one notice on the pool (held while the pool, as its row reads now, is paused
        or disconnected: it leaves once the pool sends again); returns its id, or None when it
        cannot go."""
        wired = self.pool()
        if wired is None or not to or not self.notice_from:
            return None
        try:
            composed = compose(
                Draft(from_=self.notice_from, to=to, subject=subject, text=text),
                now=now,
                max_size=1_000_000,
            )
        except MailviaError as exc:
            log.warning("notice not sent: %s", exc)
            return None
        try:
            pool = self.store.get_channel(wired.id)  # paused or disconnected since the start?
        except NotFound:
            log.warning("notice not sent: the shared pool's channel %s is gone", wired.id)
            return None
        message = NewMessage(
            id=make_id("msg", now, os.urandom(10)),
            organization_id=org_id,
            user_id=SYSTEM_USER,
            channel_id=pool.id,
            envelope=composed.envelope,
            content=composed.content,
            state=State.QUEUED if pool.state is ChannelState.ACTIVE else State.HELD,
            created_at=now,
            expires_at=now + pool.retry.give_up_after,
        )
        [(message_id, _)] = self.store.add_messages([message])
        return message_id


_ASK_ADMIN = {  # what the rep does: nothing but ask; the mended app brings the mailbox back
    AppSource.ORGANIZATION: "ask an admin to enter its current client secret on the Team "
    "channels page. You need not reconnect: once the app is saved your mailbox is tried "
    "again by itself",
    AppSource.OPERATOR: "it is the operator's app (mailvia's settings), so ask an admin to "
    "have whoever runs mailvia mend it. You need not reconnect: once mailvia runs with the "
    "mended app your mailbox is tried again by itself (only if the organization sets up its "
    'own app instead do you sign in again, with "Reconnect with {name}" on the setup page)',
}

_ADMIN_FIX = {
    AppSource.ORGANIZATION: "Its client ID or secret is wrong, the secret has expired, or the "
    "app was deleted or disabled at the provider. Mend it there, then save the app's current "
    "client secret on the Team channels page: every mailbox disconnected only because of "
    "this is tried again at once, its held mail sent in order; reps need not reconnect.",
    AppSource.OPERATOR: "It is the operator's app (mailvia's OAUTH_*_CLIENT_* settings): ask "
    "whoever runs mailvia to mend it; once mailvia restarts with the mended settings, every "
    "mailbox disconnected only because of this is tried again. Or set up the organization's "
    "own app on the Team channels page (reps then reconnect through it).",
}

_API_NAMES = {TransportKind.GMAIL_API: "the Gmail API", TransportKind.GRAPH: "Microsoft Graph"}


def _where(channel: Channel) -> str:
    """Where the channel sends: its SMTP host, or the provider's API it sends through."""
    return _API_NAMES.get(channel.transport) or channel.host or "no host"
