"""Routing precedence: own address channel, team domain channel, default, pool; hold/next."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mailvia.domain.channel import Auth, Channel, ChannelState, Kind, Owner, Scope, Security
from mailvia.domain.routing import route
from mailvia.domain.tenancy import Fallback, Organization, Role, User

JANE = User("u_jane", "org", "team_sales", "jane@acme.test", Role.MEMBER)
ORG = Organization("org", "acme")


def ch(
    id_: str,
    scope: Scope,
    *,
    address: str | None = None,
    domains: tuple[str, ...] = (),
    user: str | None = None,
    team: str | None = None,
    kind: Kind = Kind.SMTP,
    state: ChannelState = ChannelState.ACTIVE,
) -> Channel:
    owner = Owner(user_id=user) if user else Owner(team_id=team or "team_sales")
    return Channel(
        id=id_,
        organization_id="org",
        name=id_,
        kind=kind,
        host="h",
        port=587,
        security=Security.STARTTLS,
        auth=Auth.PLAIN,
        scope=scope,
        owner=owner,
        address=address,
        domains=domains,
        state=state,
    )


OWN = ch("own", Scope.ADDRESS, address="jane@acme.test", user="u_jane")
OTHER_REP = ch("bob", Scope.ADDRESS, address="bob@acme.test", user="u_bob")
TEAM = ch("team", Scope.DOMAIN, domains=("acme.test",))
OTHER_TEAM = ch("other-team", Scope.DOMAIN, domains=("acme.test",), team="team_other")
ELSEWHERE = ch("elsewhere", Scope.DOMAIN, domains=("other.test",))
POOL = ch("pool", Scope.DOMAIN, kind=Kind.POOL)


def pick(
    channels: list[Channel],
    org: Organization = ORG,
    from_: str = "jane@acme.test",
    pool: Channel | None = POOL,
) -> str | None:
    r = route(sender=JANE, from_address=from_, channels=channels, organization=org, pool=pool)
    return r.channel.id if r.channel else None


@pytest.mark.parametrize(
    ("channels", "org", "expected"),
    [
        ([OWN, TEAM], ORG, "own"),
        ([OTHER_REP, TEAM], ORG, "team"),
        ([OTHER_TEAM, TEAM], ORG, "team"),  # the sender's own team first
        ([OTHER_TEAM], ORG, "other-team"),
        ([ELSEWHERE], replace(ORG, default_channel_id="elsewhere"), "pool"),  # may not send
        ([TEAM, ELSEWHERE], replace(ORG, default_channel_id="elsewhere"), "team"),
        ([], ORG, "pool"),
    ],
)
def test_precedence(channels: list[Channel], org: Organization, expected: str) -> None:
    assert pick(channels, org) == expected


def test_default_channel_used_when_it_may_send() -> None:
    default = ch("default", Scope.DOMAIN, domains=("acme.test",), team="team_other")
    org = replace(ORG, default_channel_id="default")
    assert pick([default, OTHER_REP], org) == "default"


def test_nothing_without_a_pool() -> None:
    assert pick([OTHER_REP], pool=None) is None


def test_disconnected_channel_holds_by_default() -> None:
    broken = replace(OWN, state=ChannelState.DISCONNECTED)
    r = route(
        sender=JANE,
        from_address="jane@acme.test",
        channels=[broken, TEAM],
        organization=ORG,
        pool=POOL,
    )
    assert r.channel is broken and r.held
    assert [s.verdict for s in r.steps] == ["held"]


def test_fallback_next_takes_the_next_channel_that_may_send() -> None:
    broken = replace(OWN, state=ChannelState.DISCONNECTED)
    org = replace(ORG, fallback=Fallback.NEXT)
    r = route(
        sender=JANE,
        from_address="jane@acme.test",
        channels=[broken, TEAM],
        organization=org,
        pool=POOL,
    )
    assert r.channel is TEAM and not r.held
    assert [s.verdict for s in r.steps] == ["skipped", "chosen"]


def test_fallback_next_holds_when_nothing_else_may_send() -> None:
    broken = replace(OWN, state=ChannelState.PAUSED)
    org = replace(ORG, fallback=Fallback.NEXT)
    r = route(
        sender=JANE, from_address="jane@acme.test", channels=[broken], organization=org, pool=None
    )
    assert r.channel is broken and r.held and r.steps[-1].rule == "fallback"


def test_explanation_names_each_step() -> None:
    r = route(
        sender=JANE, from_address="jane@acme.test", channels=[TEAM], organization=ORG, pool=POOL
    )
    assert [s.rule for s in r.steps] == ["own channel", "team channel"]
    assert "team channel for acme.test" in r.reason


BOB = User("u_bob", "org", "team_sales", "bob@acme.test", Role.MEMBER)


@pytest.mark.parametrize("fallback", list(Fallback))
def test_a_members_mailbox_stored_as_default_never_carries_anyone_elses_mail(
    fallback: Fallback,
) -> None:
    """Existing data may name bob's own mailbox as the default: jane (who may send as bob's
    address, e.g. through a domain identity) must not send through bob's credentials."""
    org = replace(ORG, default_channel_id="bob", fallback=fallback)
    r = route(
        sender=JANE, from_address="bob@acme.test", channels=[OTHER_REP], organization=org, pool=POOL
    )
    assert r.channel is POOL
    [default] = [s for s in r.steps if s.rule == "organization default"]
    assert default.verdict == "skipped" and default.channel_id == "bob"
    assert "bob@acme.test" in default.reason and "only its owner's" in default.reason


def test_a_members_mailbox_stored_as_default_is_skipped_without_a_pool() -> None:
    org = replace(ORG, default_channel_id="bob")
    r = route(
        sender=JANE, from_address="bob@acme.test", channels=[OTHER_REP], organization=org, pool=None
    )
    assert r.channel is None


def test_a_broken_own_mailbox_never_falls_back_to_another_members_mailbox() -> None:
    broken = replace(OWN, state=ChannelState.DISCONNECTED)
    jane_also_at_bob = replace(OTHER_REP, address="jane@acme.test")  # forged or stale data
    org = replace(ORG, default_channel_id="bob", fallback=Fallback.NEXT)
    r = route(
        sender=JANE,
        from_address="jane@acme.test",
        channels=[broken, jane_also_at_bob],
        organization=org,
        pool=POOL,
    )
    assert r.channel is POOL


def test_the_owner_still_uses_their_own_mailbox() -> None:
    org = replace(ORG, default_channel_id="bob")
    r = route(
        sender=BOB, from_address="bob@acme.test", channels=[OTHER_REP], organization=org, pool=POOL
    )
    assert r.channel is OTHER_REP and r.steps[0].rule == "own channel"


def test_a_route_says_whether_it_reached_the_pool() -> None:
    """Only a route that looked at the pool depends on the pool's state (the submitter then
    reads its row as it is now): one chosen or held before it never did."""
    broken = replace(TEAM, state=ChannelState.PAUSED)

    def reached(channels: list[Channel], org: Organization = ORG) -> bool:
        r = route(
            sender=JANE,
            from_address="jane@acme.test",
            channels=channels,
            organization=org,
            pool=POOL,
        )
        return r.reached_pool

    assert not reached([OWN]) and not reached([TEAM]) and not reached([broken])
    assert reached([]) and reached([OTHER_REP, ELSEWHERE])
    assert reached([broken], replace(ORG, fallback=Fallback.NEXT))
