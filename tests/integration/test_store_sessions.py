"""The pages' sessions on SQLite and on PostgreSQL: the store's session methods (the same
answers on both), and the Sessions use case over them on a driven clock (ended at once,
idle and too old sessions run out, two stores on one database agree)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mailvia.domain.errors import NotFound
from mailvia.domain.tenancy import Role, User
from mailvia.outbox.accounts import SessionPolicy, Sessions
from mailvia.store import SqlStore, migrate, open_store

T0 = 1_700_000_000.0
JANE = User("usr_jane", "org_1", "team_1", "jane@acme.test", Role.MEMBER)
BOSS = User("usr_boss", "org_1", "team_1", "boss@acme.test", Role.ADMIN)


@pytest.fixture
def store(migrated_store_url: str) -> Iterator[SqlStore]:
    migrate(migrated_store_url)
    s = open_store(migrated_store_url)
    s.create_organization("org_1", "acme", T0)
    s.create_team("team_1", "org_1", "sales", T0)
    for user in (JANE, BOSS):
        s.create_user(user, password_hash="h", now=T0)
    yield s
    s.close()


def test_a_session_names_its_user_until_it_is_ended(store: SqlStore) -> None:
    store.add_session("k1", JANE.id, T0)
    found = store.find_session("k1")
    assert found is not None and found.user == JANE
    assert (found.started_at, found.seen_at) == (T0, T0)
    store.touch_session("k1", T0 + 30)
    assert store.find_session("k1").seen_at == T0 + 30  # type: ignore[union-attr]
    store.end_session("k1")
    assert store.find_session("k1") is None
    store.end_session("k1")  # ending it again is fine
    store.touch_session("k1", T0 + 60)  # so is touching one that is gone
    assert store.find_session("k1") is None


def test_a_session_needs_a_user(store: SqlStore) -> None:
    with pytest.raises(NotFound):
        store.add_session("k1", "usr_nobody", T0)


def test_ending_a_users_sessions_leaves_the_others(store: SqlStore) -> None:
    for key, user in (("a", JANE), ("b", JANE), ("c", BOSS)):
        store.add_session(key, user.id, T0)
    assert store.end_sessions(JANE.id) == 2
    assert store.find_session("a") is None and store.find_session("b") is None
    assert store.find_session("c") is not None
    assert store.end_sessions(JANE.id) == 0


def test_stale_sessions_are_deleted(store: SqlStore) -> None:
    store.add_session("idle", JANE.id, T0)
    store.add_session("old", JANE.id, T0 - 100)
    store.touch_session("old", T0 + 50)
    store.add_session("fresh", BOSS.id, T0 + 10)
    assert store.end_stale_sessions(seen_before=T0 + 5, started_before=T0 - 50) == 2
    assert [k for k in ("idle", "old", "fresh") if store.find_session(k)] == ["fresh"]


def test_the_use_case_ends_sessions_at_once_and_after_idle_or_max_age(store: SqlStore) -> None:
    sessions = Sessions(store, policy=SessionPolicy(idle=600, max_age=3600, touch_every=60))
    secret = sessions.start(JANE, T0)
    assert sessions.check(secret, T0 + 1) == JANE
    assert store.find_session(secret) is None  # only a digest of the secret is stored
    for at in range(60, 3000, 500):  # used every few minutes: never idle
        assert sessions.check(secret, T0 + at) == JANE
    assert sessions.check(secret, T0 + 3600) is None  # too old, however busy
    idle = sessions.start(JANE, T0)
    assert sessions.check(idle, T0 + 599) == JANE
    assert sessions.check(idle, T0 + 599 + 600) is None
    assert sessions.check(idle, T0 + 600) is None  # once ended, it stays ended
    assert sessions.check("never-issued", T0) is None


def test_a_request_touches_the_row_at_most_once_a_minute(store: SqlStore) -> None:
    sessions = Sessions(store, policy=SessionPolicy(idle=600, max_age=3600, touch_every=60))
    secret = sessions.start(JANE, T0)
    [key] = [k for k in _keys(store)]
    sessions.check(secret, T0 + 59)
    assert store.find_session(key).seen_at == T0  # type: ignore[union-attr]
    sessions.check(secret, T0 + 61)
    assert store.find_session(key).seen_at == T0 + 61  # type: ignore[union-attr]


def test_sign_out_and_password_change_end_sessions_for_every_process(
    migrated_store_url: str,
) -> None:
    migrate(migrated_store_url)
    one, two = open_store(migrated_store_url), open_store(migrated_store_url)
    try:
        one.create_organization("org_1", "acme", T0)
        one.create_team("team_1", "org_1", "sales", T0)
        one.create_user(JANE, password_hash="h", now=T0)
        here, there = Sessions(one), Sessions(two)
        first, second = here.start(JANE, T0), here.start(JANE, T0)
        assert there.check(first, T0 + 1) == JANE
        there.end(first)  # signed out in the other process
        assert here.check(first, T0 + 2) is None and here.check(second, T0 + 2) == JANE
        assert there.end_all_for_user(JANE.id) == 1  # the password changed over there
        assert here.check(second, T0 + 3) is None
    finally:
        one.close()
        two.close()


def test_starting_a_session_clears_the_stale_ones(store: SqlStore) -> None:
    sessions = Sessions(store, policy=SessionPolicy(idle=600, max_age=3600))
    sessions.start(JANE, T0)
    sessions.start(BOSS, T0 + 700)
    assert len(_keys(store)) == 1


def _keys(store: SqlStore) -> list[str]:
    import sqlalchemy as sa

    from mailvia.store.tables import web_sessions

    with store._db.read() as conn:
        return [row.key for row in conn.execute(sa.select(web_sessions.c.key))]
