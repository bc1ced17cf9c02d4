"""The submission port's group reads each From once, with what its route needs, in one
statement (a trusted network's by `Tenancy.trusted_from`, a logged-in user's by
`Tenancy.user_from`; on PostgreSQL in autocommit: one round trip where a BEGIN, four
look-ups and a COMMIT took six), reads no forecast, and commits after, in its own write
transaction. A Sender header of someone else is still checked; a From the logged-in user
may not use is refused with the same answer as before."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import event

from mailvia.domain.channel import Auth, Security
from mailvia.domain.errors import Forbidden
from mailvia.domain.message import Envelope, State
from mailvia.ingress.smtp.intake import Arrived, Intake
from mailvia.outbox.receipts import Receipt
from mailvia.outbox.senders import FromRead
from mailvia.store.tables import identities
from support.world import World

pytestmark = pytest.mark.timeout(60)
RAW = (
    b"From: Jane <jane@acme.test>\r\nTo: bob@example.com\r\nSubject: hi\r\n"
    b"Message-ID: <m@acme.test>\r\nDate: Sun, 06 Dec 2026 10:00:00 +0000\r\n\r\nhello\r\n"
)
READS = (
    "domain_organization",
    "identities",
    "senders_for",
    "get_organization",
    "list_channels",
    "waiting_count",
    "trusted_from",
    "user_from",
)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    url = None if request.param == "sqlite" else str(request.getfixturevalue("migrated_pg_url"))
    w = World(tmp_path / "data", url)
    w.channel(9, security=Security.NONE, auth=Auth.NONE)
    yield w
    await w.close()


@pytest.mark.parametrize("logged_in", [False, True], ids=["trusted", "logged-in"])
def test_a_group_reads_its_sender_and_route_in_one_statement(world: World, logged_in: bool) -> None:
    store = world.store
    calls: dict[str, int] = {}
    for name in READS:
        original = getattr(store, name)

        def counted(*args, _name=name, _original=original):  # type: ignore[no-untyped-def]
            calls[_name] = calls.get(_name, 0) + 1
            return _original(*args)

        setattr(store, name, counted)
    sent: list[tuple[str, bool]] = []
    postgresql = store._db.dialect == "postgresql"

    def look(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        dbapi = conn.connection.dbapi_connection
        sent.append((statement, bool(dbapi.autocommit) if postgresql else False))

    intake = Intake(world.services, time.time)
    group = _arrived(world, intake, RAW, 3, logged_in=logged_in)
    event.listen(store._db.engine, "before_cursor_execute", look)
    try:
        plan = intake.plan(group)
        planned = list(sent)
        receipts = intake.write(plan)
    finally:
        event.remove(store._db.engine, "before_cursor_execute", look)
    assert all(isinstance(r, Receipt) and r.state is State.QUEUED for r in receipts)
    # one look-up for the group's From: no domain, senders, identities, organization or
    # channels read again, no forecast's backlog
    assert calls == {"user_from" if logged_in else "trusted_from": 1}
    if postgresql:  # one statement, in autocommit: psycopg sends no BEGIN and no COMMIT
        assert len(planned) == 1 and planned[0][1]
    else:  # the empty read transaction of plan_each begins nothing
        assert planned[0][0] == "BEGIN" and len(planned) == 2
    assert len(sent) > len(planned)  # the write after the plan
    counts = store.queue_counts(world.jane.organization_id)
    assert [c[State.QUEUED] for c in counts.values()] == [3]


@pytest.mark.parametrize(
    ("address", "answer"),
    [
        ("boss@acme.test", "boss@acme.test is not one of your sender identities"),
        ("jane@elsewhere.test", "the domain elsewhere.test is not assigned to your organization"),
        # quoted as the message has it (the local part's case kept), not lower-cased
        ("Boss@ACME.test", "Boss@acme.test is not one of your sender identities"),
        (
            "Someone@Example.COM",
            "Someone@example.com: the domain example.com is not assigned to your organization",
        ),
    ],
)
def test_a_from_the_logged_in_user_may_not_use_is_refused_as_before(
    world: World, address: str, answer: str
) -> None:
    """The same Forbidden as the API's check (and as main's plan gave), and each message of
    the group gets it; the user's own From in the same group is queued."""
    intake = Intake(world.services, time.time)
    other = RAW.replace(b"From: Jane <jane@acme.test>", f"From: <{address}>".encode())
    envelope = Envelope("jane@acme.test", ("bob@example.com",))
    composed = intake.compose(other, envelope)  # its From's domain lower-cased
    with pytest.raises(Forbidden) as api:
        world.services.submitter.check_sender(world.jane, composed.from_address)
    refused = Arrived(composed, world.jane, None)
    mine = Arrived(intake.compose(RAW, envelope), world.jane, None)
    first, second, queued = intake.commit([refused, refused, mine])
    for r in (first, second):
        assert isinstance(r, Forbidden) and str(r) == str(api.value) and answer in str(r)
    assert isinstance(queued, Receipt) and queued.state is State.QUEUED


def test_a_logged_in_users_identity_taken_away_is_seen_by_the_next_group(world: World) -> None:
    """Nothing is kept between groups: each reads the user's identities again."""
    intake = Intake(world.services, time.time)
    [first] = intake.commit(_arrived(world, intake, RAW, 1, logged_in=True))
    assert isinstance(first, Receipt)
    store = world.store
    with store._db.write() as conn:
        conn.execute(identities.delete().where(identities.c.user_id == world.jane.id))
    [second] = intake.commit(_arrived(world, intake, RAW, 1, logged_in=True))
    assert isinstance(second, Forbidden) and "not one of your sender identities" in str(second)


def test_a_sender_header_of_someone_else_is_still_checked(world: World) -> None:
    intake = Intake(world.services, time.time)
    on_behalf = RAW.replace(b"Subject:", b"Sender: eve@elsewhere.test\r\nSubject:")
    [refused] = intake.commit(_arrived(world, intake, on_behalf, 1))
    assert isinstance(refused, Forbidden) and "Sender header" in str(refused)


def test_a_from_nobody_of_the_organization_holds_is_refused(world: World) -> None:
    intake = Intake(world.services, time.time)
    other = RAW.replace(b"From: Jane <jane@acme.test>", b"From: <nobody@acme.test>")
    envelope = Envelope("nobody@acme.test", ("bob@example.com",))
    org = world.jane.organization_id
    refused = intake.commit([Arrived(intake.compose(other, envelope), None, org)] * 2)
    assert all(isinstance(r, Forbidden) and "sender identity" in str(r) for r in refused)


def test_each_message_is_routed_from_its_own_read(world: World) -> None:
    """Two trusted Froms of one organization, and a logged-in user, in one group: each route
    is worked out from its own message's read (boss's read, arranged to have no channels,
    is nobody else's route)."""
    store, intake = world.store, Intake(world.services, time.time)
    original = store.trusted_from

    def without_channels_for_boss(org_id: str, address: str) -> FromRead:
        found = original(org_id, address)
        return replace(found, channels=()) if address.startswith("boss@") else found

    store.trusted_from = without_channels_for_boss  # type: ignore[method-assign]
    boss = RAW.replace(b"From: Jane <jane@acme.test>", b"From: <boss@acme.test>")
    org = world.jane.organization_id
    envelope = Envelope("jane@acme.test", ("bob@example.com",))
    jane_trusted = Arrived(intake.compose(RAW, envelope), None, org)
    boss_trusted = Arrived(intake.compose(boss, envelope), None, org)
    jane_logged_in = Arrived(intake.compose(RAW, envelope), world.jane, None)
    for group in ([jane_trusted, boss_trusted], [boss_trusted, jane_logged_in]):
        queued, refused = intake.commit(group)[:: 1 if group[0] is jane_trusted else -1]
        assert isinstance(queued, Receipt) and queued.state is State.QUEUED
        assert isinstance(refused, Forbidden) and "no channel" in str(refused)


def _arrived(
    world: World, intake: Intake, raw: bytes, count: int, *, logged_in: bool = False
) -> list[Arrived]:
    """`count` copies of `raw` from jane to bob, as the submission port hands them over
    (from a trusted network of jane's organization, or jane logged in)."""
    envelope = Envelope("jane@acme.test", ("bob@example.com",))
    user, org = (world.jane, None) if logged_in else (None, world.jane.organization_id)
    return [Arrived(intake.compose(raw, envelope), user, org) for _ in range(count)]
