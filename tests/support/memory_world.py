"""A world for logic tests on the memory store (store/memory/): the tenancy, channels,
submit and dispatch use cases wired as app/wiring.py wires them, over a transport the test gives
and one stepping clock. Organization `acme` with domain `acme.test`, team `sales`, rep
`jane@acme.test`. No database, no SMTP: budgets, retries and routing run in milliseconds;
tests/support/world.py is the same world on SQLite with the real transport."""

from __future__ import annotations

import os

from mailvia.domain.channel import Auth, Channel, Scope, Security
from mailvia.domain.clock import SteppingClock
from mailvia.outbox.channels import Channels, ChannelSpec
from mailvia.outbox.dispatch import Dispatcher, DispatchOptions
from mailvia.outbox.ports import Credentials, Transport
from mailvia.outbox.submit import Submitter
from mailvia.outbox.tenancy import Tenancy
from mailvia.outbox.tokens import ApiTokens
from mailvia.secrets import Vault
from mailvia.store.memory import MemoryStore


async def no_credentials(
    channel: Channel, *, rejected: Credentials | None = None, renew: bool = False
) -> None:
    return None


class MemoryWorld:
    """The use cases on a MemoryStore; `clock` is the time every one of them reads."""

    def __init__(self, transport: Transport, clock: SteppingClock, *, batch: int = 200) -> None:
        self.store = MemoryStore()
        self.clock = clock
        now = clock.now
        store = self.store
        self.tenancy = Tenancy(store, hash_password=lambda p: "x", tokens=ApiTokens(store))
        self.channels = Channels(store, Vault(os.urandom(32)), check_plaintext_host=lambda h: None)
        self.dispatcher = Dispatcher(
            store,
            transport,
            credentials=no_credentials,
            workers=store,
            options=DispatchOptions(worker="test-worker", lease_seconds=60.0, batch=batch),
        )
        self.submitter = Submitter(store, pool=lambda: None, on_submit=self.dispatcher.wake)
        self.tenancy.create_org("acme", now)
        self.tenancy.create_team("sales", "acme", now)
        self.tenancy.add_domain("acme", "acme.test", now)
        self.jane = self.tenancy.create_user(
            "jane@acme.test", org_name="acme", team_name="sales", admin=False, now=now
        )[0]

    def channel(self, **kw: object) -> Channel:
        """Jane's channel (security none, no sign-in: the transport is the test's)."""
        spec = _local("jane-box", address="jane@acme.test", **kw)
        return self.channels.add(self.jane, spec, self.clock.now)[0]

    def team_channel(self) -> Channel:
        """Sales' channel for acme.test (a domain channel), added by an admin made for it."""
        admin = self.tenancy.create_user(
            "boss@acme.test", org_name="acme", team_name="sales", admin=True, now=self.clock.now
        )[0]
        spec = _local("acme-relay", scope=Scope.DOMAIN, domains=("acme.test",), team_name="sales")
        return self.channels.add(admin, spec, self.clock.now)[0]


def _local(name: str, **kw: object) -> ChannelSpec:
    """A channel to 127.0.0.1:2525, no TLS, no sign-in (the transport is the test's)."""
    return ChannelSpec(
        name=name,
        host="127.0.0.1",
        port=2525,
        security=Security.NONE,
        auth=Auth.NONE,
        **kw,  # type: ignore[arg-type]
    )
