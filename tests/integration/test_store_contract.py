"""The store contract, on the memory store, SQLite and PostgreSQL: the same tests, the same
answers (what only a database has, its migrations and connections, on the two databases)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from mailvia.domain.channel import (
    Auth,
    Budget,
    Channel,
    ChannelState,
    Owner,
    Scope,
    Security,
    Timeouts,
    Unit,
)
from mailvia.domain.errors import (
    Conflict,
    InvalidCursor,
    InvalidInput,
    NotFound,
    StoreUnavailable,
)
from mailvia.domain.message import State
from mailvia.domain.replies import Outcome, Reply, Stage
from mailvia.domain.retry import RetryPolicy
from mailvia.domain.tenancy import Fallback, Role, User
from mailvia.outbox.ports import Claim
from mailvia.outbox.records import Event, MessageFilter
from mailvia.store import KEEP, SqlStore, migrate, open_store
from mailvia.store import outbox as store_outbox
from mailvia.store.engine import Database
from mailvia.store.memory import MemoryStore
from mailvia.store.tables import metadata
from support.databases import migrated_sqlite_file
from support.ports import closed_port
from support.rows import DAY, LATER, NO_SUCH, OK, T0, channel, grab, new, record, sent


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """`memory`, or the URL of a database of each kind."""
    if request.param == "memory":
        return "memory"
    if request.param == "sqlite":
        return f"sqlite:///{migrated_sqlite_file(tmp_path / 'mailvia.db')}"
    return str(request.getfixturevalue("migrated_pg_url"))


@pytest.fixture
def store(backend: str) -> Iterator[SqlStore]:
    if backend == "memory":
        s: SqlStore = MemoryStore()  # type: ignore[assignment]
    else:
        migrate(backend)
        s = open_store(backend)
    s.create_organization("org_1", "acme", T0)
    s.create_team("team_1", "org_1", "sales", T0)
    s.create_user(
        User("usr_1", "org_1", "team_1", "Jane@Acme.test", Role.ADMIN), password_hash="h", now=T0
    )
    s.add_channel(channel("ch_a", "relay"), b"sealed-a", T0)
    s.add_channel(channel("ch_b", "backup"), None, T0)
    yield s
    s.close()


@pytest.fixture
def reopen(store: SqlStore, backend: str) -> Callable[[], SqlStore]:
    """Another handle on the same data: a new connection pool, or the memory store itself."""
    return (lambda: store) if backend == "memory" else (lambda: open_store(backend))


def later(address: str) -> tuple[str, Outcome, Reply, State]:
    return (address, Outcome.RETRY, LATER, State.DEFERRED)


def test_migrate_is_idempotent_and_the_tables_match_it(store_url: str) -> None:
    migrate(store_url)
    migrate(store_url)
    engine = sa.create_engine(store_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []
    engine.dispose()


def each_raises(error: type[Exception], *calls: Callable[[], object]) -> None:
    for call in calls:
        with pytest.raises(error):
            call()


def test_organizations_teams_and_users_round_trip(store: SqlStore) -> None:
    s = store
    assert s.get_organization("org_1").fallback is Fallback.HOLD
    assert s.find_organization("acme") == s.get_organization("org_1")
    assert s.find_organization("nope") is None
    org = s.update_organization("org_1", default_channel_id="ch_a", fallback=Fallback.NEXT)
    assert (org.default_channel_id, org.fallback) == ("ch_a", Fallback.NEXT)
    assert s.find_team("org_1", "sales") is not None and s.find_team("org_1", "x") is None
    user = s.find_user("JANE@acme.TEST")
    assert user is not None and user.email == "jane@acme.test" and user.is_admin
    ada = User(
        "usr_9", "org_1", "team_1", "ada@bücher.test", Role.MEMBER
    )  # as check_login holds it
    s.create_user(ada, password_hash=None, now=T0)
    assert s.find_user("Ada@XN--BCHER-KVA.test") == ada  # a domain's A-labels are its U-labels
    assert s.get_user("usr_1") == user and s.count_users() == 2
    assert s.password_hash("usr_1") == "h"
    s.set_password("usr_1", "h2", must_change_password=True)
    assert s.password_hash("usr_1") == "h2" and s.get_user("usr_1").must_change_password


def test_domains_identities_and_tokens_round_trip(store: SqlStore) -> None:
    s = store
    s.add_domain("org_1", "Acme.TEST", T0)
    s.add_domain("org_1", "acme.test", T0)  # again: a no-op
    assert s.domain_organization("ACME.test") == "org_1" and s.domain_organization("x.y") is None
    s.grant_identity("usr_1", "Jane@Acme.test", T0)
    s.grant_identity("usr_1", "@acme.test", T0 + 1)
    s.grant_identity("usr_1", "jane@acme.test", T0 + 2)
    assert s.identities("usr_1") == ["jane@acme.test", "@acme.test"]
    s.add_token("tok_1", "usr_1", "hash1", "cli", T0)
    assert s.user_for_token("hash1") == s.get_user("usr_1")
    s.revoke_token("tok_1", T0)
    assert s.user_for_token("hash1") is None


def test_tenancy_conflicts_and_missing_objects(store: SqlStore) -> None:
    s = store
    s.create_organization("org_2", "other", T0)
    s.add_domain("org_1", "acme.test", T0)
    s.add_token("tok_1", "usr_1", "hash1", "cli", T0)
    twin = User("usr_2", "org_1", "team_1", "JANE@acme.test", Role.MEMBER)
    each_raises(
        Conflict,
        lambda: s.create_organization("org_3", "acme", T0),
        lambda: s.create_team("team_2", "org_1", "sales", T0),
        lambda: s.create_user(twin, password_hash=None, now=T0),
        lambda: s.add_domain("org_2", "ACME.test", T0),
        lambda: s.add_token("tok_2", "usr_1", "hash1", "again", T0),
    )
    each_raises(
        NotFound,
        lambda: s.get_organization("org_9"),
        lambda: s.get_user("usr_9"),
        lambda: s.create_team("team_9", "org_9", "x", T0),
        lambda: s.grant_identity("usr_9", "a@b.c", T0),
        lambda: s.update_organization("org_9", default_channel_id=None, fallback=Fallback.HOLD),
    )


def full_channel() -> Channel:
    return channel(
        "ch_c",
        "o365",
        preset="microsoft365",
        scope=Scope.ADDRESS,
        address="jane@acme.test",
        owner=Owner(user_id="usr_1"),
        domains=("a.test", "b.test"),
        ca_pem="-----PEM-----",
        budgets=(Budget(30, 60), Budget(10000, DAY, Unit.RECIPIENTS)),
        max_recipients_per_message=500,
        max_connections=2,
        state=ChannelState.PAUSED,
        state_reason="by admin",
        state_changed_at=T0,
        throttled_until=T0 + 5,
        throttle_level=2,
        retry=RetryPolicy(60, 600, DAY, 0.1),
        timeouts=Timeouts(5, 6, 7, 8, 9, 10),
        security=Security.TLS,
        port=465,
        auth=Auth.XOAUTH2,
    )


def test_a_channel_keeps_every_field(store: SqlStore) -> None:
    s, full = store, full_channel()
    assert s.add_channel(full, b"\x00sealed\xff", T0) == full
    assert s.get_channel("ch_c") == full and s.find_channel("org_1", "o365") == full
    assert [c.name for c in s.list_channels("org_1")] == ["backup", "o365", "relay"]
    assert s.list_channels("org_x") == [] and len(s.list_channels()) == 3
    changed = s.set_channel_state("ch_c", ChannelState.DISCONNECTED, "535 5.7.139", T0 + 9)
    assert changed == replace(
        full,
        state=ChannelState.DISCONNECTED,
        state_reason="535 5.7.139",
        state_changed_at=T0 + 9,
        generation=full.generation + 1,
    )
    s.set_channel_throttle("ch_c", None, 0)
    assert s.get_channel("ch_c").throttled_until is None
    # An edit changes the settings, never the state the dispatcher recorded.
    before = s.get_channel("ch_c")
    edited = s.update_channel(replace(full, name="renamed"))
    assert edited == replace(before, name="renamed", generation=before.generation + 1)
    assert edited.state is ChannelState.DISCONNECTED
    each_raises(Conflict, lambda: s.add_channel(channel("ch_d", "relay"), None, T0))
    each_raises(Conflict, lambda: s.update_channel(replace(full, name="relay")))


def test_a_user_has_one_own_channel_per_address(store: SqlStore) -> None:
    """A second own channel for an address is Conflict (naming the first), on add and on an
    update that would make one; another owner's, or a team channel, is not."""
    s, box = store, full_channel()
    s.add_channel(box, None, T0)
    second = replace(box, id="ch_d", name="box 2", address="JANE@acme.test")
    with pytest.raises(Conflict, match=r"jane@acme\.test already has its own channel 'o365'"):
        s.add_channel(second, None, T0)
    other = replace(second, address="jane.doe@acme.test")
    s.add_channel(other, None, T0)
    with pytest.raises(Conflict, match="own channel 'o365'"):
        s.update_channel(replace(other, address="jane@acme.test"))
    assert s.update_channel(replace(box, name="o365 box")).name == "o365 box"  # itself: fine
    s.create_user(
        User("usr_2", "org_1", "team_1", "joe@acme.test", Role.MEMBER), password_hash="h", now=T0
    )
    s.add_channel(
        replace(second, id="ch_e", name="joe box", owner=Owner(user_id="usr_2")), None, T0
    )
    s.add_channel(channel("ch_f", "relay 2"), None, T0)  # domain scope: any number
    assert sorted(c.id for c in s.list_channels("org_1")) == [
        "ch_a", "ch_b", "ch_c", "ch_d", "ch_e", "ch_f",
    ]  # fmt: skip


def test_a_pair_made_before_the_rule_is_kept_and_each_still_edits(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database that holds two own channels for one address (made before the rule) keeps
    them: a rename, a new secret or new budgets of either is saved (the edit moves neither to
    another owner, scope or address); an edit that would make a third pair is still refused."""
    import mailvia.store.channels as store_channels
    import mailvia.store.memory.tenancy as memory_tenancy

    s, box = store, full_channel()
    s.add_channel(box, None, T0)
    with monkeypatch.context() as before_the_rule:
        for module in (store_channels, memory_tenancy):
            before_the_rule.setattr(module, "own_mailbox", lambda channel: None)
        s.add_channel(replace(box, id="ch_d", name="o365 old"), None, T0)
    assert s.update_channel(replace(box, name="o365 new")).name == "o365 new"
    old = s.get_channel("ch_d")
    s.update_channel(replace(old, budgets=()), b"sealed-new")
    assert s.get_channel("ch_d").budgets == () and s.channel_secret("ch_d") == b"sealed-new"
    other = s.add_channel(replace(box, id="ch_e", name="box 2", address="j2@acme.test"), None, T0)
    with pytest.raises(Conflict, match="own channel 'o365 new'"):
        s.update_channel(replace(other, address="jane@acme.test"))


def test_of_two_adding_the_same_own_channel_at_once_one_does(
    migrated_store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two adds of one address's own channel, each past its insert before either checks: one
    is refused (on PostgreSQL by the owner's row lock; SQLite's write lock lets only one
    insert at a time, so its barrier breaks and the second carries on after the first).
    The memory store's rule is test_a_user_has_one_own_channel_per_address's."""
    import mailvia.store.channels as store_channels

    both_inserted = threading.Barrier(2, timeout=2)
    real = store_channels.own_mailbox

    def after_both_inserts(c: Channel) -> tuple[str, str] | None:
        found = real(c)
        if found is not None:
            # SQLite: the other waits for this write lock, the barrier breaks; carry on
            with contextlib.suppress(threading.BrokenBarrierError):
                both_inserted.wait()
        return found

    monkeypatch.setattr(store_channels, "own_mailbox", after_both_inserts)
    backend = migrated_store_url
    stores = [open_store(backend) for _ in range(2)]
    try:
        first = stores[0]
        first.create_organization("org_1", "acme", T0)
        first.create_team("team_1", "org_1", "sales", T0)
        first.create_user(
            User("usr_1", "org_1", "team_1", "j@acme.test", Role.ADMIN), password_hash="h", now=T0
        )
        box = replace(full_channel(), address="j@acme.test")
        results: list[str] = []
        start = threading.Barrier(2)

        def add(i: int) -> None:
            start.wait()
            try:
                stores[i].add_channel(replace(box, id=f"ch_{i}", name=f"box {i}"), None, T0)
                results.append("added")
            except Conflict:
                results.append("refused")

        threads = [threading.Thread(target=add, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == ["added", "refused"]
        assert len(first.list_channels("org_1")) == 1
    finally:
        for s in stores:
            s.close()


def test_of_two_that_saw_a_channel_active_one_disconnects_it(
    store: SqlStore, reopen: Callable[[], SqlStore]
) -> None:
    """Two parties (a run, Test connection; here two connection pools) both read the channel
    active and both decide to disconnect it; then both apply: the first does, the second
    finds it changed and does nothing (its reason is not written over)."""
    first, second = store, reopen()
    seen_first, seen_second = first.get_channel("ch_a"), second.get_channel("ch_a")
    done = first.disconnect_channel(seen_first, "535 5.7.8 first", T0 + 1)
    assert done is not None and done.state is ChannelState.DISCONNECTED
    assert second.disconnect_channel(seen_second, "535 5.7.8 second", T0 + 2) is None
    now = store.get_channel("ch_a")
    assert (now.state, now.state_reason, now.state_changed_at) == (
        ChannelState.DISCONNECTED,
        "535 5.7.8 first",
        T0 + 1,
    )
    assert now == done


@pytest.mark.parametrize("change", ["reconnected", "new password", "paused and resumed"])
def test_a_disconnect_decided_before_a_change_does_not_apply_after_it(
    store: SqlStore, change: str
) -> None:
    """A refusal met with what the channel had before it was reconnected (or its password
    changed, or it was paused and resumed) never disconnects the channel as it is now."""
    s = store
    seen = s.get_channel("ch_a")  # the refusal is met with this channel's credentials
    if change == "reconnected":
        assert s.disconnect_channel(seen, "535 5.7.8 by another", T0 + 1) is not None
        s.set_channel_state("ch_a", ChannelState.ACTIVE, None, T0 + 2)
    elif change == "new password":
        s.update_channel(seen, b"sealed-new")
    else:
        s.set_channel_state("ch_a", ChannelState.PAUSED, "by admin", T0 + 1)
        s.set_channel_state("ch_a", ChannelState.ACTIVE, None, T0 + 2)
    before = s.get_channel("ch_a")
    assert before.state is ChannelState.ACTIVE and before.generation > seen.generation
    assert s.disconnect_channel(seen, "535 5.7.8 stale", T0 + 3) is None
    assert s.get_channel("ch_a") == before
    # Seen afresh, the refusal disconnects it; a throttle in between is no change.
    s.set_channel_throttle("ch_a", T0 + 60, 1)
    assert s.get_channel("ch_a").generation == before.generation
    assert s.disconnect_channel(before, "535 5.7.8 now", T0 + 4) is not None
    assert s.get_channel("ch_a").state_reason == "535 5.7.8 now"
    assert s.disconnect_channel(replace(seen, id="ch_gone"), "535", T0 + 5) is None


@pytest.mark.parametrize("state", [ChannelState.PAUSED, ChannelState.DISCONNECTED])
def test_only_an_active_channel_is_disconnected(store: SqlStore, state: ChannelState) -> None:
    """A channel paused (or disconnected already) as the refusal found it is not
    disconnected (again): its reason stays."""
    seen = store.set_channel_state("ch_a", state, "by admin", T0 + 1)
    assert store.disconnect_channel(seen, "535 5.7.8 late", T0 + 2) is None
    now = store.get_channel("ch_a")
    assert (now.state, now.state_reason, now.generation) == (state, "by admin", seen.generation)


def test_channel_secrets_are_kept_and_replaced(store: SqlStore) -> None:
    s, full = store, full_channel()
    s.add_channel(full, b"\x00sealed\xff", T0)
    assert s.channel_secret("ch_c") == b"\x00sealed\xff" and s.channel_secret("ch_b") is None
    s.update_channel(replace(full, name="renamed"), secret=KEEP)
    assert s.channel_secret("ch_c") == b"\x00sealed\xff"
    s.update_channel(full, secret=None)
    assert s.channel_secret("ch_c") is None
    assert s.channel_secrets() == [("ch_a", b"sealed-a")]


def test_a_channel_with_mail_to_send_is_not_removed(store: SqlStore) -> None:
    s = store
    s.update_organization("org_1", default_channel_id="ch_b", fallback=Fallback.HOLD)
    s.add_messages([new("msg_1", ch="ch_b")])
    each_raises(Conflict, lambda: s.remove_channel("ch_b"))
    s.cancel_message("msg_1", T0)
    s.remove_channel("ch_b")
    assert s.get_organization("org_1").default_channel_id is None
    each_raises(
        NotFound,
        lambda: s.get_channel("ch_b"),
        lambda: s.remove_channel("ch_b"),
        lambda: s.channel_secret("ch_b"),
    )


def test_added_messages_are_committed_and_idempotent(
    store: SqlStore, reopen: Callable[[], SqlStore]
) -> None:
    keyed = new("msg_1", "a@x.test", "b@x.test", idempotency_key="k1", request_hash="h1")
    assert store.add_messages([keyed, new("msg_2")]) == [("msg_1", True), ("msg_2", True)]
    other = reopen()
    view = other.get_message("msg_1")
    assert view.state is State.QUEUED and view.envelope.rcpt_to == ("a@x.test", "b@x.test")
    assert view.next_attempt_at == T0 and view.size == len(keyed.content)
    again = new("msg_3", idempotency_key="k1", request_hash="h1", at=T0 + 60)
    assert other.add_messages([again]) == [("msg_1", False)]
    with pytest.raises(Conflict):
        other.add_messages([new("msg_4", idempotency_key="k1", request_hash="h2", at=T0 + 60)])
    with pytest.raises(NotFound):
        other.get_message("msg_4")
    late = new("msg_5", idempotency_key="k1", request_hash="h2", at=T0 + DAY + 1)
    assert other.add_messages([late]) == [("msg_5", True)]  # the key was forgotten after 24 h
    twice = [
        new("msg_6", idempotency_key="k2", request_hash="h"),
        new("msg_7", idempotency_key="k2", request_hash="h"),
    ]
    assert other.add_messages(twice) == [("msg_6", True), ("msg_6", False)]
    with pytest.raises(Conflict):
        other.add_messages([new("msg_2")])
    other.close()


def test_idempotency_keys_are_kept_per_user(store: SqlStore) -> None:
    """One member's key neither blocks another's nor shows that it was used."""
    store.create_user(
        User("usr_2", "org_1", "team_1", "joe@acme.test", Role.MEMBER), password_hash="h", now=T0
    )
    jane = new("msg_j", idempotency_key="order-1", request_hash="jane's")
    joe = new("msg_o", user_id="usr_2", idempotency_key="order-1", request_hash="joe's")
    assert store.add_messages([jane]) == [("msg_j", True)]
    assert store.add_messages([joe]) == [("msg_o", True)]
    again = new("msg_o2", user_id="usr_2", idempotency_key="order-1", request_hash="joe's")
    assert store.add_messages([again]) == [("msg_o", False)]
    with pytest.raises(Conflict):
        store.add_messages([new("msg_j2", idempotency_key="order-1", request_hash="other")])
    both = [
        new("msg_j3", idempotency_key="order-2", request_hash="a"),
        new("msg_o3", user_id="usr_2", idempotency_key="order-2", request_hash="b"),
    ]
    assert store.add_messages(both) == [("msg_j3", True), ("msg_o3", True)]


def test_claims_go_by_due_time_then_submission_and_hold_a_lease(store: SqlStore) -> None:
    s = store
    s.add_messages([new("m1", at=T0 + 5), new("m2", at=T0), new("m3", at=T0), new("m4", at=T0 + 9)])
    assert s.channels_due(T0 - 1) == [] and s.next_due_at() == T0
    assert s.channels_due(T0 + 5) == ["ch_a"]
    first = grab(s, now=T0 + 5, limit=2)
    assert [c.message_id for c in first] == ["m2", "m3"]
    assert first[0].pending == ("bob@example.test",) and first[0].settled == ()
    assert first[0].content == b"Subject: hi\r\n\r\nhello\r\n" and first[0].worker == "w1"
    assert s.get_message("m2").state is State.SENDING
    assert [c.message_id for c in grab(s, now=T0 + 5, worker="w2")] == ["m1"]
    assert [c.message_id for c in grab(s, now=T0 + 100, worker="w2")] == ["m4"]
    assert s.next_due_at() == T0 + 305  # the first leases end then
    assert grab(s, now=T0 + 200, worker="w3") == []  # every lease still holds
    again = grab(s, now=T0 + 305, worker="w3")
    assert [c.message_id for c in again] == ["m2", "m3", "m1"]  # m4's lease holds until +400


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_claim_whose_read_fails_gives_its_messages_back(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lease commits, then the read of the claims fails (the database went away between
    the two): the worker never learns of them, so they go back to the queue at once, not at
    the lease's end, and unflagged (none had started). (On PostgreSQL the claim and its read
    are one statement: tests/integration/test_pg_claims.py.)"""
    store.add_messages([new("m1"), new("m2")])

    def gone(*_: object, **__: object) -> list[Claim]:
        raise StoreUnavailable("the database is unavailable: the test ended it")

    with monkeypatch.context() as patched:
        patched.setattr(store_outbox, "read_claims", gone)
        with pytest.raises(StoreUnavailable):
            grab(store)
    assert store.get_message("m1").state is State.QUEUED
    again = grab(store, worker="w2")
    assert [c.message_id for c in again] == ["m1", "m2"]
    assert not any(c.possible_duplicate for c in again)


def test_only_active_unthrottled_channels_are_due(store: SqlStore) -> None:
    s = store
    s.add_messages([new("m1"), new("m2", ch="ch_b", at=T0 + 3)])
    s.set_channel_throttle("ch_a", T0 + 50, 1)
    assert s.channels_due(T0 + 10) == ["ch_b"] and grab(s, now=T0 + 10) == []
    assert s.next_due_at() == T0 + 3
    s.set_channel_state("ch_b", ChannelState.PAUSED, None, T0)
    assert s.next_due_at() == T0 + 50 and s.channels_due(T0 + 10) == []
    assert s.channels_due(T0 + 50) == ["ch_a"]


def test_two_stores_never_claim_the_same_message(
    store: SqlStore, reopen: Callable[[], SqlStore]
) -> None:
    store.add_messages([new(f"m{i:03}") for i in range(300)])
    stores = [reopen() for _ in range(4)]
    taken: list[list[str]] = [[] for _ in stores]
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            while claims := grab(stores[index], limit=7, worker=f"w{index}"):
                taken[index].extend(c.message_id for c in claims)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    every = [m for ids in taken for m in ids]
    assert len(every) == 300 and len(set(every)) == 300
    for s in stores:
        s.close()


def test_recording_attempts_settles_each_recipient(store: SqlStore) -> None:
    s = store
    s.add_messages([new("m1", "ok@x.test", "bad@x.test", "slow@x.test"), new("m2")])
    c1, c2 = grab(s)
    done = Event("evt_1", "org_1", "message.deferred", T0 + 1, {"message_id": "m1"})
    s.record_attempts(
        [
            record(
                c1,
                sent("ok@x.test"),
                ("bad@x.test", Outcome.BOUNCE, NO_SUCH, State.BOUNCED, Stage.RCPT),
                later("slow@x.test"),
                state=State.DEFERRED,
                next_at=T0 + 300,
                failures=1,
                duplicate=True,
                events=(done,),
            ),
            record(c2, sent("bob@example.test"), state=State.DELIVERED),
        ]
    )
    view = s.get_message("m1")
    assert (view.state, view.next_attempt_at, view.possible_duplicate) == (
        State.DEFERRED,
        T0 + 300,
        True,
    )
    assert [(r.address, r.state, r.reply) for r in view.recipients] == [
        ("ok@x.test", State.DELIVERED, OK),
        ("bad@x.test", State.BOUNCED, NO_SUCH),
        ("slow@x.test", State.DEFERRED, LATER),
    ]
    assert [(a.recipient, a.outcome, a.reply, a.channel_id) for a in view.attempts] == [
        ("ok@x.test", "delivered", OK, "ch_a"),
        ("bad@x.test", "bounce", NO_SUCH, "ch_a"),
        ("slow@x.test", "retry", LATER, "ch_a"),
    ]
    # each at the stage its own reply came at (bad@ refused at RCPT, the others at the dot)
    assert [a.stage for a in view.attempts] == ["data-end", "rcpt", "data-end"]
    assert s.get_message("m2").state is State.DELIVERED
    assert s.list_events("org_1", cursor=None, limit=10)[0] == [done]


def test_a_time_given_as_an_int_among_floats_is_stored_not_refused(store: SqlStore) -> None:
    """A whole number of seconds is a time like any other: a group of records (the attempts'
    and recipients' times, the messages' next attempt, the events') or of events with one
    int among floats is stored (PostgreSQL's binary arrays refuse a list of mixed types:
    the records would have been an outage, retried for ever)."""
    s = store
    s.add_messages([new("m1", "a@x.test", "b@x.test"), new("m2", "a@x.test", "b@x.test")])
    c1, c2 = grab(s)
    whole = int(T0) + 2  # an int
    s.record_attempts(
        [
            record(
                claim,
                sent("a@x.test"),
                state=State.DEFERRED,
                at=at,
                next_at=at + 300,
                failures=1,
                events=(Event(f"evt_{i}", "org_1", "message.deferred", at, {}),),
            )
            for i, (claim, at) in enumerate([(c1, T0 + 1), (c2, whole)])
        ]
    )
    s.add_events(
        [
            Event("evt_a", "org_1", "message.held", T0 + 3, {}),
            Event("evt_b", "org_1", "x", whole, {}),
        ]
    )
    view = s.get_message("m2")
    assert (view.state, view.next_attempt_at) == (State.DEFERRED, whole + 300)
    assert [(r.address, r.state) for r in view.recipients] == [
        ("a@x.test", State.DELIVERED),
        ("b@x.test", State.DEFERRED),
    ]
    assert [a.at for a in view.attempts] == [whole]
    assert s.get_message("m1").next_attempt_at == T0 + 301
    stream = s.list_events("org_1", cursor=None, limit=10)[0]
    assert [(e.id, e.created_at) for e in stream] == [
        ("evt_0", T0 + 1),
        ("evt_1", whole),
        ("evt_a", T0 + 3),
        ("evt_b", whole),
    ]


def test_possible_duplicate_is_sticky_and_settled_recipients_stay_settled(store: SqlStore) -> None:
    s = store
    s.add_messages([new("m1", "ok@x.test", "slow@x.test")])
    (first,) = grab(s)
    s.record_attempts(
        [
            record(
                first,
                sent("ok@x.test"),
                later("slow@x.test"),
                state=State.DEFERRED,
                next_at=T0 + 300,
                failures=1,
                duplicate=True,
            )
        ]
    )
    assert grab(s, now=T0 + 299) == []
    (again,) = grab(s, now=T0 + 300)
    assert (again.pending, again.settled, again.failures, again.possible_duplicate) == (
        ("slow@x.test",),
        (State.DELIVERED,),
        1,
        True,
    )
    s.record_attempts([record(again, sent("slow@x.test"), state=State.DELIVERED, failures=1)])
    assert s.get_message("m1").possible_duplicate  # sticky
    assert s.get_message("m1").state is State.DELIVERED


def test_recipients_an_attempt_did_not_reach_follow_the_message(store: SqlStore) -> None:
    store.add_messages([new("m1", "a@x.test", "b@x.test")])
    (claim,) = grab(store)
    store.record_attempts([record(claim, sent("a@x.test"), state=State.HELD, next_at=T0 + 1)])
    view = store.get_message("m1")
    assert [r.state for r in view.recipients] == [State.DELIVERED, State.HELD]
    assert view.state is State.HELD and len(view.attempts) == 1


def test_a_record_from_a_lost_lease_is_ignored(store: SqlStore) -> None:
    s = store
    s.add_messages([new("m1")])
    (old,) = grab(s, worker="w1", lease=10)
    (new_claim,) = grab(s, now=T0 + 11, worker="w2")
    stale = Event("evt_s", "org_1", "message.delivered", T0, {})
    s.record_attempts(
        [record(old, sent("bob@example.test"), state=State.DELIVERED, events=(stale,))]
    )
    s.unclaim([old], state=State.QUEUED, now=T0 + 12)
    view = s.get_message("m1")
    assert view.state is State.SENDING and view.attempts == ()
    assert s.list_events("org_1", cursor=None, limit=5) == ([], None)
    s.unclaim([new_claim], state=State.HELD, now=T0 + 12)
    view = s.get_message("m1")
    assert view.state is State.HELD and view.recipients[0].state is State.HELD


def test_hold_and_release_keep_submission_order(store: SqlStore) -> None:
    s = store
    s.add_messages([new("m1", at=T0 + 3), new("m2", at=T0 + 1), new("m3", at=T0 + 2)])
    (sending,) = grab(s, now=T0 + 1, limit=1)
    assert s.hold_channel("ch_a", T0 + 5) == 2
    assert s.get_message("m3").recipients[0].state is State.HELD
    assert grab(s, now=T0 + 10) == [] and s.channels_due(T0 + 10) == []
    assert s.release_channel("ch_a", T0 + 20) == 2
    assert [c.message_id for c in grab(s, now=T0 + 20)] == ["m1", "m3"]
    assert sending.message_id == "m2"


def test_held_mail_is_released_only_while_the_channel_is_active_as_seen(
    store: SqlStore,
) -> None:
    """A run that lost the disconnect queues the mail it held again only while the channel
    is active and as it read it: disconnected (or paused) since, the mail stays held."""
    s = store
    s.add_messages([new("m1"), new("m2")])
    assert s.hold_channel("ch_a", T0 + 1) == 2
    seen = s.get_channel("ch_a")
    assert s.disconnect_channel(seen, "535 5.7.8 another party", T0 + 2) is not None
    assert s.release_if_active(seen, T0 + 3) is None
    paused = s.set_channel_state("ch_a", ChannelState.PAUSED, "by admin", T0 + 4)
    assert s.release_if_active(paused, T0 + 5) is None
    assert s.release_if_active(replace(seen, id="ch_gone"), T0 + 5) is None
    assert [s.get_message(i).state for i in ("m1", "m2")] == [State.HELD] * 2
    active = s.set_channel_state("ch_a", ChannelState.ACTIVE, None, T0 + 6)
    assert s.release_if_active(seen, T0 + 7) is None  # active again, but not as read
    assert s.release_if_active(active, T0 + 7) == 2
    assert [c.message_id for c in grab(s, now=T0 + 7)] == ["m1", "m2"]


def test_mail_given_back_keeps_its_place_in_the_queue(store: SqlStore) -> None:
    """A claim given back unsent (at shutdown, or when a run's budget is spent) is due when
    it was, not pushed behind mail submitted since."""
    s = store
    s.add_messages([new("m1", at=T0), new("m2", at=T0 + 1)])
    (first,) = grab(s, now=T0 + 5, limit=1)
    s.add_messages([new("m3", at=T0 + 10)])
    s.unclaim([first], state=State.QUEUED, now=T0 + 20)
    view = s.get_message("m1")
    assert (view.state, view.next_attempt_at) == (State.QUEUED, T0)
    assert view.recipients[0].state is State.QUEUED
    assert [c.message_id for c in grab(s, now=T0 + 20)] == ["m1", "m2", "m3"]


def test_expire_due_gives_up_on_waiting_and_held_mail(store: SqlStore) -> None:
    s = store
    s.add_messages([new("m1", at=T0), new("m2", at=T0, ch="ch_b"), new("m3", at=T0 + 9)])
    s.hold_channel("ch_b", T0)
    grab(s, now=T0 + 9, limit=1)  # m1 is being sent: not expired now
    expired = s.expire_due(T0 + 5 * DAY + 1, "w1")
    assert [e.data["message_id"] for e in expired] == ["m2"]
    assert expired[0].type == "message.expired" and expired[0].id.startswith("evt_")
    view = s.get_message("m2")
    assert view.state is State.EXPIRED and view.recipients[0].state is State.EXPIRED
    assert view.recipients[0].reply is not None
    assert view.recipients[0].reply.text == "mailvia: gave up after the retry period"
    assert s.list_events("org_1", cursor=None, limit=9)[0] == expired
    assert s.expire_due(T0 + 5 * DAY + 1, "w1") == []
    s.add_messages([new(f"x{i}", at=T0 + 10) for i in range(3)])
    batches = [s.expire_due(T0 + 6 * DAY, "w1", limit=2) for _ in range(3)]
    # soonest give-up time first, at most `limit` per state and call (m3 gives up first)
    assert [[e.data["message_id"] for e in b] for b in batches] == [["m3", "x0"], ["x1", "x2"], []]


def test_cancel_only_waiting_mail(store: SqlStore) -> None:
    s = store
    s.add_messages([new("m1", "a@x.test", "b@x.test"), new("m2"), new("m3")])
    (c1,) = grab(s, limit=1)
    s.record_attempts(
        [record(c1, sent("a@x.test"), later("b@x.test"), state=State.DEFERRED, next_at=T0 + 60)]
    )
    view = s.cancel_message("m1", T0 + 2)
    assert view.state is State.DELIVERED  # one recipient was delivered before
    assert [r.state for r in view.recipients] == [State.DELIVERED, State.CANCELLED]
    assert s.cancel_message("m3", T0 + 2).state is State.CANCELLED
    grab(s, limit=1)
    for busy in ("m1", "m2", "m3"):  # delivered, sending, cancelled
        with pytest.raises(Conflict):
            s.cancel_message(busy, T0 + 3)
    with pytest.raises(NotFound):
        s.cancel_message("m9", T0)


def test_a_channels_waiting_mail_is_cancelled_or_moved_and_its_deferred_mail_retried(
    store: SqlStore,
) -> None:
    s = store
    s.add_messages([new(f"m{i}", at=T0 + i) for i in range(5)])
    (c0,) = grab(s, limit=1)  # m0 deferred
    s.record_attempts(
        [record(c0, later("bob@example.test"), state=State.DEFERRED, next_at=T0 + 600)]
    )
    assert [c.message_id for c in grab(s, now=T0 + 1, limit=1)] == ["m1"]  # being sent
    waiting = s.waiting_mail("ch_a")
    assert [w.id for w in waiting] == ["m0", "m2", "m3", "m4"]  # submission order
    assert waiting[0].user_id == "usr_1" and waiting[0].head == b"Subject: hi"
    s.set_channel_throttle("ch_a", T0 + 60, 1)  # e.g. unreachable on a wrong port
    assert s.retry_channel_now("ch_a", T0 + 5) == 1
    assert s.get_message("m0").next_attempt_at == T0 + 5
    retried = s.get_channel("ch_a")  # its settings changed: the old pause is over too
    assert (retried.throttled_until, retried.throttle_level) == (None, 0)
    assert s.move_mail("ch_a", ["m0", "m1", "m2"], "ch_b", held=False, now=T0 + 6) == 2
    assert [s.get_message(m).channel_id for m in ("m0", "m1", "m2")] == ["ch_b", "ch_a", "ch_b"]
    assert s.get_message("m0").state is State.QUEUED
    assert s.move_mail("ch_a", ["m3"], "ch_b", held=True, now=T0 + 6) == 1
    m3 = s.get_message("m3")
    assert m3.state is State.HELD and m3.recipients[0].state is State.HELD
    assert s.cancel_channel_mail("ch_a", T0 + 7, "by jane: gone") == 1  # m4; m1 is sending
    m4 = s.get_message("m4")
    assert m4.state is State.CANCELLED and m4.recipients[0].reply is not None
    assert m4.recipients[0].reply.text == "mailvia: cancelled: by jane: gone"
    assert s.cancel_channel_mail("ch_b", T0 + 8, "by boss", ids=["m3"]) == 1
    assert s.get_message("m0").state is State.QUEUED
    events = s.list_events("org_1", cursor=None, limit=10)[0]
    assert [(e.type, e.data["message_id"], e.data["reason"]) for e in events] == [
        ("message.cancelled", "m4", "by jane: gone"),
        ("message.cancelled", "m3", "by boss"),
    ]


def test_listing_pages_newest_first_with_filters(store: SqlStore) -> None:
    s = store
    s.add_messages([new(f"m{i}", ch="ch_b" if i % 3 == 0 else "ch_a") for i in range(7)])
    seen, cursor = [], None
    while True:
        page, cursor = s.list_messages(MessageFilter("org_1", limit=3, cursor=cursor))
        seen += [v.id for v in page]
        if cursor is None:
            break
    assert seen == [f"m{i}" for i in reversed(range(7))]
    page, cursor = s.list_messages(MessageFilter("org_1", channel_id="ch_b"))
    assert [v.id for v in page] == ["m6", "m3", "m0"] and cursor is None
    assert page[0].recipients[0].address == "bob@example.test"
    assert s.list_messages(MessageFilter("org_1", state=State.HELD))[0] == []
    assert s.list_messages(MessageFilter("org_2"))[0] == []
    with pytest.raises(InvalidInput):
        s.list_messages(MessageFilter("org_1", cursor="bogus"))
    # A cursor is sealed for its organization and list: another's does not open.
    _, cursor = s.list_messages(MessageFilter("org_1", limit=1))
    assert cursor is not None
    with pytest.raises(InvalidCursor):
        s.list_messages(MessageFilter("org_2", limit=1, cursor=cursor))
    with pytest.raises(InvalidCursor):
        s.list_events("org_1", cursor=cursor, limit=1)


def test_queue_counts_per_channel_and_state(store: SqlStore) -> None:
    s = store
    s.add_messages([new("m1"), new("m2"), new("m3", ch="ch_b")])
    grab(s, limit=1)
    s.hold_channel("ch_b", T0)
    counts = s.queue_counts("org_1")
    assert counts["ch_a"][State.SENDING] == 1 and counts["ch_a"][State.QUEUED] == 1
    assert counts["ch_b"][State.HELD] == 1 and counts["ch_b"][State.DELIVERED] == 0
    assert s.queue_counts() == counts and s.queue_counts("org_x") == {}


def test_events_read_in_order_from_a_cursor(store: SqlStore) -> None:
    s = store
    events = [Event(f"evt_{i}", "org_1", "message.delivered", T0 + i, {"n": i}) for i in range(5)]
    s.add_events(events[:3])
    s.add_events([Event("evt_x", "org_2", "message.held", T0, {})])
    page, cursor = s.list_events("org_1", cursor=None, limit=2)
    assert page == events[:2]
    page, cursor = s.list_events("org_1", cursor=cursor, limit=2)
    assert page == events[2:3]
    assert s.list_events("org_1", cursor=cursor, limit=2) == ([], cursor)
    s.add_events(events[3:])
    assert s.list_events("org_1", cursor=cursor, limit=9)[0] == events[3:]
    with pytest.raises(Conflict):
        s.add_events(events[:1])


def test_a_batch_of_events_keeps_its_order(store: SqlStore) -> None:
    """One bulk insert (over arrays on PostgreSQL): the stream is in the batch's order, not
    the ids' nor the times'."""
    events = [
        Event(f"evt_{999 - i:03}", "org_1", "message.delivered", T0 + (i % 7), {"n": i})
        for i in range(300)
    ]
    store.add_events(events)
    assert store.list_events("org_1", cursor=None, limit=500)[0] == events


def test_recording_a_large_batch_is_quick(store: SqlStore) -> None:
    count = 2000
    store.add_messages([new(f"m{i:05}", "a@x.test", "b@x.test") for i in range(count)])
    claims = grab(store, limit=count)
    records = [record(c, sent("a@x.test"), sent("b@x.test"), state=State.DELIVERED) for c in claims]
    started = time.perf_counter()
    store.record_attempts(records)
    elapsed = time.perf_counter() - started
    assert store.queue_counts()["ch_a"][State.DELIVERED] == count
    assert elapsed < 10, f"{count} records took {elapsed:.1f} s"


def test_an_unreachable_database_is_store_unavailable(tmp_path: Path) -> None:
    down = "postgresql+psycopg://postgres@127.0.0.1:1/mailvia"
    each_raises(
        StoreUnavailable,
        lambda: open_store(down).get_organization("org_1"),
        lambda: migrate(down),
        lambda: open_store(f"sqlite:///{tmp_path}/no/such/dir/db.sqlite").count_users(),
        lambda: open_store("nonsense://"),
    )


def test_a_write_of_one_statement_maps_an_unreachable_database_to_store_unavailable() -> None:
    """`Database.write_one` (PostgreSQL's autocommit path, the started marks alone) maps a
    connection that cannot be made to StoreUnavailable, as `write()` does."""
    down = f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/mailvia"
    db = Database(down)

    def one_write() -> None:
        with db.write_one() as conn:
            conn.exec_driver_sql("SELECT 1")

    try:
        each_raises(
            StoreUnavailable, one_write, lambda: open_store(down).mark_started([1], "w1", T0)
        )
    finally:
        db.engine.dispose()


def test_sqlite_connections_are_durable_and_wait_for_the_lock(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'pragmas.db'}"
    migrate(url)
    engine = SqlStore(url)._db.engine
    with engine.connect() as conn:
        pragmas = [
            conn.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
        ]
    assert pragmas == ["wal", 2, 1, 5000]
    engine.dispose()


def test_an_unmigrated_database_is_store_unavailable(store_url: str) -> None:
    # mark_started alone: a statement the driver refuses in `write_one` (autocommit on
    # PostgreSQL) is mapped as any other.
    each_raises(
        StoreUnavailable,
        lambda: open_store(store_url).count_users(),
        lambda: open_store(store_url).mark_started([1], "w1", T0),
    )


def test_senders_for_an_address_holders_first_then_the_domain_within_one_organization(
    store: SqlStore,
) -> None:
    s = store
    s.add_domain("org_1", "acme.test", T0)
    s.create_user(
        User("usr_2", "org_1", "team_1", "amy@acme.test", Role.MEMBER), password_hash=None, now=T0
    )
    s.create_organization("org_2", "globex", T0)
    s.create_team("team_2", "org_2", "ops", T0)
    s.create_user(
        User("usr_3", "org_2", "team_2", "gus@globex.test", Role.MEMBER), password_hash=None, now=T0
    )
    s.grant_identity("usr_1", "@acme.test", T0)
    s.grant_identity("usr_2", "sales@acme.test", T0)
    s.grant_identity("usr_3", "sales@acme.test", T0)  # another organization's grant
    assert [u.id for u in s.senders_for("org_1", "Sales@ACME.test")] == ["usr_2", "usr_1"]
    assert [u.id for u in s.senders_for("org_1", "other@acme.test")] == ["usr_1"]
    assert s.senders_for("org_1", "sales@globex.test") == []
    assert [u.id for u in s.senders_for("org_2", "sales@acme.test")] == ["usr_3"]


def test_a_message_added_leased_is_the_testers_alone_until_its_lease_runs_out(
    store: SqlStore,
) -> None:
    claim = store.add_leased(new("m_test", test=True), worker="tester", lease_until=T0 + 60)
    assert (claim.message_id, claim.pending, claim.worker) == (
        "m_test",
        ("bob@example.test",),
        "tester",
    )
    assert store.get_message("m_test").state is State.SENDING and store.get_message("m_test").test
    assert grab(store, now=T0 + 30) == []  # no dispatcher takes it while the tester holds it
    store.record_attempts(
        [
            record(
                claim,
                ("bob@example.test", Outcome.DELIVERED, OK, State.DELIVERED),
                state=State.DELIVERED,
                worker="tester",
            )
        ]
    )
    done = store.get_message("m_test")
    assert done.state is State.DELIVERED and done.test and len(done.attempts) == 1
    [listed] = store.list_messages(MessageFilter("org_1"))[0]
    assert listed.test
    # A tester that died: after its lease a dispatcher sends it, flagged possible_duplicate.
    store.add_leased(new("m_lost", test=True), worker="tester", lease_until=T0 + 60)
    [taken] = grab(store, now=T0 + 61)
    assert taken.message_id == "m_lost" and taken.possible_duplicate


def test_a_beating_worker_keeps_its_claims_and_a_silent_one_loses_them(store: SqlStore) -> None:
    """Heartbeat expiry with a driven clock: beats extend the leases of the claims in hand;
    30 s after the last beat another worker takes them, flagging only the started one."""
    s = store
    s.add_messages([new("m1"), new("m2"), new("m3")])
    one, two, three = grab(s, worker="w1", lease=30)
    assert s.mark_started([one.seq, two.seq], "w1", T0 + 1) == [True, True]
    for beat in (T0 + 5, T0 + 10, T0 + 15, T0 + 20):
        assert s.beat("w1", beat, lease_until=beat + 30, seqs=[one.seq, two.seq], host="h", pid=1)
    # three was not in hand at the beats: its lease ran out at T0 + 30
    assert [c.message_id for c in grab(s, now=T0 + 30, worker="w2")] == ["m3"]
    assert grab(s, now=T0 + 49.9, worker="w2") == []  # the last beat holds until T0 + 50
    assert s.next_due_at() == T0 + 50
    taken = grab(s, now=T0 + 50, worker="w2")
    assert [(c.message_id, c.possible_duplicate) for c in taken] == [("m1", True), ("m2", True)]
    assert s.get_message("m3").possible_duplicate is False
    assert s.mark_started([one.seq], "w1", T0 + 51) == [False]  # w1 lost it: it must not send
    [worker] = s.list_workers()
    assert (worker.id, worker.beat_at, worker.host, worker.pid) == ("w1", T0 + 20, "h", 1)
    assert three.message_id == "m3"


def test_a_restarted_worker_takes_its_previous_claims_back_at_once(store: SqlStore) -> None:
    s = store
    s.add_messages([new("m1"), new("m2"), new("m3")])
    first, _ = grab(s, worker="w1", lease=30, limit=2)
    s.mark_started([first.seq], "w1", T0 + 1)
    assert s.start_worker("w1", T0 + 2, host="h", pid=2) == 2  # the same id, after a crash
    again = grab(s, now=T0 + 2, worker="w1")
    assert [(c.message_id, c.possible_duplicate) for c in again] == [
        ("m1", True),
        ("m2", False),
        ("m3", False),
    ]
    assert [(w.id, w.started_at, w.pid) for w in s.list_workers()] == [("w1", T0 + 2, 2)]
    s.record_attempts([record(again[0], sent("bob@example.test"), state=State.DELIVERED)])
    s.unclaim(again[1:], state=State.QUEUED, now=T0 + 3)
    assert s.start_worker("w1", T0 + 4, host="h", pid=3) == 0
    s.stop_worker("w1")
    assert s.list_workers() == []


def test_the_budget_ledgers_running_sums_decide_as_a_full_recount(store: SqlStore) -> None:
    """Each start adds up only what entered or left its windows since the last one; its
    decisions are exactly those of a recount of the whole window (domain/shaping.fits)."""
    import random

    from mailvia.domain.shaping import fits

    budgets = (Budget(5, 10, Unit.MESSAGES), Budget(12, 30, Unit.RECIPIENTS))
    ledger = store.budget_ledger("ch_a", budgets)
    rng = random.Random(7)
    now, open_ids, decided = T0, [], 0
    for _ in range(300):
        now += rng.choice([0.0, 0.3, 1.0, 2.5, 7.0])
        if open_ids and rng.random() < 0.6:
            ledger.finish([(open_ids.pop(rng.randrange(len(open_ids))), now)])
            continue
        if open_ids and rng.random() < 0.15:  # never reached the provider: given back
            ledger.give_back([open_ids.pop(rng.randrange(len(open_ids)))])
            continue
        recipients = rng.randint(1, 4)
        expected = fits(budgets, ledger.log(now), now, recipients)
        taken, wait = ledger.take(now, recipients)
        assert (taken is not None) == expected, (now - T0, recipients)
        decided += 1
        if taken is not None:
            open_ids.append(taken)
        else:
            assert wait is not None and wait > now
    assert decided > 100


def test_a_transaction_given_back_counts_against_no_window(store: SqlStore) -> None:
    """What never reached the provider (no credentials to sign in with) is given back: the
    budgets are as if it was never taken, in every window, whether its sums are stored."""
    budgets = (Budget(2, 60, Unit.MESSAGES), Budget(5, DAY, Unit.RECIPIENTS))
    ledger = store.budget_ledger("ch_a", budgets)
    first, _ = ledger.take(T0, 2)
    second, _ = ledger.take(T0 + 1, 3)
    assert first is not None and second is not None
    assert ledger.take(T0 + 2, 1)[0] is None  # both budgets full
    ledger.give_back([second])
    assert ledger.allowance(T0 + 2) == 1
    assert [(u.at, u.recipients) for u in ledger.log(T0 + 2).uses()] == [(T0 + 2, 2)]
    third, _ = ledger.take(T0 + 2, 3)  # the recipients it held are free again
    assert third is not None
    ledger.finish([(first, T0 + 3)])
    ledger.give_back([first, third, 12345])  # an ended one too; an unknown one is nothing
    assert ledger.allowance(T0 + 4) == 2 and len(ledger.log(T0 + 4)) == 0
    fresh = store.budget_ledger("ch_a", budgets)  # another worker's: the stored sums agree
    assert fresh.take(T0 + 5, 5)[0] is not None and fresh.take(T0 + 5, 1)[0] is None


def test_a_budgeted_start_marks_the_message_only_while_its_lease_is_held(store: SqlStore) -> None:
    store.add_messages([new("m1")])
    (claim,) = grab(store, worker="w1", lease=30)
    ledger = store.budget_ledger("ch_a", (Budget(5, 10, Unit.MESSAGES),))
    assert ledger.take(T0 + 1, 1, start=(claim.seq, "w2")) == (None, None)  # not w2's
    assert ledger.allowance(T0 + 1) == 5  # nothing was recorded
    taken, wait = ledger.take(T0 + 1, 1, start=(claim.seq, "w1"))
    assert taken is not None and wait is None and ledger.allowance(T0 + 1) == 4
    (again,) = grab(store, now=T0 + 31, worker="w2")  # w1 died after the mark
    assert again.possible_duplicate
