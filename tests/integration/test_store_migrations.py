"""Migrations on a database that holds mail, on SQLite and PostgreSQL: 0007 keeps idempotency
keys per user (not per organization) and keeps every row, recipients included (on SQLite the
messages table is rebuilt under its recipients' foreign keys)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from mailvia.domain.errors import Conflict, StoreUnavailable
from mailvia.domain.message import Envelope, State
from mailvia.outbox.ports import NewMessage
from mailvia.store import migrate, open_store
from mailvia.store.engine import create_engine
from mailvia.store.migration import HEAD, current_revision

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


def test_0015_stores_a_domain_as_addresses_hold_it_once(store_url: str) -> None:
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
