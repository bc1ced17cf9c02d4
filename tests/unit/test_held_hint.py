"""A held recipient's hint is its channel's: the API's and CLI's message JSON says what the
channel's own `state_hint` says (a team channel cannot try a sender in its test; an own one
can), not a sentence hedged for a channel not known (CI's stop 24 caught the two apart)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mailvia.domain.channel import Channel, Kind, Scope
from mailvia.domain.clock import SteppingClock
from mailvia.domain.delivery import TransactionResult
from mailvia.domain.message import Envelope, State
from mailvia.domain.probe import POOL_MENDED_BY_OPERATOR, fix_for, state_hint
from mailvia.domain.replies import Reply, Stage
from mailvia.ingress.payloads import message_payloads
from mailvia.outbox.backlog import Backlog
from mailvia.outbox.compose import Draft, compose
from mailvia.outbox.ports import Credentials
from mailvia.outbox.submit import Submission
from support import rows
from support.memory_world import MemoryWorld
from support.transports import QuietTransport

REFUSED = Reply(550, "5.7.1", "sender address rejected")


class RefusesSender(QuietTransport):
    """A server that refuses every sender at MAIL FROM."""

    async def send(
        self, channel: Channel, credentials: Credentials | None, envelope: Envelope, content: bytes
    ) -> TransactionResult:
        return TransactionResult(Stage.MAIL, REFUSED)


@pytest.mark.parametrize("scope", [Scope.ADDRESS, Scope.DOMAIN])
async def test_a_held_recipients_hint_is_its_channels_state_hint(scope: Scope) -> None:
    clock = SteppingClock(1_800_000_000.0)
    world = MemoryWorld(RefusesSender(), clock)
    channel = world.channel() if scope is Scope.ADDRESS else world.team_channel()
    draft = Draft(from_="jane@acme.test", to=["bob@example.com"], subject="hi", text="hi")
    one = compose(draft, now=clock.now, max_size=10**6)
    [receipt] = world.submitter.submit(world.jane, [Submission(one)], now=clock.now)
    await world.dispatcher.run_once(clock)

    held = world.store.get_message(receipt.id)
    assert held.state is State.HELD
    disconnected = next(c for c in world.store.list_channels() if c.id == channel.id)
    expected = state_hint(disconnected.state_reason, disconnected)
    assert expected is not None and disconnected.state_reason.startswith("550 5.7.1")
    [shown] = message_payloads([held], Backlog(world.store))
    [recipient] = shown["recipients"]
    assert recipient["state"] == "held"
    assert recipient["reply"]["hint"] == expected
    other = world.team_channel() if scope is Scope.ADDRESS else world.channel()
    assert expected != state_hint(disconnected.state_reason, other)


def test_mail_on_the_shared_pool_is_hinted_as_the_operators_not_a_password_to_change() -> None:
    """The pool's row is the operator's organization's: `channels_of` finds it by id, and a
    refusal that disconnected it tells an organization's user nothing to change (its relay's
    login is the operator's MAILVIA_POOL_RELAY), where the kind-less hint said to replace a
    password on the channel's page."""
    pool = rows.channel("ch_pool", "shared pool", kind=Kind.POOL, organization_id="org_platform")
    refused = Reply(535, "5.7.8", "Authentication failed")
    assert state_hint(str(refused), pool) == POOL_MENDED_BY_OPERATOR
    assert fix_for(refused, pool) == POOL_MENDED_BY_OPERATOR
    assert fix_for(refused) != POOL_MENDED_BY_OPERATOR
    store = SimpleNamespace(
        list_channels=lambda org_id: [], get_channel={"ch_pool": pool}.__getitem__
    )
    held = SimpleNamespace(organization_id="org_acme", channel_id="ch_pool", state=State.HELD)
    found = Backlog(store).channels_of([held])  # type: ignore[arg-type, list-item]
    assert found == {"ch_pool": pool}
