"""End to end: a member's own mailbox (an address-scoped channel) can never become the
organization's default channel, through the API, the team page (in Debian's headless
Chromium) or the CLI; and a default of that kind already stored never carries anyone else's
mail. A real `mailvia serve` subprocess on loopback."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest

from support.browser import chromium
from support.pages import Site, press, serving, sign_in

pytestmark = [pytest.mark.chromium, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with serving(tmp_path_factory.mktemp("default")) as running:
        yield running


@pytest.fixture(scope="module")
def jane_box(site: Site) -> dict[str, Any]:
    """Jane's own mailbox channel, added by jane through the API."""
    body = {
        "name": "jane-box",
        "host": "127.0.0.1",
        "port": 2525,
        "security": "none",
        "auth": "none",
        "address": site.jane.email,
    }
    with site.api(site.jane) as api:
        made = api.post("/v1/channels", json=body)
    assert made.status_code == 201, made.text
    assert made.json()["scope"] == "address"
    channel: dict[str, Any] = made.json()
    return channel


@pytest.fixture
def relay(site: Site) -> Iterator[dict[str, Any]]:
    """A team channel for acme.test, which may be the default (removed after the test)."""
    body = {
        "name": "relay",
        "host": "127.0.0.1",
        "port": 2525,
        "security": "none",
        "auth": "none",
        "scope": "domain",
        "domains": ["acme.test"],
        "owner": {"team": "default"},
    }
    with site.api(site.admin) as api:
        made = api.post("/v1/channels", json=body)
        assert made.status_code == 201, made.text
        channel: dict[str, Any] = made.json()
        yield channel
        assert api.delete(f"/v1/channels/{channel['id']}").status_code == 204


def test_the_api_refuses_a_members_mailbox_as_the_default(
    site: Site, jane_box: dict[str, Any], relay: dict[str, Any]
) -> None:
    with site.api(site.admin) as api:
        refused = api.patch("/v1/organization", json={"default_channel_id": jane_box["id"]})
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        detail = refused.json()["detail"]
        assert "jane-box" in detail and "address-scoped" in detail and "default" in detail
        assert api.get("/v1/organization").json()["default_channel_id"] is None
        by_name = api.patch("/v1/organization", json={"default_channel_id": "jane-box"})
        assert by_name.status_code == 422, by_name.text
        allowed = api.patch("/v1/organization", json={"default_channel_id": relay["id"]})
        assert allowed.status_code == 200 and allowed.json()["default_channel_id"] == relay["id"]
        cleared = api.patch("/v1/organization", json={"default_channel_id": None})
        assert cleared.status_code == 200, cleared.text


def test_the_team_page_neither_offers_nor_accepts_a_members_mailbox(
    site: Site, jane_box: dict[str, Any], relay: dict[str, Any]
) -> None:
    with chromium() as browser:
        context = browser.new_context()
        try:
            page = context.new_page()
            sign_in(page, site, site.admin)
            page.goto(site.url + "/team")
            select = page.get_by_label("Organization's default channel")
            offered = select.locator("option").evaluate_all("os => os.map(o => o.value)")
            assert relay["id"] in offered and jane_box["id"] not in offered
            # A forged form (the option added by hand) is refused with the reason.
            select.evaluate("(s, id) => s.add(new Option('jane-box', id))", jane_box["id"])
            select.select_option(jane_box["id"])
            press(page, "Save")
            main = page.inner_text("main")
            assert "jane-box" in main and "address-scoped" in main, main
            assert "Organization settings saved." not in main
        finally:
            context.close()
    with site.api(site.admin) as api:
        assert api.get("/v1/organization").json()["default_channel_id"] is None


def test_the_cli_refuses_a_members_mailbox_as_the_default(
    site: Site, jane_box: dict[str, Any]
) -> None:
    refused = site.cli.run("admin", "set-org", "default", "--default-channel", "jane-box")
    assert refused.code == 2, str(refused)
    [line] = refused.stderr.strip().splitlines()
    assert "jane-box" in line and "address-scoped" in line


def test_a_stored_mailbox_default_never_carries_another_users_mail(
    site: Site, jane_box: dict[str, Any]
) -> None:
    """Data from before the rule: the default names jane's mailbox. The admin, who may send
    as any acme.test address, is never routed through jane's credentials."""
    site.cli.ok("admin", "grant", site.admin.email, "@acme.test")
    database = site.cli.data_dir / "mailvia.db"
    with sqlite3.connect(database, timeout=10) as db:
        db.execute("UPDATE organizations SET default_channel_id = ?", (jane_box["id"],))
    try:
        with site.api(site.admin) as api:
            route = api.get("/v1/route", params={"from": site.jane.email}).json()
            assert route["channel"] is None or route["channel"]["id"] != jane_box["id"], route
            [step] = [s for s in route["steps"] if s["rule"] == "organization default"]
            assert step["verdict"] == "skipped", step
            body = {"from": site.jane.email, "to": ["bob@example.com"], "subject": "s", "text": "t"}
            sent = api.post("/v1/messages", json=body)
            assert sent.status_code != 202 or sent.json()["channel"]["id"] != jane_box["id"]
        with site.api(site.jane) as api:  # jane herself still uses her own mailbox
            route = api.get("/v1/route", params={"from": site.jane.email}).json()
            assert route["channel"]["id"] == jane_box["id"], route
    finally:
        with sqlite3.connect(database, timeout=10) as db:
            db.execute("UPDATE organizations SET default_channel_id = NULL")
