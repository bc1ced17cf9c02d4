"""`trusted_from` and `user_from` (store/from_reads.py): a From read in one statement:
its domain's owner, the organization and its channels by name, and the organization's user
holding it (holding the address before holding its @domain, by email among equals) or the
logged-in user's identities; on PostgreSQL in autocommit (no BEGIN, no COMMIT: one round
trip). The same answers from the memory store. What the reads allow is outbox/senders.py's
rule (`trusted_of`: nobody when the domain is another organization's or no identity covers
it; `user_of_read`: `check_sender`'s answers), the same as `sender_for`'s and the API's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import event

from mailvia.domain.channel import ChannelState
from mailvia.domain.errors import Forbidden, InvalidAddress, NotFound
from mailvia.domain.tenancy import Fallback, Role, User
from mailvia.outbox.senders import FromChecks, FromRead, check_sender, trusted_of, user_of_read
from mailvia.outbox.tenancy import Tenancy
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
    exact = trusted_of(store.trusted_from("org_1", "Sales@ACME.test"), "org_1")
    assert exact is not None and exact.address == "sales@acme.test"
    assert exact.user.id == "usr_a"
    assert exact.user.organization_id == "org_1" and exact.user.role is Role.MEMBER
    domain = trusted_of(store.trusted_from("org_1", "anyone@acme.test"), "org_1")
    assert domain is not None and domain.user.email == "bea@acme.test"  # by email
    assert [store.senders_for("org_1", a)[0] for a in ("sales@acme.test", "x@acme.test")] == [
        exact.user,
        domain.user,
    ]
    assert store.trusted_from("org_1", "sales@acme.test").owner == "org_1"


def test_the_organization_and_its_channels_come_with_it(store: SqlStore) -> None:
    found = store.trusted_from("org_1", "sales@acme.test")
    assert found.organization == store.get_organization("org_1")
    assert found.organization.default_channel_id == "ch_b"
    assert found.organization.fallback is Fallback.NEXT
    assert list(found.channels) == store.list_channels("org_1")
    assert [c.name for c in found.channels] == ["backup", "relay"]
    assert found.channels[0].state is ChannelState.PAUSED
    bare = store.trusted_from("org_2", "olga@other.test")  # no channels
    assert bare.holder is not None and bare.holder.id == "usr_o" and bare.channels == ()
    mine = store.user_from("org_1", "usr_a", "x@acme.test")
    assert mine.organization == found.organization and mine.channels == found.channels


def test_nobody_for_another_organizations_domain_or_an_address_nobody_holds(
    store: SqlStore,
) -> None:
    # usr_o holds @acme.test, but acme.test is org_1's: org_2 may not send as it
    theirs = store.trusted_from("org_2", "sales@acme.test")
    assert theirs.owner == "org_1" and theirs.holder is not None and theirs.holder.id == "usr_o"
    assert trusted_of(theirs, "org_2") is None
    assert trusted_of(store.trusted_from("org_1", "olga@other.test"), "org_1") is None
    store.add_domain("org_1", "acme.example", T0)
    found = store.trusted_from("org_1", "someone@acme.example")
    assert trusted_of(found, "org_1") is None  # owned, not held
    assert found.owner == "org_1" and found.holder is None and found.organization.name == "acme"
    assert [c.id for c in found.channels] == ["ch_a", "ch_b"]


def test_an_unknown_organization_or_a_non_address_is_refused(store: SqlStore) -> None:
    for read in (store.trusted_from, lambda org, a: store.user_from(org, "usr_a", a)):
        with pytest.raises(NotFound):
            read("org_9", "sales@acme.test")
        with pytest.raises(InvalidAddress):
            read("org_1", "not-an-address")


@pytest.mark.parametrize("kind", ["trusted", "user"])
def test_it_is_one_statement_and_on_postgresql_in_autocommit(
    sql_store: SqlStore, kind: str
) -> None:
    store = sql_store
    sent: list[tuple[str, bool]] = []

    def look(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        dbapi = conn.connection.dbapi_connection
        postgresql = store._db.dialect == "postgresql"
        sent.append((statement, bool(dbapi.autocommit) if postgresql else False))

    event.listen(store._db.engine, "before_cursor_execute", look)
    try:
        if kind == "trusted":
            store.trusted_from("org_1", "sales@acme.test")
        else:
            store.user_from("org_1", "usr_a", "sales@acme.test")
    finally:
        event.remove(store._db.engine, "before_cursor_execute", look)
    if store._db.dialect == "postgresql":
        # psycopg's own BEGIN and COMMIT never reach the event: in autocommit it sends none
        assert len(sent) == 1 and sent[0][1]
    else:
        assert sent[0][0] == "BEGIN" and len(sent) == 2


def test_a_users_read_has_their_identities_and_the_domains_owner(store: SqlStore) -> None:
    found = store.user_from("org_1", "usr_a", "Sales@ACME.test")
    assert found.address == "sales@acme.test" and found.owner == "org_1"
    assert found.identities == ("sales@acme.test",) and found.holder is None
    store.grant_identity("usr_a", "@acme.test", T0 + 1)
    store.grant_identity("usr_a", "amy@acme.test", T0 + 2)
    again = store.user_from("org_1", "usr_a", "x@other.test")
    assert sorted(again.identities) == sorted(store.identities("usr_a"))
    assert again.owner == "org_2"
    assert store.user_from("org_1", "usr_nobody", "x@nowhere.test").identities == ()
    assert store.user_from("org_1", "usr_a", "x@nowhere.test").owner is None


# (user, From): each logged-in sender's right as the API judges it (check_sender, read by
# its own statements) and as the submission port's one read does: allowed ones and refused
# ones (domain not theirs; no identity covering it), with the same answer.
CASES = [
    ("usr_a", "sales@acme.test"),  # the address held
    ("usr_a", "SALES@acme.TEST"),  # any case
    ("usr_a", "other@acme.test"),  # refused: not one of amy's identities
    ("usr_a", "Other@ACME.test"),  # refused, quoted as sent
    ("usr_a", "Someone@Example.COM"),  # refused: nobody's domain, quoted as sent
    ("usr_b", "anyone@acme.test"),  # the @domain held
    ("usr_o", "anyone@acme.test"),  # refused: holds @acme.test, but the domain is org_1's
    ("usr_o", "olga@other.test"),
    ("usr_a", "x@nowhere.test"),  # refused: the domain is nobody's
    ("usr_b", "b@other.test"),  # refused: another organization's domain
]


@pytest.mark.parametrize(("user_id", "address"), CASES)
def test_a_users_read_allows_and_refuses_what_check_sender_does(
    store: SqlStore, user_id: str, address: str
) -> None:
    user = store.get_user(user_id)
    try:
        check_sender(user, address, store.domain_organization, store.identities)
        expected: Exception | None = None
    except Forbidden as refused:
        expected = refused
    try:
        found = user_of_read(user, store.user_from(user.organization_id, user.id, address), address)
    except Forbidden as refused:
        assert expected is not None and str(refused) == str(expected)
    else:
        assert expected is None and found.user == user and found.address == address.lower()
    assert (expected is None) == (address.lower() in ALLOWED.get(user_id, ()))


ALLOWED = {
    "usr_a": ("sales@acme.test",),
    "usr_b": ("anyone@acme.test",),
    "usr_o": ("olga@other.test",),
}


# (organization, From) of a trusted network: MAIL's check (`sender_for`, two short reads)
# and DATA's one statement (`trusted_from`) judged by the same rule give the same answer.
NETWORK_CASES = [
    ("org_1", "sales@acme.test", "usr_a"),
    ("org_1", "anyone@ACME.test", "usr_b"),
    ("org_2", "sales@acme.test", None),  # usr_o holds @acme.test: the domain is org_1's
    ("org_2", "olga@other.test", "usr_o"),
    ("org_1", "olga@other.test", None),  # another organization's domain
    ("org_1", "x@nowhere.test", None),  # nobody's domain
]


@pytest.mark.parametrize(("org_id", "address", "expected"), NETWORK_CASES)
def test_mail_and_data_judge_a_trusted_from_alike(
    store: SqlStore, org_id: str, address: str, expected: str | None
) -> None:
    tenancy = Tenancy(store, hash_password=str, tokens=None)  # type: ignore[arg-type]
    answers = []
    for read in (tenancy.sender_for, lambda o, a: tenancy.trusted_from(o, a).user):
        try:
            answers.append(read(org_id, address).id)
        except Forbidden as refused:
            answers.append(str(refused))
    assert answers[0] == answers[1]
    assert answers[0] == expected or (expected is None and "sender identity" in answers[0])


# One request's `FromChecks` (outbox/senders.py): a sequence of (user, address) checks, and
# how many `user_from` reads they take (one per user and domain).
CHECK_SEQUENCES = {
    "a read reused for another address of one domain": (
        [("usr_a", "sales@acme.test"), ("usr_a", "bob@acme.test"), ("usr_z", "zed@acme.test")],
        2,
    ),
    "a domain in another case": ([("usr_z", "zed@acme.test"), ("usr_z", "Ann@ACME.Test")], 1),
    "the refusal quotes the address as sent": (
        [("usr_a", "Bob@Acme.Test"), ("usr_z", "X@Other.TEST"), ("usr_z", "y@other.test")],
        2,
    ),
    "another user's read is never reused": (
        [("usr_z", "amy@acme.test"), ("usr_a", "amy@acme.test"), ("usr_o", "amy@acme.test")],
        3,
    ),
}


@pytest.mark.parametrize(("steps", "reads"), CHECK_SEQUENCES.values(), ids=list(CHECK_SEQUENCES))
def test_from_checks_answer_as_check_sender_with_one_read_per_user_and_domain(
    store: SqlStore, steps: list[tuple[str, str]], reads: int
) -> None:
    read = store.user_from
    count = [0]

    def counted(org_id: str, user_id: str, address: str) -> FromRead:
        count[0] += 1
        return read(org_id, user_id, address)

    checks = FromChecks(counted)
    for user_id, address in steps:
        user = store.get_user(user_id)
        try:
            check_sender(user, address, store.domain_organization, store.identities)
        except Forbidden as exc:
            with pytest.raises(Forbidden) as refused:
                checks.check(user, address)
            assert str(refused.value) == str(exc)  # the address as sent
            continue
        found = checks.checked(user, address)
        assert (found.address, found.user) == (address.lower(), user)
        assert found.organization == store.get_organization(user.organization_id)
        assert found.channels == tuple(store.list_channels(user.organization_id))
    assert count[0] == reads
