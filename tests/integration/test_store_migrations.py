"""Migrations on a database that holds mail, on SQLite and PostgreSQL: 0007 keeps idempotency
keys per user (not per organization) and keeps every row, recipients included (on SQLite the
messages table is rebuilt under its recipients' foreign keys); 0015 (a channel's generation)
goes down and up again keeping channels, their mail and OAuth tokens; 0016 stores a domain in
the one form addresses hold it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from mailvia.domain.channel import ChannelState, Provider
from mailvia.domain.errors import Conflict, StoreUnavailable
from mailvia.domain.message import Envelope, State
from mailvia.domain.tenancy import Role, User
from mailvia.outbox.oauth.ports import StoredTokens
from mailvia.outbox.ports import NewMessage
from mailvia.store import migrate, open_store
from mailvia.store.engine import create_engine
from mailvia.store.migration import HEAD, current_revision
from support import rows

T0 = 1_700_000_000.0


def seed_0003(url: str) -> None:
    """acme with two users; a keyed message of one of them, with its two recipients."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO organizations (id, name, fallback, created_at) "
            f"VALUES ('org_1', 'acme', 'hold', {T0})"
        )
        conn.exec_driver_sql(
            f"INSERT INTO teams (id, organization_id, name, created_at) "
            f"VALUES ('team_1', 'org_1', 'sales', {T0})"
        )
        for user in ("usr_1", "usr_2"):
            conn.exec_driver_sql(
                "INSERT INTO users (id, organization_id, team_id, email, role, "
                "must_change_password, created_at) "
                f"VALUES ('{user}', 'org_1', 'team_1', '{user}@acme.test', 'member', false, {T0})"
            )
        conn.exec_driver_sql(
            "INSERT INTO messages (id, organization_id, user_id, channel_id, mail_from, content, "
            "size, state, created_at, expires_at, failures, possible_duplicate, "
            "idempotency_key, request_hash) VALUES ('msg_1', 'org_1', 'usr_1', 'ch_a', "
            f"'usr_1@acme.test', 'hi', 2, 'queued', {T0}, {T0 + 86400}, 0, false, 'k', 'h1')"
        )
        seq = conn.exec_driver_sql("SELECT seq FROM messages").scalar_one()
        for position in (0, 1):
            conn.exec_driver_sql(
                "INSERT INTO recipients (message_seq, position, address, state, updated_at) "
                f"VALUES ({seq}, {position}, 'r{position}@example.test', 'queued', {T0})"
            )
    engine.dispose()


def keyed(msg_id: str, user: str, digest: str) -> NewMessage:
    return NewMessage(
        id=msg_id,
        organization_id="org_1",
        user_id=user,
        channel_id="ch_a",
        envelope=Envelope(f"{user}@acme.test", ("bob@example.test",)),
        content=b"Subject: hi\r\n\r\nhello\r\n",
        state=State.QUEUED,
        created_at=T0 + 60,
        expires_at=T0 + 86400,
        idempotency_key="k",
        request_hash=digest,
    )


def test_0007_keeps_the_mail_and_makes_keys_per_user(store_url: str) -> None:
    migrate(store_url, revision="0006")
    seed_0003(store_url)
    migrate(store_url)  # 0006 -> 0007 and on to the head
    store = open_store(store_url)
    try:
        view = store.get_message("msg_1")
        assert view.envelope.rcpt_to == ("r0@example.test", "r1@example.test")
        assert store.add_messages([keyed("msg_2", "usr_2", "h2")]) == [("msg_2", True)]
        assert store.add_messages([keyed("msg_3", "usr_1", "h1")]) == [("msg_1", False)]
        with pytest.raises(Conflict):
            store.add_messages([keyed("msg_4", "usr_1", "other")])
    finally:
        store.close()


def test_0007_goes_back_to_keys_per_organization(store_url: str) -> None:
    """Going back, keys two users of one organization share are forgotten (not refused)."""
    migrate(store_url, revision="0012")  # the seed's SQL has messages.content (until 0013)
    seed_0003(store_url)
    migrate(store_url)
    store = open_store(store_url)
    store.add_messages([keyed("msg_2", "usr_2", "h2")])
    store.close()
    migrate(store_url, revision="0006", downgrade=True)
    engine = sa.create_engine(store_url)
    with engine.connect() as conn:
        keys = conn.exec_driver_sql("SELECT id, idempotency_key FROM messages ORDER BY id").all()
        recipients = conn.exec_driver_sql("SELECT count(*) FROM recipients").scalar_one()
    engine.dispose()
    assert [tuple(row) for row in keys] == [("msg_1", None), ("msg_2", None)]
    assert recipients == 3


def test_a_start_on_a_current_schema_reads_no_table_whole(tmp_path: Path) -> None:
    """The foreign-key check reads every table (seconds with a million messages): it runs
    after a migration, not on every start."""
    url = f"sqlite:///{tmp_path / 'm.db'}"
    seen: list[str] = []

    def grab(_c: Any, _cur: Any, statement: str, *_rest: Any) -> None:
        seen.append(statement)

    event.listen(sa.engine.Engine, "before_cursor_execute", grab)
    try:
        migrate(url)
        assert any("foreign_key_check" in s for s in seen)
        seen.clear()
        migrate(url)
    finally:
        event.remove(sa.engine.Engine, "before_cursor_execute", grab)
    assert seen and not any("foreign_key_check" in s for s in seen)


def test_a_schema_newer_than_this_mailvia_is_refused_in_words(store_url: str) -> None:
    """A host not yet upgraded, started on a schema a newer mailvia made: a clear
    StoreUnavailable naming both revisions, not Alembic's traceback; nothing changed."""
    migrate(store_url)
    engine = create_engine(store_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    try:
        with pytest.raises(
            StoreUnavailable, match=rf"revision 9999, newer than this mailvia's \({HEAD}\)"
        ):
            migrate(store_url)
        assert current_revision(store_url) == "9999"
    finally:
        engine.dispose()


def test_the_version_read_is_current_only_for_one_row_equal_to_head(store_url: str) -> None:
    """`current_revision` answers a single row's revision; none before the schema exists, and
    none for a table of several rows (Alembic's to judge, not a start's shortcut)."""
    assert current_revision(store_url) is None
    migrate(store_url)
    assert current_revision(store_url) == HEAD
    engine = create_engine(store_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO alembic_version (version_num) VALUES ('0001')")
    try:
        assert current_revision(store_url) is None
    finally:
        engine.dispose()


def test_migrate_maps_an_unreachable_database_to_store_unavailable() -> None:
    with pytest.raises(StoreUnavailable):
        migrate("postgresql+psycopg://mailvia@127.0.0.1:9/none?connect_timeout=2")


def seed_0015(url: str) -> None:
    """acme's relay channel (paused and resumed: generation 2) with two messages of two
    recipients each, and a Gmail mailbox with its stored tokens."""
    s = open_store(url)
    try:
        s.create_organization("org_1", "acme", T0)
        s.create_team("team_1", "org_1", "sales", T0)
        s.create_user(
            User("usr_1", "org_1", "team_1", "jane@acme.test", Role.MEMBER),
            password_hash="h",
            now=T0,
        )
        s.add_channel(rows.channel("ch_a", "relay"), b"sealed", T0)
        s.set_channel_state("ch_a", ChannelState.PAUSED, "by admin", T0 + 1)
        s.set_channel_state("ch_a", ChannelState.ACTIVE, None, T0 + 2)
        assert s.get_channel("ch_a").generation == 2
        s.add_messages([rows.new(m, "a@example.test", "b@example.test") for m in ("m1", "m2")])
        gmail = rows.channel("ch_g", "gmail", oauth=Provider.GOOGLE, username="jane@acme.test")
        tokens = StoredTokens(
            "ch_g",
            Provider.GOOGLE,
            "client",
            "jane@acme.test",
            b"access",
            b"refresh",
            "mail",
            T0 + 3600,
            T0,
        )
        s.add_oauth_mailbox(gmail, tokens, T0)
    finally:
        s.close()


def counts(url: str) -> dict[str, int]:
    engine = create_engine(url)
    with engine.connect() as conn:
        found = {
            table: conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one()
            for table in ("channels", "messages", "recipients", "oauth_tokens")
        }
    engine.dispose()
    return found


def test_0015_goes_down_and_up_keeping_every_row(store_url: str) -> None:
    """Down to 0014 keeps every row (on SQLite the channels table is rebuilt under its
    messages' and tokens' foreign keys, the tokens' with ON DELETE CASCADE); up again, every
    channel stored before is in generation 0, and a disconnect seen there applies once."""
    migrate(store_url)
    seed_0015(store_url)
    before = counts(store_url)
    assert before == {"channels": 2, "messages": 2, "recipients": 4, "oauth_tokens": 1}
    migrate(store_url, revision="0014", downgrade=True)
    assert current_revision(store_url) == "0014"
    assert counts(store_url) == before
    migrate(store_url)
    assert counts(store_url) == before
    s = open_store(store_url)
    try:
        seen = s.get_channel("ch_a")
        assert (seen.state, seen.generation) == (ChannelState.ACTIVE, 0)
        assert s.get_channel("ch_g").generation == 0
        assert s.disconnect_channel(seen, "535 5.7.8", T0 + 3) is not None
        assert s.disconnect_channel(seen, "535 5.7.8", T0 + 4) is None
        assert s.oauth_tokens("ch_g") is not None
    finally:
        s.close()


def test_0016_stores_a_domain_as_addresses_hold_it_once(store_url: str) -> None:
    """A-label rows (as add-domain, grant and team channels kept what was typed) become their
    U-labels; where both spellings were stored, one row is left."""
    migrate(store_url, revision="0014")
    engine = create_engine(store_url)
    with engine.begin() as conn:
        for statement in (
            f"INSERT INTO organizations (id, name, fallback, created_at) "
            f"VALUES ('org_1', 'acme', 'hold', {T0})",
            f"INSERT INTO teams (id, organization_id, name, created_at) "
            f"VALUES ('team_1', 'org_1', 'sales', {T0})",
            "INSERT INTO users (id, organization_id, team_id, email, role, "
            "must_change_password, created_at) "
            f"VALUES ('usr_1', 'org_1', 'team_1', 'jane@acme.test', 'member', false, {T0})",
        ):
            conn.exec_driver_sql(statement)
        for domain in ("xn--bcher-kva.test", "xn--strae-oqa.test", "straße.test", "xn--zz.test"):
            conn.execute(
                sa.text("INSERT INTO domains VALUES (:d, 'org_1', :t)"), {"d": domain, "t": T0}
            )
        for identity in ("@xn--bcher-kva.test", "jane@xn--strae-oqa.test", "jane@straße.test"):
            conn.execute(
                sa.text("INSERT INTO identities VALUES ('usr_1', :i, :t)"), {"i": identity, "t": T0}
            )
        conn.execute(
            sa.text(
                "INSERT INTO channels (id, organization_id, name, kind, host, port, security, "
                "auth, scope, owner_team_id, has_password, domains, budgets, "
                "max_recipients_per_message, max_connections, state, throttle_level, retry, "
                "timeouts, created_at) VALUES ('ch_1', 'org_1', 'team', 'smtp', 'h.test', 25, "
                "'none', 'none', 'domain', 'team_1', false, :d, '[]', 100, 1, 'active', 0, "
                "'{}', '{}', :t)"
            ),
            {"d": '["xn--bcher-kva.test", "b\\u00fccher.test"]', "t": T0},
        )
    engine.dispose()
    migrate(store_url)
    engine = create_engine(store_url)
    with engine.connect() as conn:
        domains = conn.exec_driver_sql("SELECT domain FROM domains ORDER BY domain").scalars()
        identities = conn.exec_driver_sql("SELECT identity FROM identities ORDER BY 1").scalars()
        channel = conn.exec_driver_sql("SELECT domains FROM channels").scalar_one()
        assert sorted(domains) == ["bücher.test", "straße.test", "xn--zz.test"]
        assert sorted(identities) == ["@bücher.test", "jane@straße.test"]
        assert json.loads(channel) == ["bücher.test"]
    engine.dispose()
