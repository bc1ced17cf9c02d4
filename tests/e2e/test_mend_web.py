"""End to end: a rep mends a wrong channel on its page, in Debian's headless Chromium, against a
real `mailvia serve` subprocess and the project's test SMTP server (STARTTLS with a test CA's
certificate; AUTH required).

The channel was added with a wrong port and no sign-in. Its mail waits (the connection is
refused); the rep fixes the port on the page (tested, then saved; the waiting mail is tried
at once), the server then asks for a sign-in (530) and the channel is disconnected with its
mail held; the rep sets the sign-in method, user name and password on the page (tested, then
saved): the channel comes back and the held mail is delivered, none lost, none twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailvia.settings import Settings
from mailvia.testserver import ThreadedTestServer
from support.browser import check_page, chromium, desktop_page
from support.cli import poll
from support.pages import JANE_PASSWORD, Site, mailbox_server, press, send, serving, sign_in
from support.ports import closed_port
from support.reconcile import reconcile

pytestmark = [pytest.mark.chromium, pytest.mark.timeout(300)]

RIGHT = JANE_PASSWORD
COUNT = 3


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with serving(tmp_path) as running:
        yield running


@pytest.fixture
def smtp(site: Site, tmp_path: Path) -> Iterator[ThreadedTestServer]:
    with mailbox_server(site, tmp_path) as server:
        yield server


@pytest.fixture
def page() -> Iterator[Any]:
    with chromium() as browser, desktop_page(browser) as tab:
        yield tab


def states(site: Site, ids: list[str]) -> list[str]:
    with site.api(site.jane) as api:
        return [api.get(f"/v1/messages/{i}").json()["state"] for i in ids]


def channel_state(site: Site, channel_id: str) -> str:
    with site.api(site.jane) as api:
        return str(api.get(f"/v1/channels/{channel_id}").json()["state"])


def test_a_rep_mends_a_wrong_port_then_a_wrong_sign_in_and_the_held_mail_arrives(
    site: Site, smtp: ThreadedTestServer, page: Any, tmp_path: Path
) -> None:
    wrong = {
        "name": "jane-box",
        "host": "127.0.0.1",
        "port": closed_port(),
        "security": "starttls",
        "auth": "none",
        "ca_pem": site.certs.ca_pem,
        "address": "jane@acme.test",
        "max_connections": 1,
    }
    with site.api(site.jane) as api:
        added = api.post("/v1/channels", json=wrong)
    assert added.status_code == 201, added.text
    channel_id = added.json()["id"]
    sent = [send(site, site.jane, f"mended {i}") for i in range(COUNT)]
    # The first is tried and deferred; the port is closed, so the channel pauses as
    # unreachable and the others wait their turn unsent (a dead server is not tried per message).
    waiting = ["deferred"] + ["queued"] * (COUNT - 1)
    poll(lambda: states(site, sent) == waiting, timeout=30)

    sign_in(page, site, site.jane)
    page.goto(f"{site.url}/channels/{channel_id}")
    check_page(page, "mend-channel")
    page.get_by_label("Port", exact=True).fill(str(closed_port()))
    press(page, "Test and save")  # still wrong: refused with the report
    main = page.inner_text("main")
    assert "The test of your changes failed, so nothing was saved" in main
    assert "Reaching the server" in page.locator("li.step-fail").inner_text()

    page.get_by_label("Port", exact=True).fill(str(smtp.port))
    press(page, "Test and save")
    # The port alone: the test tries the sender (MAIL FROM, nothing sent), which this server
    # refuses without a sign-in, so nothing is saved and the mail waits unsent (it was saved,
    # then disconnected at the first delivery, before the test had its sender step).
    assert "The test of your changes failed, so nothing was saved" in page.inner_text("main")
    failed = page.locator("li.step-fail").inner_text()
    assert "Checking the server takes mail from the sending address" in failed, failed
    assert smtp.received == []

    page.get_by_label("Sign-in method", exact=True).select_option("plain")
    page.get_by_label("User name", exact=True).fill("jane")
    page.get_by_label("Channel password").fill("wrong")
    press(page, "Test and save")
    assert "Signing in" in page.locator("li.step-fail").inner_text()
    page.get_by_label("Channel password").fill(RIGHT)
    press(page, "Test and save")
    main = page.inner_text("main")
    assert "Channel saved" in main and RIGHT not in page.content()
    check_page(page, "mend-channel-reconnected")

    poll(lambda: states(site, sent) == ["delivered"] * COUNT, timeout=60)
    smtp.wait_for(COUNT)
    db_url = Settings.load({}, {"data_dir": site.cli.data_dir}).database_url
    result = reconcile(sent, db_url, tmp_path / "caught")
    assert not result.problems, str(result)
    assert result.delivered == COUNT and result.received == COUNT and result.duplicates == 0
