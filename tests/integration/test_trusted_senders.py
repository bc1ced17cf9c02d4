"""`trusted_from` (store/trusted_senders.py): a trusted network's From, read in one
statement: the organization's user who may send as it (holding the address before holding
its @domain, by email among equals; nobody when the domain is another organization's or
no identity covers it), the organization and its channels by name; on PostgreSQL in
autocommit (no BEGIN, no COMMIT: one round trip). The same answers from the memory store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import event

from mailvia.domain.channel import ChannelState
from mailvia.domain.errors import InvalidAddress, NotFound
from mailvia.domain.tenancy import Fallback, Role, User
from mailvia.store import SqlStore, migrate, open_store
from mailvia.store.memory import MemoryStore
from support.databases import migrated_sqlite_file
from support.rows import channel

pytestmark = pytest.mark.timeout(60)
T0 = 1_700_000_000.0


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    if request.param == "memory":
        s: SqlStore = MemoryStore()  # type: ignore[assignment]
    else:
        s = _opened(request, tmp_path, request.param)
    yield _seeded(s)
    s.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    s = _opened(request, tmp_path, request.param)
    yield _seeded(s)
    s.close()


def _opened(request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> SqlStore:
    url = (
        f"sqlite:///{migrated_sqlite_file(tmp_path / 'mailvia.db')}"
        if kind == "sqlite"
        else str(request.getfixturevalue("migrated_pg_url"))
    )
    migrate(url)
    return open_store(url)


def _seeded(s: SqlStore) -> SqlStore:
    s.create_organization("org_1", "acme", T0)
    s.create_organization("org_2", "other", T0)
    s.create_team("team_1", "org_1", "sales", T0)
    s.create_team("team_2", "org_2", "ops", T0)
    for user_id, org, team, email in (
        ("usr_z", "org_1", "team_1", "zed@acme.test"),
        ("usr_b", "org_1", "team_1", "bea@acme.test"),
        ("usr_a", "org_1", "team_1", "amy@acme.test"),
        ("usr_o", "org_2", "team_2", "olga@other.test"),
    ):
        s.create_user(User(user_id, org, team, email, Role.MEMBER), password_hash="h", now=T0)
    s.add_domain("org_1", "acme.test", T0)
    s.add_domain("org_2", "other.test", T0)
    s.grant_identity("usr_z", "@acme.test", T0)  # the whole domain
    s.grant_identity("usr_b", "@acme.test", T0)
    s.grant_identity("usr_a", "sales@acme.test", T0)  # the one address
    s.grant_identity("usr_o", "@acme.test", T0)  # another organization's user
    s.grant_identity("usr_o", "@other.test", T0)
    s.add_channel(channel("ch_b", "relay"), b"sealed", T0)
    s.add_channel(channel("ch_a", "backup", state=ChannelState.PAUSED), None, T0)
    s.update_organization("org_1", default_channel_id="ch_b", fallback=Fallback.NEXT)
    return s


def test_the_holder_of_the_address_comes_before_the_holders_of_its_domain(
    store: SqlStore,
) -> None:
    exact = store.trusted_from("org_1", "Sales@ACME.test")
    assert exact.address == "sales@acme.test"
    assert exact.user is not None and exact.user.id == "usr_a"
    assert exact.user.organization_id == "org_1" and exact.user.role is Role.MEMBER
    domain = store.trusted_from("org_1", "anyone@acme.test")
    assert domain.user is not None and domain.user.email == "bea@acme.test"  # by email
    assert [store.senders_for("org_1", a)[0] for a in ("sales@acme.test", "x@acme.test")] == [
        exact.user,
        domain.user,
    ]


def test_the_organization_and_its_channels_come_with_it(store: SqlStore) -> None:
    found = store.trusted_from("org_1", "sales@acme.test")
    assert found.organization == store.get_organization("org_1")
    assert found.organization.default_channel_id == "ch_b"
    assert found.organization.fallback is Fallback.NEXT
    assert list(found.channels) == store.list_channels("org_1")
    assert [c.name for c in found.channels] == ["backup", "relay"]
    assert found.channels[0].state is ChannelState.PAUSED
    bare = store.trusted_from("org_2", "olga@other.test")  # no channels
    assert bare.user is not None and bare.user.id == "usr_o" and bare.channels == ()


def test_nobody_for_another_organizations_domain_or_an_address_nobody_holds(
    store: SqlStore,
) -> None:
    # usr_o holds @acme.test, but acme.test is org_1's: org_2 may not send as it
    assert store.trusted_from("org_2", "sales@acme.test").user is None
    assert store.trusted_from("org_1", "olga@other.test").user is None
    store.add_domain("org_1", "acme.example", T0)
    found = store.trusted_from("org_1", "someone@acme.example")  # owned, but not held
    assert found.user is None and found.organization.name == "acme"
    assert [c.id for c in found.channels] == ["ch_a", "ch_b"]


def test_an_unknown_organization_or_a_non_address_is_refused(store: SqlStore) -> None:
    with pytest.raises(NotFound):
        store.trusted_from("org_9", "sales@acme.test")
    with pytest.raises(InvalidAddress):
        store.trusted_from("org_1", "not-an-address")


def test_it_is_one_statement_and_on_postgresql_in_autocommit(sql_store: SqlStore) -> None:
    store = sql_store
    sent: list[tuple[str, bool]] = []

    def look(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        dbapi = conn.connection.dbapi_connection
        postgresql = store._db.dialect == "postgresql"
        sent.append((statement, bool(dbapi.autocommit) if postgresql else False))

    event.listen(store._db.engine, "before_cursor_execute", look)
    try:
        store.trusted_from("org_1", "sales@acme.test")
    finally:
        event.remove(store._db.engine, "before_cursor_execute", look)
    if store._db.dialect == "postgresql":
        # psycopg's own BEGIN and COMMIT never reach the event: in autocommit it sends none
        assert len(sent) == 1 and sent[0][1]
    else:
        assert sent[0][0] == "BEGIN" and len(sent) == 2
