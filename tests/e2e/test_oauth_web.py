"""End to end: connecting Gmail and Microsoft 365 mailboxes by OAuth in a real headless
Chromium, against a real `mailvia serve` and the fake providers (`mailvia testserver
--fake-providers`, a subprocess, knowing only the organization's own app). The admin enters
the app on the team page (Google) and by CLI (Microsoft); reps press "Connect ...", allow on
the fake's consent page and come back to an active mailbox with the provider's address, and
their mail leaves through the Gmail API, Microsoft Graph and SMTP XOAUTH2 (the fake's)."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest

from support.browser import check_page, chromium, desktop_page
from support.cli import poll
from support.fake_process import FakeProcess, fake_process
from support.pages import Account, Site, press, send, serving, sign_in
from support.world import Certs, make_certs

pytestmark = [pytest.mark.chromium, pytest.mark.timeout(300)]

GOOGLE_ID, GOOGLE_SECRET = "acme-web.apps.example", "g-secret-of-the-org-7Q"
MICROSOFT_ID, MICROSOFT_SECRET = "0b0e7b52-acme-entra-app", "m-secret-of-the-org-4Z"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[FakeProcess]:
    root = tmp_path_factory.mktemp("fake")
    clients = [
        f"google={GOOGLE_ID}:{GOOGLE_SECRET}",
        f"microsoft={MICROSOFT_ID}:{MICROSOFT_SECRET}",
    ]
    smtp = ["--listen", "127.0.0.1:0", "--tls-cert", str(certs.cert), "--tls-key", str(certs.key)]
    with fake_process(root, *(arg for c in clients for arg in ("--client", c)), *smtp) as running:
        yield running


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, fake: FakeProcess) -> Iterator[Site]:
    with serving(tmp_path_factory.mktemp("web"), **fake.settings) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    with desktop_page(browser) as tab:
        yield tab


def test_admin_enters_the_google_app_on_the_team_page(site: Site, page: Any) -> None:
    sign_in(page, site, site.admin)
    page.goto(site.url + "/team")
    panel = page.locator("#oauth-google")
    assert "Not set up" in panel.inner_text()
    assert f"{site.url}/oauth/google/callback" in panel.inner_text()
    panel.locator("summary").click()
    assert "Internal" in panel.inner_text() and "gmail.send" in panel.inner_text()
    check_page(page, "team-oauth")
    panel.get_by_label("Client ID").fill(GOOGLE_ID)
    panel.get_by_label("Client secret").fill(GOOGLE_SECRET)
    press(page, "Save the Google app")
    assert "OAuth app saved." in page.inner_text("main")
    panel = page.locator("#oauth-google")
    assert GOOGLE_ID in panel.inner_text() and "stored encrypted, never shown" in panel.inner_text()
    assert GOOGLE_SECRET not in page.content()
    assert panel.get_by_label("Client secret").input_value() == ""


def test_rep_connects_gmail_and_comes_back_to_an_active_mailbox(
    site: Site, page: Any, fake: FakeProcess
) -> None:
    with site.api(site.admin) as api:  # as the team page does (and stays so when it ran)
        body = {"client_id": GOOGLE_ID, "client_secret": GOOGLE_SECRET}
        assert api.put("/v1/organization/oauth/google", json=body).status_code == 200
    sign_in(page, site, site.jane)
    page.goto(site.url + "/channel")
    page.get_by_role("link", name="Connect Gmail", exact=True).click()
    page.wait_for_url(re.compile(re.escape(fake.origin) + r"/o/oauth2/v2/auth"))
    assert "gmail.send" in page.inner_text("body")
    page.get_by_label("Account").fill("jane@acme.test")
    with page.expect_navigation(url=re.compile(r"/channels/ch_")):
        page.get_by_role("button", name="Allow").click()
    main = page.inner_text("main")
    assert "Mailbox connected" in main and "active" in main
    assert "by OAuth with Google" in main and "the Gmail API" in main
    assert "jane@acme.test" in main and "Reconnect with Google" in main
    check_page(page, "channel-oauth")
    page.goto(site.url + "/channel")
    assert "Using your own channel Gmail jane@acme.test" in page.inner_text("main")
    with site.api(site.jane) as api:
        [mailbox] = [c for c in api.get("/v1/channels").json()["data"] if c["oauth"]]
    assert mailbox["oauth"]["address"] == "jane@acme.test" and mailbox["state"] == "active"
    assert mailbox["transport"] == "gmail_api"
    assert delivered(site, site.jane, fake, "through the Gmail API") == ("gmail_api", "jane")


def delivered(site: Site, account: Account, fake: FakeProcess, subject: str) -> tuple[str, str]:
    """Send as the rep and wait until it is delivered; how it reached the fake, and as whom."""
    message_id = send(site, account, subject)
    with site.api(account) as api:
        poll(lambda: api.get(f"/v1/messages/{message_id}").json()["state"] == "delivered")
    mine = [r for r in fake.control("GET", "received") if r["account"] == account.email]
    return mine[-1]["via"], account.email.split("@")[0]


def test_rep_connects_microsoft_365_with_the_app_set_by_cli(
    site: Site, page: Any, fake: FakeProcess
) -> None:
    made = site.cli.ok(
        "admin",
        "oauth-app",
        "default",
        "microsoft",
        "--client-id",
        MICROSOFT_ID,
        "--client-secret-stdin",
        input=MICROSOFT_SECRET + "\n",
    )
    # (from PUBLIC_URL or HTTP_LISTEN: this serve took a free port, which the CLI cannot know)
    assert re.search(r"redirect URI to register: http://\S+/oauth/microsoft/callback", made.stdout)
    assert MICROSOFT_SECRET not in made.stdout + made.stderr
    sign_in(page, site, site.joe)
    page.goto(site.url + "/channel")
    page.get_by_role("link", name="Connect Microsoft 365", exact=True).click()
    page.wait_for_url(re.compile(re.escape(fake.origin) + r"/organizations/oauth2/v2.0/"))
    page.get_by_label("Account").fill("joe@acme.test")
    with page.expect_navigation(url=re.compile(r"/channels/ch_")):
        page.get_by_role("button", name="Allow").click()
    main = page.inner_text("main")
    assert "Mailbox connected" in main and "by OAuth with Microsoft 365" in main
    assert "Microsoft Graph" in main and "joe@acme.test" in main and "active" in main
    assert delivered(site, site.joe, fake, "through Graph") == ("graph", "joe")


def test_rep_connects_microsoft_365_over_smtp_xoauth2(
    site: Site, page: Any, fake: FakeProcess, certs: Certs
) -> None:
    site.cli.ok(
        "admin", "oauth-app", "default", "microsoft", "--client-id", MICROSOFT_ID,
        "--client-secret-stdin", input=MICROSOFT_SECRET + "\n",
    )  # fmt: skip
    sign_in(page, site, site.kim)
    page.goto(site.url + "/channel")
    page.get_by_role("link", name=re.compile(r"connect Microsoft 365 by OAuth over SMTP")).click()
    page.wait_for_url(re.compile(re.escape(fake.origin) + r"/organizations/oauth2/v2.0/"))
    assert "SMTP.Send" in page.inner_text("body")
    page.get_by_label("Account").fill("kim@acme.test")
    with page.expect_navigation(url=re.compile(r"/channels/ch_")):
        page.get_by_role("button", name="Allow").click()
    main = page.inner_text("main")
    assert "Mailbox connected" in main and "by OAuth with Microsoft 365" in main
    assert "kim@acme.test" in main and "active" in main
    channel_id = page.url.rsplit("/", 1)[1].split("?")[0]
    with site.api(site.kim) as api:
        mailbox = api.get(f"/v1/channels/{channel_id}").json()
    assert mailbox["transport"] == "smtp" and mailbox["auth"] == "xoauth2"
    assert fake.smtp_port is not None
    point_at_fake_smtp(site, channel_id, fake.smtp_port, certs.ca_pem)
    assert delivered(site, site.kim, fake, "over SMTP XOAUTH2") == ("smtp", "kim")


def point_at_fake_smtp(site: Site, channel_id: str, port: int, ca_pem: str) -> None:
    """The fake's SMTP side stands in for smtp.office365.com (no command changes an OAuth
    mailbox's host)."""
    with sqlite3.connect(site.cli.data_dir / "mailvia.db", timeout=10) as db:
        db.execute(
            "UPDATE channels SET host = '127.0.0.1', port = ?, ca_pem = ? WHERE id = ?",
            (port, ca_pem, channel_id),
        )


def test_a_mailbox_that_is_not_the_reps_is_refused_in_the_browser(
    site: Site, page: Any, fake: FakeProcess
) -> None:
    sign_in(page, site, site.kim)
    page.goto(site.url + "/oauth/google/start")
    page.get_by_label("Account").fill("jane@acme.test")
    page.get_by_role("button", name="Allow").click()
    page.wait_for_url(re.compile(r"/oauth/google/callback"))
    main = page.inner_text("main")
    assert "nothing was connected" in main and "not one of your sender identities" in main
    with site.api(site.kim) as api:
        found = [c["oauth"] for c in api.get("/v1/channels").json()["data"] if c["oauth"]]
    assert not [o for o in found if o["provider"] == "google" or o["address"] != "kim@acme.test"]


def test_the_admin_sees_the_refused_app_and_saving_it_brings_the_mailbox_back(
    site: Site, page: Any, fake: FakeProcess
) -> None:
    """The provider refuses the organization's app: Jane's mailbox disconnects as it renews
    its token, her mail held; the admin's pages say so at once and lead to the app; saving
    its secret again (once mended at the provider) brings the mailbox back, and the held
    message leaves without Jane reconnecting."""
    with site.api(site.admin) as api:
        body = {"client_id": GOOGLE_ID, "client_secret": GOOGLE_SECRET}
        assert api.put("/v1/organization/oauth/google", json=body).status_code == 200
    if not gmail_of(site, site.jane):  # (made by the test connecting Gmail, when it ran)
        sign_in(page, site, site.jane)
        page.goto(site.url + "/oauth/google/start")
        page.get_by_label("Account").fill("jane@acme.test")
        with page.expect_navigation(url=re.compile(r"/channels/ch_")):
            page.get_by_role("button", name="Allow").click()
    [mailbox] = gmail_of(site, site.jane)
    fake.control("PUT", "faults", {"faults": ["refresh=401 invalid_client"]})
    fake.control("POST", "expire", {"account": "jane@acme.test"})
    message_id = send(site, site.jane, "held while the app is refused")
    with site.api(site.jane) as api:
        poll(lambda: api.get(f"/v1/messages/{message_id}").json()["state"] == "held")
        assert api.get(f"/v1/channels/{mailbox['id']}").json()["state"] == "disconnected"
    sign_in(page, site, site.admin)
    page.goto(site.url + "/channel")
    banner = page.locator("section.banner", has_text="refused the organization's OAuth app")
    assert "1 mailbox is disconnected" in banner.inner_text()
    check_page(page, "admin-app-refused")
    banner.get_by_role("link", name="Mend the Google app").click()
    page.wait_for_url(re.compile(r"/team#oauth-google$"))
    panel = page.locator("#oauth-google")
    assert "tries them again at once" in panel.inner_text()
    fake.control("PUT", "faults", {"faults": []})  # mended at the provider
    panel.get_by_label("Client secret").fill(GOOGLE_SECRET)
    press(page, "Save the Google app")
    assert "being tried again" in page.inner_text("main")
    assert "refused the organization's OAuth app" not in page.inner_text("main")
    with site.api(site.jane) as api:
        poll(lambda: api.get(f"/v1/messages/{message_id}").json()["state"] == "delivered")
        assert api.get(f"/v1/channels/{mailbox['id']}").json()["state"] == "active"


def gmail_of(site: Site, account: Account) -> list[dict[str, Any]]:
    with site.api(account) as api:
        found = api.get("/v1/channels").json()["data"]
    return [c for c in found if (c["oauth"] or {}).get("provider") == "google"]
