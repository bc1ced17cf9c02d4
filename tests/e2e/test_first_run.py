"""End to end, as a new user would: a real `mailvia serve` on a fresh data folder and the
project's test SMTP server (`mailvia testserver --self-signed --auth`, on loopback; serve has
ALLOW_PRIVATE_HOSTS for it), driven in Debian's headless Chromium from the first sign-in to a
delivered message, every page checked with axe at 1280 and 390 px.

The bootstrap admin signs in with the one-time password `serve` printed, chooses a password,
names the organization, gives their real address and the sending domain, and lands on the
checklist; invites a rep; the rep signs in with the invitation, connects a channel to the test
server (Test connection in plain words), sends a test message, makes an API token, reads the
submission settings from the tokens page and sends through them with a mail client (smtplib);
Activity shows the message delivered with its subject. The checklist ticks as it goes.
"""

from __future__ import annotations

import hashlib
import re
import smtplib
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from support.browser import check_page, chromium
from support.cli import Cli, LongRunning, poll, require_console_script
from support.pages import press

pytestmark = [pytest.mark.chromium, pytest.mark.timeout(300)]

RELAY_PASSWORD = "S3cret-relay-pass"
SUBJECT = "Pricing for Q3"


@dataclass
class Install:
    url: str
    data: Path
    relay_port: int
    relay_ca: str
    caught: Path
    admin_password: str


@pytest.fixture
def install(tmp_path: Path) -> Iterator[Install]:
    require_console_script()
    cli = Cli(tmp_path / "data")
    caught = tmp_path / "caught"
    relay = cli.start(
        *("testserver", "--listen", "127.0.0.1:0", "--self-signed"),
        *("--auth", f"rep:{RELAY_PASSWORD}", "--maildir", str(caught)),
    )
    serve: LongRunning | None = None
    try:
        port = int(relay.wait_for_line(r"^listening smtp://127\.0\.0\.1:(\d+)$").group(1))
        serve = cli.start("serve", "--http-listen", "127.0.0.1:0")
        url = serve.wait_for_line(r"^listening http (http://\S+)$").group(1)
        boot = (tmp_path / "data" / "bootstrap.txt").read_text()
        found = re.search(r"one-time password: (\S+)", boot)
        assert found and "admin: admin@localhost" in boot
        ca = (caught / "tls" / "ca.pem").read_text()
        yield Install(url, tmp_path / "data", port, ca, caught, found.group(1))
    finally:
        if serve is not None:
            assert serve.stop() == 0, serve.stderr
        relay.stop()


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def fresh_page(browser: Any) -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(20_000)
    return context.new_page()


def tasks_done(page: Any, install: Install) -> set[str]:
    page.goto(install.url + "/start")
    return {str(i.get_attribute("id"))[5:] for i in page.locator("li.task-done").all()}


def test_from_the_first_start_to_a_delivered_message(install: Install, browser: Any) -> None:
    admin = fresh_page(browser)
    first_run(admin, install)
    assert tasks_done(admin, install) == {"domain"}
    check_page(admin, "first-run-checklist")

    rep_email, rep_password, link = invite(admin, install)
    assert tasks_done(admin, install) == {"domain", "team"}

    rep = fresh_page(browser)
    channel_url = rep_connects_and_tests(rep, install, link, rep_email, rep_password)
    assert tasks_done(admin, install) == {"domain", "team", "channel", "test"}
    assert "All done" in admin.inner_text("main")
    check_page(admin, "first-run-checklist-done")

    token, host, port, fingerprint = rep_makes_a_token(rep, install)
    send_from_a_mail_client(install, host, port, fingerprint, rep_email, token)
    rep_sees_it_delivered(rep, install, channel_url)

    admin.goto(install.url + "/activity?q=pricing")
    card = admin.locator("li.message", has_text=SUBJECT)
    assert card.locator("[data-state=delivered]").count() >= 1  # admins see the organization's
    for name, path in (("organization", "/organization"), ("activity-admin", "/activity")):
        admin.goto(install.url + path)
        check_page(admin, name)
    rep.context.close()
    admin.context.close()


def first_run(page: Any, install: Install) -> None:
    """The bootstrap admin: one-time password, own password, then the first run."""
    page.goto(install.url + "/")
    assert "/signin" in page.url
    page.get_by_label("Email").fill("admin@localhost")
    page.get_by_label("Password", exact=True).fill(install.admin_password)
    press(page, "Sign in")
    assert page.url.endswith("/password")
    new = "a-long-password-of-ada"
    page.get_by_label("Current password").fill(install.admin_password)
    page.get_by_label("New password", exact=True).fill(new)
    page.get_by_label("New password again").fill(new)
    press(page, "Change password")
    assert "/welcome" in page.url and "Password changed." in page.inner_text("main")
    check_page(page, "first-run-welcome")
    page.get_by_label("Your organization's name").fill("Acme")
    page.get_by_label("Your email address").fill("ada@acme.test")
    page.get_by_label("Sending domains").fill("mail.acme.test")  # not the address's domain
    press(page, "Save and continue")
    assert "add acme.test" in page.locator(".error").inner_text()  # what to fix, in words
    check_page(page, "first-run-welcome-error")
    page.get_by_label("Sending domains").fill("acme.test, mail.acme.test")
    press(page, "Save and continue")
    assert "/start" in page.url
    main = page.inner_text("main")
    assert "you now sign in and send as your own address" in main
    assert "Your team sends from acme.test, mail.acme.test." in main
    assert "ada@acme.test" in page.inner_text("header")


def invite(page: Any, install: Install) -> tuple[str, str, str]:
    page.get_by_role("link", name="Invite someone").click()
    page.get_by_label("Email").fill("rep@acme.test")
    press(page, "Invite")
    shown = page.locator(".invitation")
    assert "shown only now" in shown.inner_text()
    password = shown.locator("code.secret").inner_text()
    link = str(shown.locator("a").get_attribute("href"))
    assert link == install.url + "/signin?email=rep%40acme.test"
    check_page(page, "first-run-invitation")
    row = page.locator("tr", has_text="rep@acme.test")
    assert "rep@acme.test" in row.inner_text() and "invited" in row.inner_text()
    return "rep@acme.test", password, link


def rep_connects_and_tests(
    page: Any, install: Install, link: str, email: str, password: str
) -> str:
    """The rep follows the invitation, connects a channel to the test server and tests it
    with a test message; returns the channel page's URL."""
    page.goto(link)
    assert page.get_by_label("Email").input_value() == email
    check_page(page, "first-run-signin-invited")
    page.get_by_label("Password", exact=True).fill(password)
    press(page, "Sign in")
    own = "a-long-password-of-the-rep"
    page.get_by_label("Current password").fill(password)
    page.get_by_label("New password", exact=True).fill(own)
    page.get_by_label("New password again").fill(own)
    press(page, "Change password")
    assert page.url.endswith("/channel?notice=password")
    assert "No channel can send as rep@acme.test" in page.inner_text("main")

    page.get_by_role("link", name="Connect a custom SMTP server").click()
    page.get_by_label("Channel name").fill("Acme relay for rep")
    page.get_by_label("SMTP server name (host)").fill("127.0.0.1")
    page.get_by_label("Port").fill(str(install.relay_port))
    page.get_by_label("Security").select_option("starttls")
    page.get_by_label("User name").fill("rep")
    page.get_by_label("Password", exact=True).fill("not-the-password")
    page.locator("summary", has_text="Advanced").click()
    page.get_by_label("Certificate authority (PEM)").fill(install.relay_ca)
    page.get_by_label("Limits").fill("30/60:messages, 10000/86400:recipients")
    press(page, "Test connection")
    failed = page.locator("li.step-fail")
    assert "Signing in" in failed.inner_text() and "Wrong user name or password" in (
        failed.inner_text()
    )
    assert "535" in str(failed.locator("details").text_content())  # the code, beside it
    check_page(page, "first-run-connect-failed")
    page.get_by_label("Password", exact=True).fill(RELAY_PASSWORD)
    press(page, "Test connection")
    report = page.locator("section.report").inner_text()
    assert "Test connection: passed" in report
    for step in ("Finding the server", "Reaching the server", "Securing the connection"):
        assert step in report
    press(page, "Save channel")
    assert "Channel saved." in page.inner_text("main")
    assert "Working: this channel is active and sends mail." in page.inner_text("main")
    channel_url = page.url.split("?")[0]

    page.get_by_label("Send a test message to (optional)").fill("bob@example.test")
    press(page, "Test connection")
    assert "Sending a test message" in page.locator("section.report").inner_text()
    assert "Test connection: passed" in page.locator("section.report").inner_text()
    return channel_url


def rep_makes_a_token(page: Any, install: Install) -> tuple[str, str, int, str]:
    """An API token, and the submission settings the tokens page gives for a mail client."""
    page.goto(install.url + "/tokens")
    page.get_by_label("Name").fill("Outlook add-in")
    press(page, "Create token")
    token = page.locator(".secret-once code").inner_text()
    settings = page.locator("dl.client")
    server = settings.locator("div", has_text="Server").first.inner_text()
    found = re.search(r"(\S+), port (\d+)", server)
    assert found, server
    assert "STARTTLS" in settings.inner_text() and "rep@acme.test" in settings.inner_text()
    fingerprint = settings.locator("code.fingerprint").inner_text()
    check_page(page, "first-run-tokens")
    return token, found.group(1), int(found.group(2)), fingerprint


def send_from_a_mail_client(
    install: Install, host: str, port: int, fingerprint: str, email: str, token: str
) -> None:
    """What a mail client does with those settings: STARTTLS, the certificate checked against
    the page's fingerprint, sign in with the address and the token."""
    context = ssl.create_default_context(cafile=str(install.data / "tls" / "submission.pem"))
    with smtplib.SMTP(host, port, timeout=30) as client:
        client.starttls(context=context)
        seen = client.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
        assert hashlib.sha256(seen).hexdigest().upper() == fingerprint.replace(":", "")
        client.login(email, token)
        message = EmailMessage()
        message["From"] = f"Rep <{email}>"
        message["To"] = "carol@example.test"
        message["Subject"] = SUBJECT
        message.set_content("The numbers you asked for.")
        client.send_message(message)


def rep_sees_it_delivered(page: Any, install: Install, channel_url: str) -> None:
    card = page.locator("li.message", has_text=SUBJECT)

    def delivered() -> bool:
        page.goto(install.url + "/activity")
        return card.count() == 1 and card.locator(".msg-head [data-state=delivered]").count() == 1

    poll(delivered, timeout=30)
    text = card.inner_text()
    assert "carol@example.test" in text and "via Acme relay for rep" in text
    assert "just now" in text or "minute ago" in text
    assert card.locator("time").get_attribute("title", timeout=1000)  # the exact time
    check_page(page, "first-run-activity")
    card.get_by_role("link", name=SUBJECT).click()
    main = page.inner_text("main")
    assert (
        SUBJECT in page.inner_text("h1") and "Delivered: the receiving server accepted it." in main
    )
    assert "Accepted by the receiving server." in main  # the reply in plain words,
    assert "250" in str(page.locator("details.code").first.text_content())  # its code beside
    check_page(page, "first-run-message")
    page.goto(install.url + "/activity")
    page.get_by_label("Search").fill("PRICING")
    press(page, "Search")
    assert page.locator("li.message").count() == 1
    page.get_by_label("Search").fill("carol@")
    press(page, "Search")
    assert page.locator("li.message").count() == 1
    page.get_by_label("Search").fill("nothing like this")
    press(page, "Search")
    assert "No messages match this search." in page.inner_text("main")
    page.goto(install.url + "/activity?state=delivered")
    assert page.locator("li.message").count() == 2  # the test message and the real one
    assert install.caught.joinpath("received.jsonl").read_text().count("carol@example.test") == 1

    page.goto(channel_url)
    main = page.inner_text("main")
    assert "2 of 30 this minute" in main and "2 of 10,000 recipients in 24 h" in main
    assert "2 messages in the last 24 hours, 2 delivered" in main
    assert page.locator("svg.day-chart rect.bar-delivered").count() >= 1
    assert page.locator("meter").count() == 2
    check_page(page, "first-run-channel")
