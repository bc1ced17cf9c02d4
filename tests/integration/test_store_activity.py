"""What the pages read for Activity and the first run, on SQLite and on PostgreSQL: a message's
subject (kept at intake, read from the bytes for messages stored before migration 0010),
searching by subject or recipient, a channel's last 24 hours hour by hour, and the tenancy
changes of the first run (domains, organization names, a new sign-in email)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from mailvia.domain.channel import Auth, Channel, Kind, Owner, Scope, Security
from mailvia.domain.delivery import RecipientSettlement
from mailvia.domain.errors import Conflict
from mailvia.domain.message import Envelope, State
from mailvia.domain.replies import Outcome, Reply
from mailvia.domain.tenancy import Role, User
from mailvia.outbox.ports import AttemptRecord, NewMessage
from mailvia.outbox.records import MessageFilter
from mailvia.store import SqlStore, migrate, open_store
from mailvia.store.tables import messages

T0 = 1_700_000_000.0 - 1_700_000_000.0 % 3600  # on the hour
HOUR = 3600.0
OK = Reply(250, "2.0.0", "ok")
LATER = Reply(451, "4.2.0", "try later")


@pytest.fixture
def store(migrated_store_url: str) -> Iterator[SqlStore]:
    migrate(migrated_store_url)
    s = open_store(migrated_store_url)
    s.create_organization("org_1", "acme", T0)
    s.create_team("team_1", "org_1", "sales", T0)
    jane = User("usr_1", "org_1", "team_1", "jane@acme.test", Role.ADMIN)
    s.create_user(jane, password_hash=None, now=T0)
    for channel_id in ("ch_a", "ch_b"):
        s.add_channel(
            Channel(
                id=channel_id,
                organization_id="org_1",
                name=channel_id,
                kind=Kind.SMTP,
                host="smtp.acme.test",
                port=587,
                security=Security.STARTTLS,
                auth=Auth.NONE,
                scope=Scope.DOMAIN,
                owner=Owner(team_id="team_1"),
                domains=("acme.test",),
            ),
            None,
            T0,
        )
    yield s
    s.close()


def new(msg_id: str, subject: bytes, *rcpts: str, at: float = T0, ch: str = "ch_a") -> NewMessage:
    return NewMessage(
        id=msg_id,
        organization_id="org_1",
        user_id="usr_1",
        channel_id=ch,
        envelope=Envelope("jane@acme.test", rcpts or ("bob@example.test",)),
        content=b"From: jane@acme.test\r\nSubject: " + subject + b"\r\n\r\nhello\r\n",
        state=State.QUEUED,
        created_at=at,
        expires_at=at + 5 * 86400,
    )


def ids(s: SqlStore, search: str) -> list[str]:
    return [v.id for v in s.list_messages(MessageFilter("org_1", search=search))[0]]


def test_subjects_are_kept_decoded_and_searched_with_recipients(store: SqlStore) -> None:
    s = store
    s.add_messages(
        [
            new("m1", b"Quarterly =?utf-8?q?r=C3=A9sum=C3=A9?=\r\n  for ACME", "ann@example.test"),
            new("m2", b"100% off_sale", "Bob.Smith@Example.test", "carl@example.test"),
            new("m3", b"lunch", "dora@example.test"),
        ]
    )
    view = s.get_message("m1")
    assert view.subject == "Quarterly résumé for ACME"  # decoded, folding collapsed
    assert ids(s, "RÉSUMÉ") in (["m1"], [])  # non-ASCII case folding is the database's
    assert ids(s, "résumé") == ["m1"]
    assert ids(s, "quarterly") == ["m1"]  # any case
    assert ids(s, "bob.smith") == ["m2"]  # a recipient, any case
    assert ids(s, "example.test") == ["m3", "m2", "m1"]
    assert ids(s, "100%") == ["m2"] and ids(s, "0%") == ["m2"]  # % and _ are themselves
    assert ids(s, "f_s") == ["m2"] and ids(s, "o%f") == []
    assert ids(s, "nothing like it") == []
    only_held = MessageFilter("org_1", search="lunch", state=State.HELD)
    assert s.list_messages(only_held)[0] == []


def test_a_message_stored_before_0010_shows_its_subject_from_its_bytes(
    store: SqlStore, migrated_store_url: str
) -> None:
    s = store
    s.add_messages([new("old", b"from before")])
    engine = sa.create_engine(migrated_store_url)
    with engine.begin() as conn:  # as a message stored before migration 0010 is
        conn.execute(messages.update().values(subject=None))
    engine.dispose()
    assert s.get_message("old").subject == "from before"
    [listed], _ = s.list_messages(MessageFilter("org_1"))
    assert listed.subject == "from before"
    assert ids(s, "before") == []  # not searched by subject: none is recorded


def attempt(s: SqlStore, ch: str, at: float, replies: dict[str, Reply]) -> None:
    """Claim the channel's due mail at `at` and settle each message with its reply."""
    claims = s.claim(channel_id=ch, now=at, limit=10, lease_until=at + 60, worker="w")
    assert sorted(c.message_id for c in claims) == sorted(replies)
    records = []
    for claim in claims:
        reply = replies[claim.message_id]
        delivered = reply.code == 250
        state = State.DELIVERED if delivered else State.DEFERRED
        outcome = Outcome.DELIVERED if delivered else Outcome.RETRY
        settled = tuple(RecipientSettlement(r, outcome, reply, state) for r in claim.pending)
        records.append(
            AttemptRecord(
                claim=claim,
                worker="w",
                at=at,
                recipients=settled,
                message_state=state,
                next_attempt_at=None if delivered else at,
                failures=0 if delivered else 1,
                possible_duplicate=False,
            )
        )
    s.record_attempts(records)


def test_a_channels_last_day_counts_messages_per_hour(store: SqlStore) -> None:
    s = store
    until = T0 + 24 * HOUR
    s.add_messages(
        [
            new("early", b"x", at=T0 - HOUR),  # before the 24 hours
            new("two", b"x", "a@example.test", "b@example.test", at=T0),
            new("retried", b"x", at=T0),
            new("other", b"x", at=T0, ch="ch_b"),
        ]
    )
    attempt(s, "ch_a", T0 - 10, {"early": OK})
    attempt(s, "ch_a", T0 + 5, {"two": OK, "retried": LATER})  # two recipients: one message
    attempt(s, "ch_a", T0 + 7, {"retried": LATER})  # tried twice in one hour: one message
    attempt(s, "ch_a", T0 + 5 * HOUR + 1, {"retried": OK})
    attempt(s, "ch_b", T0 + 9, {"other": OK})
    hours = s.hours_of_use("ch_a", until=until, hours=24)
    assert [h.start for h in hours] == [T0 + i * HOUR for i in range(24)]
    assert (hours[0].tried, hours[0].delivered) == (2, 1)
    assert (hours[5].tried, hours[5].delivered) == (1, 1)
    assert sum(h.tried for h in hours) == 3
    assert all(h.tried == 0 for i, h in enumerate(hours) if i not in (0, 5))
    assert sum(h.tried for h in s.hours_of_use("ch_b", until=until, hours=24)) == 1


def test_first_run_changes_domains_names_and_sign_in_email(store: SqlStore) -> None:
    s = store
    assert s.list_domains("org_1") == []
    s.add_domain("org_1", "Acme.test", T0)
    s.add_domain("org_1", "mail.acme.test", T0)
    assert s.list_domains("org_1") == ["acme.test", "mail.acme.test"]
    s.create_organization("org_2", "globex", T0)
    assert s.organization_names() == ["acme", "globex"]
    assert s.rename_organization("org_1", "Acme Inc").name == "Acme Inc"
    with pytest.raises(Conflict):
        s.rename_organization("org_1", "globex")
    joe = User("usr_2", "org_1", "team_1", "joe@acme.test", Role.MEMBER)
    s.create_user(joe, password_hash=None, now=T0)
    moved = s.change_email("usr_1", "Jane.Doe@Acme.test")
    assert moved.email == "jane.doe@acme.test" and moved.id == "usr_1"
    assert s.find_user("jane.doe@acme.test") == moved and s.find_user("jane@acme.test") is None
    with pytest.raises(Conflict):
        s.change_email("usr_1", "joe@acme.test")
