"""Test connection and reconnect: probe a saved or unsaved channel; bring a disconnected one back.

Side effects: `test` and `test_spec` probe (one connection; an OAuth mailbox gets its access
token renewed first) and store nothing, not even a replacement password; but a test message
through a saved channel is a message (test_message.py: the sender check, the budgets, a
record), and a saved OAuth mailbox whose grant the provider refuses is disconnected as a
message's refusal would disconnect it (disconnects.py: its mail held, the owner told).
`reconnect` stores the new sealed password, makes the channel active, releases its held mail
in its original order, records a `channel.reconnected` event and closes the transport's
pooled connections, but only after a passing probe; a failing one changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from mailvia.domain.channel import Auth, Channel, ChannelState, Scope, TransportKind
from mailvia.domain.clock import Instant
from mailvia.domain.errors import CredentialsFailed, Forbidden
from mailvia.domain.oauth import app_of
from mailvia.domain.probe import (
    ProbeFailure,
    ProbeReport,
    ProbeStep,
    Step,
    hint_for,
    sender_not_tried,
)
from mailvia.domain.replies import Reply
from mailvia.domain.tenancy import User
from mailvia.outbox.channels import Channels, ChannelSpec
from mailvia.outbox.compose import Composed, Draft, compose
from mailvia.outbox.disconnects import disconnect
from mailvia.outbox.dispatch import new_event
from mailvia.outbox.dispatch_ports import Notifier, no_notice
from mailvia.outbox.ports import (
    Credentials,
    CredentialSource,
    Prober,
    Transport,
)
from mailvia.outbox.records import Event
from mailvia.outbox.test_message import SUBJECT, TEXT, TestMessages, sender_for_test

_TEST_MAX_SIZE = 64 * 1024


class ReconnectStore(Protocol):
    """What testing and reconnecting need from the store."""

    def get_user(self, user_id: str) -> User: ...
    def get_channel(self, channel_id: str) -> Channel: ...
    def update_channel(self, channel: Channel, secret: bytes | None) -> Channel: ...
    def set_channel_state(
        self, channel_id: str, state: ChannelState, reason: str | None, now: Instant
    ) -> Channel: ...
    def release_channel(self, channel_id: str, now: Instant) -> int: ...
    def hold_channel(self, channel_id: str, now: Instant) -> int: ...
    def disconnect_channel(
        self, seen: Channel, reason: str, now: Instant, *, refusal: str | None = None
    ) -> Channel | None: ...
    def add_events(self, events: Sequence[Event]) -> None: ...


@dataclass(frozen=True)
class Reconnection:
    """What `reconnect` did: the probe's report, the channel now, and the mail released."""

    report: ProbeReport
    channel: Channel
    reconnected: bool
    released: int = 0


class ChannelTester:
    """Test connection and reconnect for reps and admins (the CLI, the API and the pages)."""

    def __init__(
        self,
        store: ReconnectStore,
        channels: Channels,
        prober: Prober,
        *,
        transport: Transport,
        messages: TestMessages,
        tokens: CredentialSource,
        notify_disconnected: Notifier = no_notice,
        timeout: float = 10.0,
    ) -> None:
        self.store = store
        self.channels = channels
        self.prober = prober
        self.transport = transport
        self.vault = channels.vault
        self.timeout = timeout
        self.messages = messages
        self.tokens = tokens  # an OAuth mailbox's access tokens (the dispatcher's source)
        self.notify = notify_disconnected  # tells the owner, as the dispatcher does

    async def test(
        self,
        actor: User,
        ref: str,
        *,
        to: str | None = None,
        password: str | None = None,
        now: Instant,
    ) -> ProbeReport:
        """Probe a saved channel, with its stored password or with `password` (not saved).
        With `to`, a test message From the actor's own address, recorded like any message
        (test_message.py). Raises NotFound for a channel the actor may not see, InvalidInput
        for a bad `to`, Forbidden (not the actor's address), CannotCarry and RateLimited (the
        channel's budgets allow no message now)."""
        channel = self.channels.get(actor, ref)
        if to is None:
            sender = probe_sender(channel)
            return await self._with_credentials(channel, password, None, now=now, sender=sender)
        prepared = self.messages.prepare(actor, channel, to)
        report: ProbeReport | None = None
        try:
            report = await self._with_credentials(channel, password, prepared.composed, now=now)
        finally:
            self.messages.record(prepared, channel, report.delivery if report else None)
        return report

    def owner(self, actor: User, ref: str) -> User | None:
        """The user who owns a channel `actor` may see (None for a team's channel)."""
        channel = self.channels.get(actor, ref)
        return self.store.get_user(channel.owner.user_id) if channel.owner.user_id else None

    async def test_spec(
        self, actor: User, spec: ChannelSpec, *, to: str | None = None, now: Instant
    ) -> ProbeReport:
        """Probe a channel that is not saved; a test message is From the actor's own address
        that the channel may carry, checked like any (not recorded: there is no channel to
        record it on). Raises what `Channels.build` raises, Forbidden and InvalidInput."""
        channel, _warnings = self.channels.build(actor, spec, now)
        credentials = None
        if channel.auth is not Auth.NONE and channel.username:
            credentials = Credentials(channel.username, spec.password or "")
        message = None
        if to is not None:
            sender = sender_for_test(actor, channel)
            self.messages.checks.check_sender(actor, sender)
            draft = Draft(from_=sender, to=(to,), subject=SUBJECT, text=TEXT)
            message = compose(draft, now=now, max_size=_TEST_MAX_SIZE)  # checks `to`
        tried = probe_sender(channel) if message is None else None
        return await self._probe(channel, credentials, message, tried)

    async def reconnect(
        self, actor: User, ref: str, *, password: str | None, now: Instant
    ) -> Reconnection:
        """Probe with `password` (None: the stored one); if every step passes, store it,
        make a disconnected channel active and release its held mail in its original order.
        A paused channel stays paused (an admin paused it). Raises NotFound, Forbidden."""
        channel = self.channels.get(actor, ref)
        if channel.owner.user_id != actor.id and not actor.is_admin:
            raise Forbidden("only the channel's owner or an admin may reconnect it")
        sender = probe_sender(channel)
        report = await self._with_credentials(channel, password, None, now=now, sender=sender)
        if not report.ok:
            return Reconnection(report, channel, reconnected=False)
        if password is not None and channel.auth is not Auth.NONE:
            current = self.store.get_channel(channel.id)
            sealed = self.vault.seal(password.encode())
            channel = self.store.update_channel(replace(current, has_password=True), sealed)
        return await self.passed(report, channel, now)

    async def passed(self, report: ProbeReport, channel: Channel, now: Instant) -> Reconnection:
        """After a passing test of a saved channel: a disconnected channel becomes active, its
        held mail is released in its original order and a `channel.reconnected` event is
        recorded; the transport's pooled connections (made with the old settings) close."""
        released, reconnected = 0, channel.state is ChannelState.DISCONNECTED
        if reconnected:
            channel = self.store.set_channel_state(channel.id, ChannelState.ACTIVE, None, now)
            released = self.store.release_channel(channel.id, now)
            data: dict[str, object] = {"channel_id": channel.id, "released": released}
            event = new_event(channel.organization_id, "channel.reconnected", now, data)
            self.store.add_events([event])
        await self.transport.forget(channel.id)  # no session keeps the old password
        self.channels.on_change(channel.id)
        return Reconnection(report, channel, reconnected, released)

    async def forget(self, channel_id: str) -> None:
        """Close the transport's pooled connections of a channel whose settings changed."""
        await self.transport.forget(channel_id)

    async def probe(self, channel: Channel, password: str | None) -> ProbeReport:
        """Probe a channel as given (e.g. edited, not yet saved), signing in with `password`
        (None: the stored one). Stores nothing."""
        return await self._with_credentials(channel, password, None, sender=probe_sender(channel))

    async def _with_credentials(
        self,
        channel: Channel,
        password: str | None,
        message: Composed | None,
        *,
        now: Instant | None = None,
        sender: str | None = None,
    ) -> ProbeReport:
        """An OAuth mailbox first gets an access token renewed from the provider (the `token`
        step); any other channel uses its stored password, or `password`. With `now` (a saved
        channel), a mailbox whose grant the provider refuses is disconnected, as a message
        that met the refusal would disconnect it."""
        if channel.oauth is None or password is not None:
            credentials = self._credentials(channel, password)
            return await self._probe(channel, credentials, message, sender)
        try:
            token = await self._renewed(channel)
        except CredentialsFailed as failed:
            if now is not None and failed.reply.code >= 500:
                await self._disconnect(channel, failed.reply, now)
            return ProbeReport.of([_token_failed(failed)])
        report = await self._probe(channel, token, message, sender)
        return ProbeReport.of([_token_step(channel, token), *report.steps], report.delivery)

    async def _disconnect(self, channel: Channel, reply: Reply, now: Instant) -> None:
        """Disconnect the channel as it was read before the renewal (an active one only, and
        only if nothing changed it since: disconnects.py), with the refusal's kind."""
        await disconnect(
            self.store, self.transport, self.notify, channel, str(reply), now,
            refusal=reply.refusal,
        )  # fmt: skip

    async def _renewed(self, channel: Channel) -> Credentials | None:
        """The mailbox's access token, renewed now (once, whether the one in hand is due or
        not), so the provider is asked whether the grant still holds."""
        return await self.tokens(channel, renew=True)

    def _credentials(self, channel: Channel, password: str | None) -> Credentials | None:
        if password is None:
            return self.channels.credentials(channel)
        if channel.auth is Auth.NONE or not channel.username:
            return None
        return Credentials(channel.username, password)

    async def _probe(
        self,
        channel: Channel,
        credentials: Credentials | None,
        message: Composed | None,
        sender: str | None = None,
    ) -> ProbeReport:
        if message is None:  # `sender`: MAIL FROM it, then RSET (nothing is sent)
            report = await self.prober.probe(
                channel, credentials, mail_from=sender, timeout=self.timeout
            )
            if sender is None and report.ok and channel.transport is TransportKind.SMTP:
                return ProbeReport.of([*report.steps, sender_not_tried()])
            return report
        return await self.prober.probe(
            channel,
            credentials,
            to=message.envelope.rcpt_to[0],
            mail_from=message.envelope.mail_from,
            content=message.content,
            timeout=self.timeout,
        )


def probe_sender(channel: Channel) -> str | None:
    """The address a test without a message tries as MAIL FROM (the `sender` step), so a
    channel whose server refuses its sender (which disconnects it) does not pass the test:
    only an address-scoped channel's own address, the one address it is known to send from.
    None for a team or domain channel (its members' addresses; a guessed one, such as
    postmaster@ or the admin's, may be refused where every real sender is taken, and would
    block the save: its step is reported not tried), and for a mailbox sending through its
    provider's HTTP API (no MAIL FROM there)."""
    if channel.transport is not TransportKind.SMTP:
        return None
    if channel.scope is Scope.ADDRESS and channel.address:
        return channel.address
    return None


def _token_step(channel: Channel, token: Credentials | None) -> ProbeStep:
    who = token.username if token is not None and token.username else channel.address
    provider = channel.oauth.display_name if channel.oauth else "the provider"
    detail = f"an access token for {who} from {provider}, renewed just now: the consent holds"
    if channel.transport is not TransportKind.SMTP:
        detail += (
            "; its send-only scope does not allow reading the mailbox's profile, so without "
            "a test message nothing more is checked: give an address to send one to"
        )
    return ProbeStep(str(Step.TOKEN), True, detail)


def _token_failed(failed: CredentialsFailed) -> ProbeStep:
    reply = failed.reply
    kind = ProbeFailure.TOKEN_REFUSED if reply.code >= 500 else ProbeFailure.TOKEN_UNAVAILABLE
    detail = reply.text.removeprefix("mailvia: ")
    hint = hint_for(reply) if app_of(reply) else hint_for(failure=kind)
    return ProbeStep(str(Step.TOKEN), False, detail, str(reply), hint)
