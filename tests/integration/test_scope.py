"""Credential scope, enforced: address channels stay with their owner and their one From;
domain channels carry only their domains; no organization sends From another's domain."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailvia.domain.channel import Scope
from mailvia.domain.errors import Conflict, Forbidden, InvalidAddress
from mailvia.domain.tenancy import Fallback
from mailvia.outbox.channels import ChannelSpec
from mailvia.outbox.compose import Draft, compose
from mailvia.outbox.submit import Submission
from support.world import World


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = World(tmp_path / "data")
    yield w
    await w.close()


def submit_from(world: World, sender: str, user_email: str = "jane@acme.test") -> str:
    user = world.services.tenancy.user(user_email)
    composed = compose(
        Draft(from_=sender, to=["bob@example.com"], text="hi"), now=time.time(), max_size=10**6
    )
    [receipt] = world.services.submitter.submit(user, [Submission(composed)], now=time.time())
    return receipt.channel.name


def team_spec(name: str, *domains: str) -> ChannelSpec:
    return ChannelSpec(
        name=name, preset="sparkpost", password="key", domains=domains, team_name="sales"
    )


def test_an_address_channel_cannot_be_shared_with_the_team(world: World) -> None:
    spec = ChannelSpec(
        name="m365",
        preset="microsoft365",
        username="jane@acme.test",
        password="pw",
        team_name="sales",
    )
    with pytest.raises(Forbidden, match="each rep connects their own"):
        world.services.channels.add(world.admin, spec, time.time())


@pytest.mark.parametrize("preset", ["microsoft365", "gmail"])
def test_a_mailbox_preset_cannot_be_made_domain_scoped(world: World, preset: str) -> None:
    spec = ChannelSpec(
        name="mailbox for all",
        preset=preset,
        username="jane@acme.test",
        password="pw",
        scope=Scope.DOMAIN,
        domains=("acme.test",),
        team_name="sales",
    )
    with pytest.raises(Forbidden, match="cannot be a team channel"):
        world.services.channels.add(world.admin, spec, time.time())


def test_a_member_cannot_create_a_team_channel(world: World) -> None:
    with pytest.raises(Forbidden, match="only admins"):
        world.services.channels.add(world.jane, team_spec("sp", "acme.test"), time.time())


def test_a_rep_cannot_connect_someone_elses_address(world: World) -> None:
    spec = ChannelSpec(
        name="boss-box",
        preset="microsoft365",
        username="boss@acme.test",
        password="pw",
        address="boss@acme.test",
    )
    with pytest.raises(Forbidden, match=r"not one of jane@acme\.test's sender identities"):
        world.services.channels.add(world.jane, spec, time.time())
    with pytest.raises(Forbidden, match="only for themselves"):
        world.services.channels.add(
            world.jane,
            ChannelSpec(name="x", preset="gmail", user_email="boss@acme.test", password="pw"),
            time.time(),
        )


def test_a_domain_channel_carries_only_its_domains(world: World) -> None:
    now = time.time()
    world.services.tenancy.add_domain("acme", "acme-mail.test", now)
    world.services.tenancy.grant("jane@acme.test", "@acme-mail.test", now)
    channel, _ = world.services.channels.add(world.admin, team_spec("sp", "acme.test"), now)
    assert channel.scope is Scope.DOMAIN and channel.owner.team_id == world.jane.team_id
    assert submit_from(world, "jane@acme.test") == "sp"
    # Another of the organization's domains is not the channel's: without a pool, refused.
    with pytest.raises(Forbidden, match="no channel may send as"):
        submit_from(world, "jane@acme-mail.test")


def test_a_domain_channel_only_for_the_organizations_domains(world: World) -> None:
    now = time.time()
    world.services.tenancy.create_org("globex", now)
    world.services.tenancy.add_domain("globex", "globex.test", now)
    with pytest.raises(Forbidden, match="not assigned to your organization"):
        world.services.channels.add(world.admin, team_spec("sp", "globex.test"), now)


def test_no_organization_sends_from_anothers_domain(world: World) -> None:
    now = time.time()
    world.services.tenancy.create_org("globex", now)
    world.services.tenancy.add_domain("globex", "globex.test", now)
    world.services.channels.add(world.admin, team_spec("sp", "acme.test"), now)
    with pytest.raises(Forbidden, match="not assigned to your organization"):
        submit_from(world, "ceo@globex.test")
    with pytest.raises(Forbidden, match="not one of your sender identities"):
        submit_from(world, "boss@acme.test")  # inside the domain, but not jane's identity


@pytest.mark.parametrize("typed", ["@@acme.test", "@@@acme.test", "@ @acme.test"])
def test_a_domain_identity_has_one_at_sign(world: World, typed: str) -> None:
    """`@acme.test` is the whole domain; `@@acme.test` is no domain, not the same one."""
    with pytest.raises(InvalidAddress, match="domain"):
        world.services.tenancy.grant("jane@acme.test", typed, time.time())
    with pytest.raises(InvalidAddress, match="domain"):
        world.services.tenancy.add_domain("acme", typed, time.time())


def test_a_user_is_found_whichever_spelling_of_their_domain(world: World) -> None:
    """Logins are stored as addresses hold them (U-labels) and looked up so: the CLI's
    --user and grant EMAIL, the web sign-in, a token's user (`find_user`)."""
    now = time.time()
    tenancy = world.services.tenancy
    tenancy.add_domain("acme", "bücher.test", now)
    tenancy.create_user(
        "ada@xn--bcher-kva.test", org_name="acme", team_name="sales", admin=False, now=now
    )
    for typed in ("ada@bücher.test", "ada@xn--bcher-kva.test", " Ada@XN--BCHER-KVA.test"):
        assert tenancy.user(typed).email == "ada@bücher.test", typed
    assert tenancy.grant("ada@xn--bcher-kva.test", "@bücher.test", now) == "@bücher.test"


def test_a_domain_is_one_domain_whichever_spelling_is_typed(world: World) -> None:
    """A domain's A-labels and its U-labels are one domain: stored once, in the form
    addresses hold it (`bücher.test`), and found whichever spelling is typed."""
    now = time.time()
    tenancy = world.services.tenancy
    assert tenancy.add_domain("acme", "XN--BCHER-KVA.test", now) == "bücher.test"
    assert tenancy.add_domain("acme", "bücher.test", now) == "bücher.test"
    assert tenancy.domains(world.admin) == ["acme.test", "bücher.test"]
    tenancy.create_org("globex", now)
    with pytest.raises(Conflict, match="another organization"):
        tenancy.add_domain("globex", "xn--bcher-kva.test", now)
    assert tenancy.grant("jane@acme.test", "@xn--bcher-kva.test", now) == "@bücher.test"
    assert tenancy.grant("jane@acme.test", "sales@xn--bcher-kva.test", now) == "sales@bücher.test"
    channel, _ = world.services.channels.add(
        world.admin, team_spec("sp", "xn--bcher-kva.test"), now
    )
    assert channel.domains == ("bücher.test",)
    for sender in ("jane@bücher.test", "jane@xn--bcher-kva.test", "sales@XN--BCHER-KVA.test"):
        assert submit_from(world, sender) == "sp", sender


def test_disconnected_channel_holds_unless_fallback_next(world: World) -> None:
    now = time.time()
    own = world.channel(2525)
    world.services.channels.add(world.admin, team_spec("sp", "acme.test"), now)
    world.services.channels.pause(world.jane, own.id, now)
    user = world.jane
    composed = compose(
        Draft(from_="jane@acme.test", to=["b@example.com"], text="x"), now=now, max_size=10**6
    )
    [held] = world.services.submitter.submit(user, [Submission(composed)], now=now)
    assert held.channel.id == own.id and str(held.state) == "held"
    org = world.store.get_organization(user.organization_id)
    world.store.update_organization(org.id, default_channel_id=None, fallback=Fallback.NEXT)
    [moved] = world.services.submitter.submit(user, [Submission(composed)], now=now)
    assert moved.channel.name == "sp" and str(moved.state) == "queued"
