"""Test connection and reconnect: probe a saved or unsaved channel; bring a disconnected one back.

Side effects: `test` and `test_spec` only probe (one connection, an optional test message) and
store nothing, not even a replacement password. `reconnect` stores the new sealed password,
makes the channel active, releases its held mail in its original order, records a
`channel.reconnected` event and closes the transport's pooled connections, but only after a
passing probe; a failing one changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

from mailvia.domain.channel import Auth, Channel, ChannelState
from mailvia.domain.clock import Instant
from mailvia.domain.errors import Forbidden
from mailvia.domain.probe import ProbeReport
from mailvia.domain.tenancy import User, identity_covers
from mailvia.outbox.channels import Channels, ChannelSpec
from mailvia.outbox.compose import Draft, compose
from mailvia.outbox.dispatch import new_event
from mailvia.outbox.ports import Credentials, Prober, Store, Transport, Vault

TEST_SUBJECT = "mailvia test message"
TEST_TEXT = "This is a test message from mailvia: the channel works.\n"
_TEST_MAX_SIZE = 64 * 1024


class ReconnectStore(Store, Protocol):
    """The store, plus rewriting a channel with a new sealed secret."""

    def update_channel(self, channel: Channel, secret: bytes | None) -> Channel: ...


@dataclass(frozen=True)
class Reconnection:
    """What `reconnect` did: the probe's report, the channel now, and the mail released."""

    report: ProbeReport
    channel: Channel
    reconnected: bool
    released: int = 0


class ChannelTester:
    """Test connection for reps and admins (CLI now; the API and the page later)."""

    def __init__(
        self,
        store: ReconnectStore,
        channels: Channels,
        prober: Prober,
        *,
        transport: Transport | None = None,
        vault: Vault | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.store = store
        self.channels = channels
        self.prober = prober
        self.transport = transport
        self.vault = vault or channels.vault
        self.timeout = timeout

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
        Raises NotFound for a channel the actor may not see, InvalidInput for a bad `to`."""
        channel = self.channels.get(actor, ref)
        return await self._probe(actor, channel, self._credentials(channel, password), to, now)

    async def test_spec(
        self, actor: User, spec: ChannelSpec, *, to: str | None = None, now: Instant
    ) -> ProbeReport:
        """Probe a channel that is not saved. Raises what `Channels.build` raises."""
        channel, _warnings = self.channels.build(actor, spec, now)
        credentials = None
        if channel.auth is not Auth.NONE and channel.username:
            credentials = Credentials(channel.username, spec.password or "")
        return await self._probe(actor, channel, credentials, to, now)

    async def reconnect(
        self, actor: User, ref: str, *, password: str | None, now: Instant
    ) -> Reconnection:
        """Probe with `password` (None: the stored one); if every step passes, store it,
        make a disconnected channel active and release its held mail in its original order.
        A paused channel stays paused (an admin paused it). Raises NotFound, Forbidden."""
        channel = self.channels.get(actor, ref)
        if channel.owner.user_id != actor.id and not actor.is_admin:
            raise Forbidden("only the channel's owner or an admin may reconnect it")
        report = await self._probe(actor, channel, self._credentials(channel, password), None, now)
        if not report.ok:
            return Reconnection(report, channel, reconnected=False)
        if password is not None and channel.auth is not Auth.NONE:
            current = self.store.get_channel(channel.id)
            sealed = self.vault.seal(password.encode())
            channel = self.store.update_channel(replace(current, has_password=True), sealed)
        released, reconnected = 0, channel.state is ChannelState.DISCONNECTED
        if reconnected:
            channel = self.store.set_channel_state(channel.id, ChannelState.ACTIVE, None, now)
            released = self.store.release_channel(channel.id, now)
            data: dict[str, object] = {"channel_id": channel.id, "released": released}
            event = new_event(channel.organization_id, "channel.reconnected", now, data)
            self.store.add_events([event])
        if self.transport is not None:
            await self.transport.forget(channel.id)  # no session keeps the old password
        self.channels.on_change(channel.id)
        return Reconnection(report, channel, reconnected, released)

    def _credentials(self, channel: Channel, password: str | None) -> Credentials | None:
        if password is None:
            return self.channels.credentials(channel)
        if channel.auth is Auth.NONE or not channel.username:
            return None
        return Credentials(channel.username, password)

    async def _probe(
        self,
        actor: User,
        channel: Channel,
        credentials: Credentials | None,
        to: str | None,
        now: Instant,
    ) -> ProbeReport:
        if to is None:
            return await self.prober.probe(channel, credentials, timeout=self.timeout)
        sender = _sender(actor, channel, credentials)
        draft = Draft(from_=sender, to=(to,), subject=TEST_SUBJECT, text=TEST_TEXT)
        composed = compose(draft, now=now, max_size=_TEST_MAX_SIZE)  # checks `to`
        return await self.prober.probe(
            channel,
            credentials,
            to=composed.envelope.rcpt_to[0],
            mail_from=composed.envelope.mail_from,
            content=composed.content,
            timeout=self.timeout,
        )


def _sender(actor: User, channel: Channel, credentials: Credentials | None) -> str:
    """The From of a test message: the channel's address, else the actor's own address when
    the channel covers it, else postmaster of the channel's first domain."""
    if channel.address:
        return channel.address
    if any(identity_covers(f"@{d}", actor.email) for d in channel.domains):
        return actor.email
    if channel.domains:
        return f"postmaster@{channel.domains[0]}"
    username = credentials.username if credentials else ""
    return username if "@" in username else f"postmaster@{channel.host}"
