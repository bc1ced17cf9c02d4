"""Migration 0016 on SQLite and PostgreSQL: every stored spelling of a domain becomes the form
the code holds it in (check_domain, check_identity), and a name stored for two organizations
is kept by one, with a warning naming both."""

from __future__ import annotations

import json
import logging

import pytest
import sqlalchemy as sa

from mailvia.store import migrate
from mailvia.store.engine import create_engine
from support.rows import rows_of

T0 = 1_700_000_000.0
NFD = "bu\u0308cher.test"  # bücher.test as typed with a combining diaeresis


def seed(url: str, domains: list[tuple[str, str, float]]) -> None:
    """Two organizations at 0014 (org_a acme, org_b globex), a user each, the domains given
    as (domain, organization, created_at)."""
    migrate(url, revision="0014")
    engine = create_engine(url)
    with engine.begin() as conn:
        for org, name in (("org_a", "acme"), ("org_b", "globex")):
            conn.exec_driver_sql(
                "INSERT INTO organizations (id, name, fallback, created_at) "
                f"VALUES ('{org}', '{name}', 'hold', {T0})"
            )
            conn.exec_driver_sql(
                "INSERT INTO teams (id, organization_id, name, created_at) "
                f"VALUES ('t_{org}', '{org}', 'sales', {T0})"
            )
            conn.exec_driver_sql(
                "INSERT INTO users (id, organization_id, team_id, email, role, "
                "must_change_password, created_at) "
                f"VALUES ('u_{org}', '{org}', 't_{org}', 'x@{name}.test', 'member', false, {T0})"
            )
        for domain, org, created in domains:
            conn.execute(
                sa.text("INSERT INTO domains VALUES (:d, :o, :t)"),
                {"d": domain, "o": org, "t": created},
            )
    engine.dispose()


def rows(url: str, query: str) -> list[tuple[object, ...]]:
    return sorted(tuple(row) for row in rows_of(url, query))


@pytest.mark.parametrize("first", ["org_a", "org_b"])
def test_the_organization_holding_the_normal_form_keeps_the_domain(
    store_url: str, first: str, caplog: pytest.LogCaptureFixture
) -> None:
    """org_a stored bücher.test as addresses hold it, org_b its A-labels: org_a's row is the
    one mail matched, whichever was created first; org_b's identity is read in normal form."""
    later = {"org_a": T0 + (first == "org_b"), "org_b": T0 + (first == "org_a")}
    seed(
        store_url,
        [("bücher.test", "org_a", later["org_a"]), ("xn--bcher-kva.test", "org_b", later["org_b"])],
    )
    engine = create_engine(store_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"INSERT INTO identities VALUES ('u_org_b', '@xn--bcher-kva.test', {T0})"
        )
    engine.dispose()
    with caplog.at_level(logging.WARNING, logger="mailvia.store.migrations"):
        migrate(store_url)
    assert rows(store_url, "SELECT domain, organization_id FROM domains") == [
        ("bücher.test", "org_a")
    ]
    assert rows(store_url, "SELECT user_id, identity FROM identities") == [
        ("u_org_b", "@bücher.test")
    ]
    warned = [r.getMessage() for r in caplog.records if r.name == "mailvia.store.migrations"]
    assert len(warned) == 1 and all(s in warned[0] for s in ("bücher.test", "org_a", "org_b"))


def test_another_spelling_of_the_name_is_a_claim_too(store_url: str) -> None:
    """org_a stored the name in NFD (as typed), before org_b stored its A-labels: neither is
    in normal form, the earlier keeps it, in normal form."""
    seed(store_url, [(NFD, "org_a", T0), ("xn--bcher-kva.test", "org_b", T0 + 1)])
    migrate(store_url)
    assert rows(store_url, "SELECT domain, organization_id FROM domains") == [
        ("bücher.test", "org_a")
    ]


def test_a_label_that_is_not_a_canonical_a_label_is_kept_as_written(store_url: str) -> None:
    """`xn--bcher-kva` is bücher; `xn--zz` decodes to nothing the rule accepts; `xn--acme-`
    would decode to plain `acme` but is not its encoding: kept, in channels.domains too."""
    seed(store_url, [("xn--zz.test", "org_a", T0)])
    engine = create_engine(store_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO channels (id, organization_id, name, kind, host, port, security, "
                "auth, scope, owner_team_id, has_password, domains, budgets, "
                "max_recipients_per_message, max_connections, state, throttle_level, retry, "
                "timeouts, created_at) VALUES ('ch_1', 'org_a', 'team', 'smtp', 'h.test', 25, "
                "'none', 'none', 'domain', 't_org_a', false, :d, '[]', 100, 1, 'active', 0, "
                "'{}', '{}', :t)"
            ),
            {"d": json.dumps(["xn--acme-.test", "xn--bcher-kva.test", NFD]), "t": T0},
        )
    engine.dispose()
    migrate(store_url)
    assert rows(store_url, "SELECT domain FROM domains") == [("xn--zz.test",)]
    (channel,) = rows(store_url, "SELECT domains FROM channels")
    assert json.loads(str(channel[0])) == ["bücher.test", "xn--acme-.test"]


def test_a_value_the_rule_refuses_for_any_reason_is_kept_and_the_upgrade_goes_on(
    store_url: str,
) -> None:
    """A team channel's domains were stored unchecked before 0016: a value `check_domain`
    refuses as a header value (longer than a line may be) rather than as an address is kept
    as written too, and the upgrade does not stop on it."""
    seed(store_url, [])
    long = "a" * 1000 + ".test"
    engine = create_engine(store_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO channels (id, organization_id, name, kind, host, port, security, "
                "auth, scope, owner_team_id, has_password, domains, budgets, "
                "max_recipients_per_message, max_connections, state, throttle_level, retry, "
                "timeouts, created_at) VALUES ('ch_1', 'org_a', 'team', 'smtp', 'h.test', 25, "
                "'none', 'none', 'domain', 't_org_a', false, :d, '[]', 100, 1, 'active', 0, "
                "'{}', '{}', :t)"
            ),
            {"d": json.dumps([long, "xn--bcher-kva.test"]), "t": T0},
        )
    engine.dispose()
    migrate(store_url)
    (channel,) = rows(store_url, "SELECT domains FROM channels")
    assert json.loads(str(channel[0])) == [long, "bücher.test"]
