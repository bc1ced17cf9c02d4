"""End to end: the setup pages of a real `mailvia serve` subprocess in Debian's headless
Chromium, against the project's test SMTP server (STARTTLS with a certificate from a test CA
that each channel trusts through its CA field). One server and one browser for the module;
each test signs in with a fresh browser context.

Users (organization `default`, domain acme.test): the bootstrap admin, and reps jane (who
connects a channel through the pages), joe (who uses the team channel) and kim (whose
channel breaks and is reconnected).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailvia.testserver import ThreadedTestServer
from support.browser import (
    PHONE,
    WIDE,
    assert_reading_order,
    check_page,
    chromium,
    desktop_page,
    tab_stops,
)
from support.cli import poll
from support.pages import (
    JANE_PASSWORD,
    Account,
    Site,
    activity_shows,
    fill_smtp,
    mailbox_server,
    press,
    reloaded,
    report,
    send,
    serving,
    sign_in,
)

pytestmark = [pytest.mark.chromium, pytest.mark.timeout(300)]

FAULT_535 = "auth=535 5.7.8 Authentication credentials invalid"
RIGHT = JANE_PASSWORD


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with serving(tmp_path_factory.mktemp("web")) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    with desktop_page(browser) as tab:
        yield tab


@pytest.fixture
def smtp(site: Site, tmp_path: Path) -> Iterator[ThreadedTestServer]:
    with mailbox_server(site, tmp_path) as server:
        yield server


def test_rep_connects_a_channel_tests_it_and_sees_delivery(
    site: Site, page: Any, smtp: ThreadedTestServer
) -> None:
    page.goto(site.url + "/")
    assert "/signin" in page.url
    sign_in(page, site, site.jane)  # the first sign-in insists on a password change
    assert "jane@acme.test" in page.inner_text("main")
    connect_jane(page, site, smtp)

    page.goto(site.url + "/channel")
    assert "Using your own channel jane-box for jane@acme.test" in page.inner_text("main")

    message_id = send(site, site.jane, "web delivery")
    poll(lambda: activity_shows(page, site, message_id, "delivered"), timeout=30)
    assert "Accepted by the receiving server." in page.inner_text("main")  # plain words,
    assert "250" in str(page.locator("details.code").first.text_content())  # the reply beside
    page.goto(site.url + "/activity?state=delivered")
    main = page.inner_text("main")
    assert "bob@example.com" in main
    assert "1 of 30 this minute" in main and "1 of 10,000 recipients in 24 h" in main
    assert smtp.wait_for(1, timeout=30)[0]["rcpt_to"] == ["bob@example.com"]


def connect_jane(page: Any, site: Site, smtp: ThreadedTestServer) -> None:
    """A wrong password fails at AUTH with the 535 hint; the right one passes; Save keeps it."""
    page.get_by_role("link", name="Connect a custom SMTP server").click()
    page.get_by_label("Channel name").fill("jane-box")
    fill_smtp(page, site, smtp, "wrong")
    page.get_by_label("Limits").fill("30/60:messages, 10000/86400:recipients")
    press(page, "Test connection")
    text = report(page)
    assert "Test connection: failed" in text
    for step in ("Finding", "Reaching", "Securing", "Greeting", "Signing in"):
        assert step in text  # plain words; the steps' codes in their details
    auth = page.locator("li.step-fail")
    assert "Signing in" in auth.inner_text() and "Wrong user name or password" in auth.inner_text()
    assert "AUTH" in str(auth.text_content()) and "535" in str(auth.text_content())

    page.get_by_label("Password", exact=True).fill(RIGHT)
    press(page, "Test connection")
    assert "Test connection: passed" in report(page)
    assert RIGHT not in page.content()  # the tested password rides sealed, never in clear
    press(page, "Save channel")  # the kept password is used
    page.wait_for_url(re.compile(r"/channels/ch_"))
    assert "Channel saved." in page.inner_text("main")
    assert "stored encrypted, never shown" in page.inner_text("main")

    press(page, "Test connection")
    assert "Test connection: passed" in report(page)  # the stored password works


def test_admin_shares_a_domain_channel_but_never_a_mailbox(
    site: Site, page: Any, smtp: ThreadedTestServer
) -> None:
    sign_in(page, site, site.admin)
    page.goto(site.url + "/team")
    page.get_by_role("link", name="SparkPost", exact=True).click()
    assert page.get_by_label("Share with team").is_checked()
    page.get_by_label("Channel name").fill("SparkPost")
    fill_smtp(page, site, smtp, RIGHT)
    page.get_by_label("Sending domains (when shared)").fill("acme.test")
    press(page, "Test connection")
    assert "Test connection: passed" in report(page)
    assert "is not one of SparkPost's hosts" in page.inner_text("main")
    press(page, "Save channel")
    page.wait_for_url(re.compile(r"/channels/ch_"))
    assert "Shared with the team" in page.inner_text("main")

    page.goto(site.url + "/channels/new?preset=microsoft365")
    assert page.locator("input[name=share]").count() == 0
    explain = page.locator(".explain").inner_text()
    assert "Microsoft 365 credentials sign in to one mailbox" in explain
    assert "never shared with the team" in explain
    assert "30 messages a minute and 10,000 recipients a day" in page.inner_text("main")
    assert_mailbox_share_refused(page, site)

    joe = page.context.browser.new_page()
    try:
        sign_in(joe, site, site.joe)
        assert "Using team channel SparkPost for acme.test" in joe.inner_text("main")
    finally:
        joe.context.close()


def assert_mailbox_share_refused(page: Any, site: Site) -> None:
    """A forged form that shares Microsoft 365 anyway is refused by the use case, and so is the
    same through the API."""
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    forged = page.request.post(
        site.url + "/channels/new",
        form={
            "csrf": csrf,
            "preset": "microsoft365",
            "name": "m365 for all",
            "username": "admin@acme.test",
            "password": "x",
            "share": "on",
            "team": "default",
            "domains": "acme.test",
            "action": "save",
        },
    )
    assert forged.status == 403
    assert "cannot be a team channel" in forged.text()
    with site.api(site.admin) as api:
        refused = api.post(
            "/v1/channels",
            json={
                "name": "m365 for all",
                "preset": "microsoft365",
                "username": "admin@acme.test",
                "password": "x",
                "owner": {"team": "default"},
                "domains": ["acme.test"],
            },
        )
    assert refused.status_code == 403, refused.text


def test_a_broken_channel_shows_a_banner_until_reconnected(
    site: Site, page: Any, smtp: ThreadedTestServer
) -> None:
    ca = Path(smtp.maildir).parent / "ca.pem"
    ca.write_text(site.certs.ca_pem)
    site.cli.ok(
        *("channel", "add", "kim-box", "--host", "127.0.0.1", "--port", str(smtp.port)),
        *("--security", "starttls", "--auth", "plain", "--username", "jane"),
        *("--password-stdin", "--ca-file", str(ca), "--address", "kim@acme.test"),
        *("--user", "kim@acme.test", "--org", "default"),
        input=RIGHT + "\n",
    )
    smtp.set_faults([FAULT_535])  # as if the mailbox's password had changed
    message_id = send(site, site.kim, "held while broken")

    sign_in(page, site, site.kim)
    banner = page.locator("section.banner")
    poll(lambda: reloaded(page) and banner.count() == 1, timeout=30)
    text = banner.inner_text()
    assert "kim-box is disconnected" in text and "Wrong user name or password" in text
    assert "535" in str(banner.text_content())  # the server's reply, in a detail
    assert "1 message is held" in text
    page.goto(site.url + "/activity")
    assert "kim-box is disconnected" in page.locator("section.banner").inner_text()  # every page
    assert "Held and waiting to try again" in page.inner_text("main")
    check_page(page, "activity-with-banner")

    page.get_by_role("link", name="Reconnect kim-box").click()
    assert page.url.endswith("#reconnect")
    page.get_by_label("New password").fill("still-wrong")
    press(page, "Test and reconnect")
    assert "nothing was changed" in page.inner_text("main")
    assert page.locator("section.banner").count() == 1

    smtp.set_faults([])  # the new password is right
    page.get_by_label("New password").fill(RIGHT)
    press(page, "Test and reconnect")
    released = page.inner_text("main")
    assert "1 held message was released." in released and "their original order" not in released
    assert page.locator("section.banner").count() == 0
    poll(lambda: activity_shows(page, site, message_id, "delivered"), timeout=30)


def test_a_form_without_the_csrf_token_is_refused(site: Site, page: Any) -> None:
    sign_in(page, site, site.admin)
    page.goto(site.url + "/tokens")
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    with httpx.Client(base_url=site.url, cookies=cookies) as client:
        refused = client.post("/tokens", data={"name": "forged"})
        assert refused.status_code == 403
        assert "security token" in refused.text
        wrong = client.post("/tokens", data={"name": "forged", "csrf": "not-the-token"})
        assert wrong.status_code == 403
        assert client.post("/signout", data={}).status_code == 403
        made = client.post("/tokens", data={"name": "real", "csrf": csrf})
        assert made.status_code == 200 and "shown only now" in made.text
    page.reload()
    assert "forged" not in page.inner_text("main")


def test_failed_sign_ins_are_slowed(site: Site) -> None:
    with httpx.Client(base_url=site.url) as client:
        client.get("/signin")
        csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/signin").text)
        assert csrf is not None
        form = {"csrf": csrf.group(1), "email": "nobody@acme.test", "password": "guess"}
        codes = [client.post("/signin", data=form).status_code for _ in range(6)]
    assert codes[:5] == [401] * 5
    assert codes[5] == 429


def test_admin_adds_a_user_grants_an_identity_and_manages_tokens(site: Site, page: Any) -> None:
    sign_in(page, site, site.admin)
    page.goto(site.url + "/users")
    page.get_by_label("Email").fill("lee@acme.test")
    press(page, "Invite")
    shown = page.locator(".secret-once")
    assert "shown only now" in shown.inner_text()
    lee = Account("lee@acme.test", shown.locator("code").inner_text())
    page.get_by_label("User", exact=True).select_option("lee@acme.test")
    page.get_by_label("Address or @domain").fill("@acme.test")
    press(page, "Grant")
    assert "Sender identity granted." in page.inner_text("main")
    assert "@acme.test" in page.locator("tr", has_text="lee@acme.test").inner_text()

    page.goto(site.url + "/tokens")
    page.get_by_label("Name").fill("a script")
    press(page, "Create token")
    token = page.locator(".secret-once code").inner_text()
    with httpx.Client(base_url=site.url, headers={"Authorization": f"Bearer {token}"}) as api:
        assert api.get("/v1/channels").status_code == 200
        page.goto(site.url + "/tokens")  # shown once: gone on the next visit
        assert token not in page.content()
        press(page, "Revoke a script")
        assert "Token revoked." in page.inner_text("main")
        assert api.get("/v1/channels").status_code == 401

    other = page.context.browser.new_page()
    try:
        sign_in(other, site, lee)  # the one-time password, then a password of their own
        assert "lee@acme.test" in other.inner_text("main")
    finally:
        other.context.close()


def test_every_page_is_accessible_and_fits_a_phone(site: Site, page: Any) -> None:
    page.goto(site.url + "/signin")
    check_page(page, "signin")
    sign_in(page, site, site.admin)
    channel_id = _channel_id(page, site)
    for name, path in (
        ("my-channel", "/channel"),
        ("connect-custom", "/channels/new"),
        ("connect-team-custom", "/channels/new?share=on"),
        ("connect-microsoft365", "/channels/new?preset=microsoft365"),
        ("connect-sparkpost", "/channels/new?preset=sparkpost"),
        ("channel", f"/channels/{channel_id}"),
        ("team", "/team"),
        ("users", "/users"),
        ("tokens", "/tokens"),
        ("activity", "/activity"),
        ("password", "/password"),
        ("not-found", "/channels/ch_nothing"),
    ):
        page.goto(site.url + path)
        check_page(page, name)

    page.goto(site.url + "/activity")
    first = page.locator("ul.messages a").first
    if first.count():
        first.click()
        check_page(page, "message")

    page.goto(site.url + "/channels/new")
    page.get_by_label("SMTP server name (host)").fill("no-such-host.invalid")
    page.get_by_label("Share with team").check()
    page.get_by_label("Sending domains (when shared)").fill("acme.test")
    press(page, "Test connection")
    assert "Test connection: failed" in report(page)
    check_page(page, "connect-failed")


def test_tab_order_follows_the_layout(site: Site, page: Any) -> None:
    page.goto(site.url + "/signin")
    stops = tab_stops(page, 5)
    assert [s.what for s in stops][-3:] == ["input:f-email", "input:f-password", "button:Sign in"]
    assert_reading_order(stops)

    sign_in(page, site, site.admin)
    page.set_viewport_size(PHONE)
    page.goto(site.url + "/channel")
    assert_reading_order(tab_stops(page, 12))  # the header wraps on a phone: still in order
    page.set_viewport_size(WIDE)

    page.goto(site.url + "/channels/new")
    stops = tab_stops(page, 40)
    names = [s.what for s in stops]
    form = names[names.index("input:f-name") :]
    assert form[:7] == [
        "input:f-name",
        "input:f-host",
        "input:f-port",
        "select:f-security",
        "select:f-auth",
        "input:f-username",
        "input:f-password",
    ]
    assert form.index("input:f-test_to") < form.index("button:Test connection")
    assert form.index("button:Test connection") < form.index("button:Save channel")
    assert_reading_order(stops)


def _channel_id(page: Any, site: Site) -> str:
    page.goto(site.url + "/team")
    link = page.locator("table a[href^='/channels/ch_']").first
    if link.count():
        return str(link.get_attribute("href")).rsplit("/", 1)[1]
    return "ch_none"
