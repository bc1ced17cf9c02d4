"""Rows the store and submit tests share: a channel, a new message, an attempt's record and
its recipients' settlements, a submission (with the times and replies they use), a
store with jane's organization in it, and a claim of a channel's queued mail (`grab`)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import sqlalchemy as sa

from mailvia.domain.channel import Auth, Channel, Kind, Owner, Scope, Security
from mailvia.domain.delivery import RecipientSettlement
from mailvia.domain.message import Envelope, State
from mailvia.domain.replies import Outcome, Reply, Stage
from mailvia.domain.tenancy import Role, User
from mailvia.outbox.compose import inspect_raw
from mailvia.outbox.ports import AttemptRecord, Claim, NewMessage
from mailvia.outbox.records import Event
from mailvia.outbox.submit import Submission, request_hash
from mailvia.store import SqlStore, migrate, open_store

T0 = 1_700_000_000.0
DAY = 86400.0
OK = Reply(250, "2.0.0", "ok")
LATER = Reply(451, "4.3.0", "try later")
NO_SUCH = Reply(550, "5.1.1", "no such user")


def channel(channel_id: str, name: str, **changes: object) -> Channel:
    base = Channel(
        id=channel_id,
        organization_id="org_1",
        name=name,
        kind=Kind.SMTP,
        host="smtp.acme.test",
        port=587,
        security=Security.STARTTLS,
        auth=Auth.PLAIN,
        scope=Scope.DOMAIN,
        owner=Owner(team_id="team_1"),
        username="relay",
        has_password=True,
        domains=("acme.test",),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def new(msg_id: str, *rcpts: str, at: float = T0, ch: str = "ch_a", **kw: object) -> NewMessage:
    fields: dict[str, object] = {
        "id": msg_id,
        "organization_id": "org_1",
        "user_id": "usr_1",
        "channel_id": ch,
        "envelope": Envelope("jane@acme.test", rcpts or ("bob@example.test",)),
        "content": b"Subject: hi\r\n\r\nhello\r\n",
        "state": State.QUEUED,
        "created_at": at,
        "expires_at": at + 5 * DAY,
    }
    fields.update(kw)
    return NewMessage(**fields)  # type: ignore[arg-type]


def record(
    claim: Claim,
    *settled: tuple[str, Outcome, Reply, State] | tuple[str, Outcome, Reply, State, Stage],
    state: State,
    worker: str = "w1",
    at: float = T0 + 1,
    next_at: float | None = None,
    failures: int = 0,
    duplicate: bool = False,
    events: tuple[Event, ...] = (),
) -> AttemptRecord:
    return AttemptRecord(
        claim=claim,
        worker=worker,
        at=at,
        recipients=tuple(RecipientSettlement(*s) for s in settled),
        message_state=state,
        next_attempt_at=next_at,
        failures=failures,
        possible_duplicate=duplicate,
        events=events,
    )


def sent(address: str) -> tuple[str, Outcome, Reply, State]:
    return (address, Outcome.DELIVERED, OK, State.DELIVERED)


RAW = b"From: jane@acme.test\r\nTo: bob@example.test\r\nSubject: hi\r\n\r\nhello\r\n"


def submission(key: str | None = None) -> Submission:
    """A message From jane@acme.test to bob@example.test, with its idempotency key if any."""
    envelope = Envelope("jane@acme.test", ("bob@example.test",))
    composed = inspect_raw(RAW, envelope=envelope, max_size=1_000_000)
    digest = request_hash(b"message", key.encode()) if key else None
    return Submission(composed, idempotency_key=key, request_hash=digest)


def seeded(url: str, *channels: Channel) -> SqlStore:
    """A migrated store with acme (org_1, its team_1, the domain acme.test), jane (usr_1, an
    admin who may send as @acme.test), and these channels."""
    migrate(url)
    store = open_store(url)
    store.create_organization("org_1", "acme", T0)
    store.create_team("team_1", "org_1", "sales", T0)
    jane = User("usr_1", "org_1", "team_1", "jane@acme.test", Role.ADMIN)
    store.create_user(jane, password_hash="h", now=T0)
    store.add_domain("org_1", "acme.test", T0)
    store.grant_identity("usr_1", "@acme.test", T0)
    for each in channels:
        store.add_channel(each, None, T0)
    return store


def grab(
    s: SqlStore,
    now: float = T0,
    limit: int = 10,
    worker: str = "w1",
    ch: str = "ch_a",
    lease: float = 300.0,
) -> list[Claim]:
    return s.claim(channel_id=ch, now=now, limit=limit, lease_until=now + lease, worker=worker)


def rows_of(url: str, sql: str) -> list[Any]:
    """The rows of `sql`, read on a connection of its own (outside any store's pool)."""
    other = sa.create_engine(url)
    try:
        with other.connect() as conn:
            return list(conn.exec_driver_sql(sql).all())
    finally:
        other.dispose()
